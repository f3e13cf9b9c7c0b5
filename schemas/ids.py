"""Constrained identifier types shared by every event and catalog record.

Patient IDs may be national ID numbers, so they are treated as sensitive: the logging
redactor masks them (see ``core.logging``). All IDs use one safe charset so they
can appear in object keys and file names without escaping or path traversal.
"""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from pydantic import BeforeValidator, Field, StringConstraints

# First character alphanumeric (no hidden files, no "-option"), then letters, digits, ".", "_", "-".
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ID_MAX_LENGTH = 64
# fullmatch, because Python's "$" also matches before a trailing newline (pydantic's
# regex engine does not).
_ID_RE = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))


# Written out as plain aliases (not built by a function) so type checkers see them as str.
_ID = StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)
PatientId = Annotated[str, _ID, Field(description="patient ID (may be a national ID number: sensitive, masked in logs)")]
ExamId = Annotated[str, _ID, Field(description="pathology exam ID")]
VisitId = Annotated[str, _ID, Field(description="hospital visit / encounter ID from the HIS")]
TerminalId = Annotated[str, _ID, Field(description="diagnosis terminal ID")]
ScannerId = Annotated[str, _ID, Field(description="scanner ID")]

SlideNumber = Annotated[int, Field(strict=True, ge=1, le=9999, description="slide number within an exam")]


def _uuid_from_str(value: object) -> object:
    # Models are strict; a UUID may still be given as its canonical string (JSON, MongoDB).
    if type(value) is str:
        try:
            return UUID(value)
        except ValueError as exc:
            raise ValueError("not a valid UUID") from exc
    return value


Uuid = Annotated[UUID, BeforeValidator(_uuid_from_str)]
RequestId = Annotated[UUID, BeforeValidator(_uuid_from_str), Field(description="super-resolution request ID")]

Sha256Hex = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[0-9a-f]{64}$"),
    Field(description="lower-case hex SHA-256 of the object bytes"),
]


def is_valid_id(value: str) -> bool:
    """Cheap check for callers that get IDs from outside (file names, URLs, HL7)."""
    return isinstance(value, str) and 0 < len(value) <= ID_MAX_LENGTH and _ID_RE.fullmatch(value) is not None
