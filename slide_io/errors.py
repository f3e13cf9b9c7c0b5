"""Typed errors for slide input. Callers map them onto ``QcFailureKind`` without parsing text.

Messages name the file by its base name only: ingest paths may be built from patient or exam
identifiers, and these errors end up in events and logs.
"""

from __future__ import annotations

from pathlib import Path


class SlideError(Exception):
    """Base of every slide I/O failure."""

    kind = "unreadable"

    def __init__(self, message: str, *, name: str | Path | None = None) -> None:
        self.name = Path(name).name if name is not None else None
        super().__init__(f"{self.name}: {message}" if self.name else message)


class UnreadableSlide(SlideError):
    """Truncated, corrupt or otherwise undecodable file."""

    kind = "unreadable"


class UnsupportedFormat(SlideError):
    """A file no reader here understands (or a feature of it, e.g. a pixel type)."""

    kind = "unsupported_format"


class SlideTooLarge(SlideError):
    """Declared dimensions beyond the configured limits, refused before anything is decoded."""

    kind = "too_large"
