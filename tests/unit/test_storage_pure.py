"""Pure parts of the storage layer: retry classification and backoff, export path safety,
queue quietness."""

from __future__ import annotations

import os
import random
from pathlib import Path, PurePosixPath

import pytest
from minio.error import S3Error
from pymongo.errors import AutoReconnect, DuplicateKeyError, ServerSelectionTimeoutError

from catalog.errors import UnknownExam
from core.retry import backoff_delays, is_transient, with_retries
from storage import export_paths as ep
from storage.errors import UnsafeExportPath
from storage.queue_idle import QueueSnapshot, assess


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "/b/k", "req", "host")  # type: ignore[arg-type]  # no HTTP response in a unit test


# --- retries ----------------------------------------------------------------------------

def test_outages_are_transient_and_bad_input_is_not() -> None:
    assert is_transient(AutoReconnect("connection reset"))
    assert is_transient(ServerSelectionTimeoutError("no servers"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(s3_error("SlowDown")) and is_transient(s3_error("ServiceUnavailable"))
    assert not is_transient(s3_error("NoSuchKey")) and not is_transient(s3_error("AccessDenied"))
    assert not is_transient(DuplicateKeyError("dup"))
    assert not is_transient(UnknownExam("E1"))
    assert not is_transient(ValueError("bad"))


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(0.5, 8.0, rng=random.Random(1))
    windows = [0.5, 1, 2, 4, 8, 8, 8]
    seen = [next(delays) for _ in windows]
    assert all(0 <= d <= w for d, w in zip(seen, windows))
    assert len(set(seen)) == len(seen)  # jittered, not a fixed schedule
    with pytest.raises(ValueError):
        next(backoff_delays(0, 1))


async def test_with_retries_retries_transient_failures_until_success() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise AutoReconnect("down")
        return "ok"

    assert await with_retries(flaky, what="test", base=0.001, cap=0.002) == "ok"
    assert len(calls) == 3


async def test_with_retries_gives_up_at_once_on_permanent_errors_and_after_attempts() -> None:
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise UnknownExam("E9")

    with pytest.raises(UnknownExam):
        await with_retries(broken, what="test", base=0.001, cap=0.002)
    assert len(calls) == 1

    async def down() -> None:
        calls.append(1)
        raise AutoReconnect("down")

    with pytest.raises(AutoReconnect):
        await with_retries(down, what="test", attempts=3, base=0.001, cap=0.002)
    assert len(calls) == 4


# --- export paths -----------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../x", "a/../../b", "/etc/passwd", "a//b", "a\\b", "./a", "a/\x00b", ""])
def test_relative_paths_that_could_escape_are_refused(bad: str) -> None:
    with pytest.raises(UnsafeExportPath):
        ep.check_relative(bad)


def test_targets_parse_local_and_s3(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    live = frozenset({"slidestream-recent", "slidestream-mirror"})

    def parse(text: str) -> ep.ExportTarget:
        return ep.parse_target(text, export_root=root, live_buckets=live)

    assert parse("s3://exports/ward-3/") == ep.S3Target("exports", "ward-3/")
    assert parse("s3://exports") == ep.S3Target("exports", "")
    assert parse("case-17") == ep.LocalTarget(root.resolve() / "case-17")
    assert parse(str(root / "usb" / "case-18")) == ep.LocalTarget(root.resolve() / "usb" / "case-18")
    for bad in ("s3://Bad_Bucket/x", "s3://exports/../x", "s3://exports//x", "",
                "../../x", "/tmp/out", "/proc/x", "case/../../x",  # outside the export root
                "s3://slidestream-recent/x", "s3://slidestream-mirror"):  # live tiers
        with pytest.raises(UnsafeExportPath):
            parse(bad)


def test_hr_tiles_map_under_their_slide_and_nowhere_else() -> None:
    rel = ep.hr_relpath("E1", 2, "hr/E1/0002/x4/12/3_4.png")
    assert rel == PurePosixPath("E1/slide-0002.hr/x4/12/3_4.png")
    with pytest.raises(UnsafeExportPath):
        ep.hr_relpath("E1", 2, "hr/E1/0003/x4/12/3_4.png")
    with pytest.raises(UnsafeExportPath):
        ep.hr_relpath("E1", 2, "hr/E1/0002/../../0003/x.png")


def test_local_paths_stay_inside_the_target_even_through_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "E1")
    target = ep.LocalTarget(root)
    assert ep.local_path(target, PurePosixPath("E2/slide-0001.lr.tiff")) == root.resolve() / "E2/slide-0001.lr.tiff"
    with pytest.raises(UnsafeExportPath):
        ep.local_path(target, ep.lr_relpath("E1", 1))


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "E1" / "slide-0001.lr.tiff"
    fd = ep.open_exclusive(path)
    os.write(fd, b"first")
    os.close(fd)
    with pytest.raises(UnsafeExportPath):
        ep.open_exclusive(path)
    assert path.read_bytes() == b"first"


def test_s3_keys_keep_the_prefix() -> None:
    assert ep.s3_key(ep.S3Target("b1x", "p/"), ep.lr_relpath("E1", 1)) == "p/E1/slide-0001.lr.tiff"


# --- queue quietness --------------------------------------------------------------------

def snap(ends: dict, committed: dict | None = None) -> QueueSnapshot:
    return QueueSnapshot(ends, committed or {})


def test_queues_are_quiet_only_without_arrivals_and_lag() -> None:
    tp = ("slide.scanned", 0)
    assert not assess(None, snap({tp: 5})).quiet
    assert not assess(snap({tp: 5}), snap({tp: 6})).quiet
    lagging = assess(snap({tp: 6}), snap({tp: 6}, {"qc": {tp: 4}}))
    assert not lagging.quiet and "2 behind" in lagging.reason
    assert assess(snap({tp: 6}), snap({tp: 6}, {"qc": {tp: 6}})).quiet
    new_partition = assess(snap({tp: 6}), snap({tp: 6, ("slide.scanned", 1): 0}))
    assert not new_partition.quiet
