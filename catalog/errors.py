"""Errors of the catalog and storage services.

``PermanentError`` subclasses describe bad input: retrying cannot fix them, so an agent
dead-letters the event with ``str(error)`` as the reason. Messages name IDs of exams and
slides but never patient identity data; patient IDs are not put in messages either,
since they may be national ID numbers and messages end up in logs.
"""

from __future__ import annotations


class CatalogError(Exception):
    """Base of every error raised by catalog and storage services."""


class PermanentError(CatalogError):
    """The input is wrong or inconsistent; retrying the same input fails the same way."""


class UnknownPatient(PermanentError):
    def __init__(self, detail: str = "patient is not in the catalog") -> None:
        super().__init__(detail)


class UnknownExam(PermanentError):
    def __init__(self, exam_id: str) -> None:
        self.exam_id = exam_id
        super().__init__(f"exam {exam_id} is not in the catalog")


class UnknownImage(PermanentError):
    def __init__(self, exam_id: str, slide_number: int, state: int) -> None:
        self.exam_id, self.slide_number, self.state = exam_id, slide_number, state
        super().__init__(f"no image of exam {exam_id} slide {slide_number} state {state} in the catalog")


class ExamPatientMismatch(PermanentError):
    """Referential integrity: an exam belongs to exactly one patient."""

    def __init__(self, exam_id: str) -> None:
        self.exam_id = exam_id
        super().__init__(f"exam {exam_id} is registered to a different patient than this event names")


class ImageConflict(PermanentError):
    """A slide is already stored with different content (a rescan needs a new slide number)."""

    def __init__(self, exam_id: str, slide_number: int) -> None:
        self.exam_id, self.slide_number = exam_id, slide_number
        super().__init__(
            f"exam {exam_id} slide {slide_number} is already stored with a different checksum; "
            "refusing to replace a permanent image"
        )


class MissingObject(PermanentError):
    def __init__(self, ref: object, what: str = "object") -> None:
        self.ref = ref
        super().__init__(f"{what} {ref} does not exist in object storage")


class ChecksumMismatch(PermanentError):
    def __init__(self, ref: object, expected: str, actual: str) -> None:
        self.ref, self.expected, self.actual = ref, expected, actual
        super().__init__(f"checksum of {ref} is {actual[:12]}..., expected {expected[:12]}...")


class ReportConflict(PermanentError):
    """Optimistic concurrency: the report changed since the caller read it."""

    def __init__(self, exam_id: str, expected_revision: int) -> None:
        super().__init__(f"report of exam {exam_id} is no longer at revision {expected_revision}")


class MoveConflict(CatalogError):
    """Another worker changed the image while this one was moving it; the move was abandoned
    at a safe point (nothing deleted) and the other worker's state wins."""


class ImageLost(CatalogError):
    """Neither the tier copy nor the mirror of an image could be read with its checksum."""


class UnsafeExportPath(PermanentError):
    """An export target would escape its directory or prefix, or overwrite existing data."""
