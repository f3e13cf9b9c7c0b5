"""The terminal agent's sync loop against a small server implementing the terminal API
contract (ASGI transport: one poll at a time, no sockets, no sleeps)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_terminal_fakes import TERMINAL_ID, TERMINAL_KEY, FakeServer

from terminal.cache import LocalCache, TileKey
from terminal.client import TerminalClient
from terminal.progress import ProgressDisplay
from terminal.sync import Syncer, SyncError

GiB = 1 << 30


async def no_sleep(_: float) -> None:
    return None


def make_syncer(server: FakeServer, root: Path, *, key: str = TERMINAL_KEY, max_bytes: int = GiB,
                free: list[int] | None = None, progress: ProgressDisplay | None = None) -> Syncer:
    disk = free if free is not None else [100 * GiB]
    cache = LocalCache(root, max_bytes=max_bytes, min_free_bytes=GiB, retention_days=14,
                       disk_usage=lambda _: (200 * GiB, 0, disk[0])).open()
    client = TerminalClient("http://server", TERMINAL_ID, key, transport=server.transport(), attempts=2,
                            backoff_base_s=0.001, sleep=no_sleep)
    return Syncer(client, cache, heartbeat_s=15, poll_s=3, concurrency=4, progress=progress)


async def test_one_poll_downloads_every_present_tile_and_verifies_it(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1", slides=2)
    syncer = make_syncer(server, tmp_path)
    result = await syncer.poll()
    assert result.complete and result.error is None and result.downloaded == 12
    state = syncer.cache.exam("E1")
    assert state is not None and state.complete and (state.done, state.expected) == (12, 12)
    tile = syncer.cache.read(TileKey("E1", 2, 12, 1, 1))
    assert tile is not None and tile.data == server.tile_bytes("E1", 2, 12, 1, 1) and tile.source == "computed"
    calls = server.tile_calls
    assert (await syncer.poll()).complete and server.tile_calls == calls  # nothing fetched twice


async def test_tiles_still_being_computed_arrive_on_later_polls(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1", present=False)
    slide = server.exams["E1"][0]
    slide.present = set(slide.all_tiles[:2])
    syncer = make_syncer(server, tmp_path)
    first = await syncer.poll()
    assert not first.complete and first.downloaded == 2
    assert syncer.exam_view("E1")["reason"] == "this exam is still downloading to this workstation (33%)"
    slide.present = set(slide.all_tiles)
    second = await syncer.poll()
    assert second.complete and second.downloaded == 4
    view = syncer.exam_view("E1")
    assert view["complete"] and view["fraction"] == 1.0 and view["source"] == "computed"


async def test_run_until_complete_waits_for_the_server_without_real_sleeps(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1", present=False)
    slide = server.exams["E1"][0]
    waits: list[float] = []

    async def server_computes(seconds: float) -> None:  # each "wait" the server finishes one more tile
        waits.append(seconds)
        slide.present.add(slide.all_tiles[len(slide.present)])

    syncer = make_syncer(server, tmp_path)
    result = await syncer.run_until_complete(sleep=server_computes)
    assert result.complete and len(waits) == 6 and waits[0] == 3


async def test_an_exam_no_longer_assigned_is_deleted_locally(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    server.add_exam("E2")
    syncer = make_syncer(server, tmp_path)
    await syncer.poll()
    assert (tmp_path / "E2").is_dir()
    server.assigned.remove("E2")  # report final, or reassigned to another terminal
    assert (await syncer.poll()).complete
    assert syncer.cache.exam("E2") is None and not (tmp_path / "E2").exists()
    assert syncer.exam_view("E2")["reason"] == "not assigned to this workstation"


async def test_a_checksum_mismatch_is_counted_and_the_tile_fetched_again(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    server.bad_checksum.add(("E1", 1, 12, 0, 1))
    syncer = make_syncer(server, tmp_path)
    result = await syncer.poll()
    assert not result.complete and result.error is None
    assert syncer.status.checksum_mismatches == 1 and not syncer.cache.has(TileKey("E1", 1, 12, 0, 1))
    server.bad_checksum.clear()
    assert (await syncer.poll()).complete


async def test_once_gives_up_on_a_tile_that_keeps_arriving_corrupt(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    server.bad_checksum.add(("E1", 1, 12, 0, 1))
    syncer = make_syncer(server, tmp_path)
    with pytest.raises(SyncError, match="did not match the server's SHA-256"):
        await syncer.run_until_complete(sleep=no_sleep)
    assert not syncer.cache.has(TileKey("E1", 1, 12, 0, 1))


async def test_once_with_a_timeout_names_what_the_server_never_computed(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    server.exams["E1"][0].present.discard((12, 0, 1))  # never computed: e.g. its super-resolution failed
    syncer = make_syncer(server, tmp_path)
    now = [0.0]

    async def tick(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(SyncError, match=r"not complete after 10 s; missing on the server: E1 \(1 tiles\)"):
        await syncer.run_until_complete(sleep=tick, timeout_s=10, clock=lambda: now[0])
    assert syncer.cache.exam("E1") is not None and syncer.cache.exam("E1").done == syncer.cache.exam("E1").expected - 1


async def test_a_corrupt_local_tile_is_downloaded_again(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    syncer = make_syncer(server, tmp_path)
    await syncer.poll()
    key = TileKey("E1", 1, 11, 1, 0)
    syncer.cache.path(key).write_bytes(b"bit rot")
    assert syncer.cache.read(key) is None
    assert (await syncer.poll()).downloaded == 1
    tile = syncer.cache.read(key)
    assert tile is not None and tile.data == server.tile_bytes("E1", 1, 11, 1, 0)


async def test_cache_full_stops_downloads_is_logged_once_and_retried(tmp_path: Path, capture: io.StringIO) -> None:
    server = FakeServer()
    server.add_exam("E1")
    free = [GiB + 5]  # min_free_bytes is 1 GiB: the first tile does not fit
    syncer = make_syncer(server, tmp_path, free=free)
    for _ in range(3):
        result = await syncer.poll()
        assert not result.complete and result.error and "min_free_bytes" in result.error
    assert syncer.status.error_kind == "cache_full" and "free disk space" in (syncer.status.last_error or "")
    assert capture.getvalue().count("terminal.sync.cache_full") == 1
    assert "tile cache is full" in str(syncer.exam_view("E1")["reason"])
    free[0] = 100 * GiB  # the operator freed space
    assert (await syncer.poll()).complete
    assert syncer.status.last_error is None and "terminal.sync.resumed" in capture.getvalue()


async def test_a_server_outage_is_logged_once_backs_off_and_recovers(tmp_path: Path, capture: io.StringIO) -> None:
    server = FakeServer()
    server.add_exam("E1")
    syncer = make_syncer(server, tmp_path)
    server.down = True
    delays = []
    for _ in range(4):
        result = await syncer.poll()
        assert result.error and "HTTP 503" in result.error
        delays.append(syncer.next_delay())
    assert delays == [3, 6, 12, 24] and not syncer.status.online
    assert capture.getvalue().count("terminal.server.unreachable") == 1
    server.down = False
    assert (await syncer.poll()).complete
    assert syncer.next_delay() == 3 and syncer.status.online and syncer.status.last_error is None
    assert capture.getvalue().count("terminal.server.reachable") == 1


async def test_a_wrong_key_fails_once_mode_with_a_clear_message(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    syncer = make_syncer(server, tmp_path, key="wrong")
    with pytest.raises(SyncError, match="HTTP 401.*--key-file"):
        await syncer.run_until_complete(sleep=no_sleep)


async def test_progress_lines_when_not_attached_to_a_tty(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    out = io.StringIO()
    syncer = make_syncer(server, tmp_path, progress=ProgressDisplay(out, tty=False, every_s=3600))
    await syncer.poll()
    lines = out.getvalue().splitlines()
    assert lines[0] == "exam E1: 0/6 tiles (0 %) downloading"
    assert lines[-1] == "exam E1: 6/6 tiles (100 %) complete"
    assert len(lines) == 2  # throttled in between


async def test_progress_bars_on_a_tty(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_exam("E1")
    out = io.StringIO()
    syncer = make_syncer(server, tmp_path, progress=ProgressDisplay(out, tty=True))
    await syncer.poll()
    assert "exam E1" in out.getvalue() and "6/6" in out.getvalue()
