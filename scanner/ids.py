"""Identifiers that come from outside (a command line, a sidecar file, a file name), checked
against the schema types before anything is uploaded.

Error messages name the field and the rule, never the value: a patient ID may be a national
ID number and these messages end up in logs and ``.reason.txt`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from schemas.events import BodyPart
from schemas.ids import ExamId, PatientId, ScannerId, SlideNumber

_PATIENT = TypeAdapter(PatientId)
_EXAM = TypeAdapter(ExamId)
_SCANNER = TypeAdapter(ScannerId)
_SLIDE = TypeAdapter(SlideNumber)
_BODY_PART = TypeAdapter(BodyPart)

ID_RULE = "1-64 characters: letters, digits, '.', '_', '-', starting with a letter or digit"


class InvalidIds(ValueError):
    """One or more identifiers are missing or malformed; ``problems`` lists them by field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class SlideIds:
    """Who and what a scan belongs to, plus optional scanner metadata."""

    patient_id: str
    exam_id: str
    slide_number: int
    scanner_id: str | None = None
    body_part: str | None = None


def _slide_number(value: Any) -> int:
    # Command lines and file names give text; JSON may give a number. Accept plain decimal
    # digits only ("3", 3), not "3.0", "+3", " 3" or true.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return _SLIDE.validate_python(value)


def validate_ids(patient_id: Any, exam_id: Any, slide_number: Any, *, scanner_id: Any = None,
                 body_part: Any = None) -> SlideIds:
    """``SlideIds`` if every value is well formed, else ``InvalidIds`` naming each bad field."""
    problems: list[str] = []

    def check(field: str, adapter_call: Any, value: Any, rule: str, *, optional: bool = False) -> Any:
        if value is None or value == "":
            if not optional:
                problems.append(f"{field}: missing")
            return None
        try:
            return adapter_call(value)
        except (ValidationError, ValueError, TypeError):
            problems.append(f"{field}: malformed ({rule})")
            return None

    patient = check("patient_id", _PATIENT.validate_python, patient_id, ID_RULE)
    exam = check("exam_id", _EXAM.validate_python, exam_id, ID_RULE)
    slide = check("slide_number", _slide_number, slide_number, "a whole number from 1 to 9999")
    scanner = check("scanner_id", _SCANNER.validate_python, scanner_id, ID_RULE, optional=True)
    part = check("body_part", _BODY_PART.validate_python, body_part, "1-64 characters", optional=True)
    if problems:
        raise InvalidIds(problems)
    return SlideIds(patient, exam, slide, scanner, part)
