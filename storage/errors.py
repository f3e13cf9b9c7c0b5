"""Errors of the storage services, and the one list of S3 codes that mean "no such object".

Like the catalog's, a ``PermanentError`` is bad input (the agent dead-letters the event
with the message); messages name exams, slides and object keys, never patient identity.
"""

from __future__ import annotations

from minio.error import S3Error

from catalog.errors import CatalogError, PermanentError

# "The object is not there" in the dialects of AWS, MinIO, Ceph RGW and SeaweedFS. Anything
# else (a 503, a timeout) is an outage and is retried (``core.retry``).
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NoSuchVersion", "ResourceNotFound"})


def is_missing(exc: BaseException) -> bool:
    return isinstance(exc, S3Error) and exc.code in MISSING_CODES


class ImageConflict(PermanentError):
    """A slide is already stored with different content (a rescan needs a new slide number)."""

    def __init__(self, exam_id: str, slide_number: int) -> None:
        self.exam_id, self.slide_number = exam_id, slide_number
        super().__init__(
            f"exam {exam_id} slide {slide_number} is already stored with a different checksum; "
            "refusing to replace a permanent image"
        )


class MissingObject(PermanentError):
    """The object (or its bucket) does not exist: the event that named it is wrong or stale."""

    def __init__(self, ref: object, what: str = "object") -> None:
        self.ref = ref
        super().__init__(f"{what} {ref} does not exist in object storage")


class ChecksumMismatch(PermanentError):
    def __init__(self, ref: object, expected: str, actual: str) -> None:
        self.ref, self.expected, self.actual = ref, expected, actual
        super().__init__(f"checksum of {ref} is {actual[:12]}..., expected {expected[:12]}...")


class MoveConflict(CatalogError):
    """Another worker changed the image while this one was moving it; the move was abandoned
    at a safe point (nothing deleted) and the other worker's state wins."""


class ImageLost(CatalogError):
    """Neither the tier copy nor the mirror of an image could be read with its checksum."""


class UnsafeExportPath(PermanentError):
    """An export target would escape its directory or prefix, or overwrite existing data."""
