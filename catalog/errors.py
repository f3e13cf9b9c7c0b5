"""Errors of the catalog (storage has its own, in ``storage.errors``, built on these).

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


class ReportConflict(PermanentError):
    """Optimistic concurrency: the report changed since the caller read it."""

    def __init__(self, exam_id: str, expected_revision: int) -> None:
        super().__init__(f"report of exam {exam_id} is no longer at revision {expected_revision}")


class UserExists(PermanentError):
    def __init__(self, username: str) -> None:
        super().__init__(f"user {username} already exists")


class UnknownUser(PermanentError):
    def __init__(self, username: str) -> None:
        super().__init__(f"user {username} is not in the catalog")
