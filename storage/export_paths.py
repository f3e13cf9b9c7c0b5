"""Where exported files go, and the checks that keep them inside the export target.

``slidestream export --to`` takes a directory under the configured export root (relative to
it, or absolute inside it) or ``s3://bucket/prefix`` in a bucket that is not one of the
live tiers' (recent, mid, long, hr-cache, mirror, ingest). Every file
of an export has a relative path built from catalog IDs and object keys; each one is
checked to stay inside the target (no absolute paths, no ``..``, no escape through a
symbolic link) before anything is written, and existing files are never overwritten.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from schemas.common import BUCKET_PATTERN, KEY_MAX_LENGTH
from schemas.layout import hr_prefix
from storage.errors import UnsafeExportPath

_BUCKET_RE = re.compile(BUCKET_PATTERN)
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class LocalTarget:
    root: Path

    def __str__(self) -> str:
        return str(self.root)


@dataclass(frozen=True)
class S3Target:
    bucket: str
    prefix: str  # "" or ends with "/"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


ExportTarget = LocalTarget | S3Target


def check_relative(rel: str) -> PurePosixPath:
    """``rel`` as a safe relative POSIX path, or UnsafeExportPath."""
    if not rel or rel.startswith("/") or "\\" in rel:
        raise UnsafeExportPath(f"export path {rel!r} must be relative with '/' separators")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in rel):
        raise UnsafeExportPath("export path contains control characters")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafeExportPath(f"export path {rel!r} has an empty, '.' or '..' segment")
    return PurePosixPath(rel)


def parse_target(text: str, *, export_root: Path, live_buckets: frozenset[str] = frozenset()) -> ExportTarget:
    """The export target ``text`` names, confined to ``export_root`` (local) or kept out of
    ``live_buckets`` (S3)."""
    if text.startswith("s3://"):
        rest = text[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET_RE.match(bucket):
            raise UnsafeExportPath(f"{bucket!r} is not a valid S3 bucket name")
        if bucket in live_buckets:
            raise UnsafeExportPath(f"{bucket} holds live slides; export to a bucket of its own")
        prefix = prefix.rstrip("/")
        if prefix:
            check_relative(prefix)
            prefix += "/"
        return S3Target(bucket, prefix)
    if not text:
        raise UnsafeExportPath("empty export target")
    root = export_root.resolve()
    candidate = (root / text).resolve()  # an absolute ``text`` replaces the root here
    if candidate != root and root not in candidate.parents:
        raise UnsafeExportPath(f"export target {text!r} is outside the export root {root} "
                               "(SLIDESTREAM_EXPORT_ROOT)")
    return LocalTarget(candidate)


def lr_relpath(exam_id: str, slide_number: int) -> PurePosixPath:
    return check_relative(f"{exam_id}/slide-{slide_number:04d}.lr.tiff")


def hr_relpath(exam_id: str, slide_number: int, key: str) -> PurePosixPath:
    """Export path of one HR tile, from its hr-cache key (``hr/<exam>/<slide>/x4/L/c_r.png``)."""
    prefix = hr_prefix(exam_id, slide_number)
    if not key.startswith(prefix):
        raise UnsafeExportPath(f"HR object {key!r} is not under {prefix!r}")
    tail = check_relative(key[len(prefix):])
    return check_relative(f"{exam_id}/slide-{slide_number:04d}.hr/{tail}")


def local_path(target: LocalTarget, rel: PurePosixPath) -> Path:
    """Absolute path of ``rel`` under the target, refusing any escape (including through a
    symbolic link already present in the target directory)."""
    root = target.root.resolve()
    candidate = (root / Path(*rel.parts)).resolve()
    if candidate != root and root not in candidate.parents:
        raise UnsafeExportPath(f"export path {rel} would leave the target directory")
    return candidate


def s3_key(target: S3Target, rel: PurePosixPath) -> str:
    key = f"{target.prefix}{rel}"
    if len(key) > KEY_MAX_LENGTH:
        raise UnsafeExportPath(f"export key of {len(key)} characters exceeds {KEY_MAX_LENGTH}")
    check_relative(key)
    return key


def open_exclusive(path: Path) -> int:
    """A new file opened for writing; refuses to overwrite or to follow a symbolic link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, flags, 0o640)
    except FileExistsError:
        raise UnsafeExportPath(f"{path} already exists; export refuses to overwrite") from None
