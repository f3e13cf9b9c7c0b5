"""An outage's repeated library errors are logged with backoff; our own events always pass."""

from __future__ import annotations

import io
import json
import logging

from core.log_throttle import RepeatThrottle
from core.logging import build_handler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_a_storm_of_one_error_becomes_a_few_lines_that_count_what_they_held_back() -> None:
    clock = Clock()
    throttle = RepeatThrottle(clock=clock)
    passed = []
    for i in range(700):  # 70 a second for 10 s, as seen with Kafka down
        clock.now = i / 70
        record = _record("aiokafka", "Unable connect to node with id %s: %s", i % 2, "refused")
        if throttle.filter(record):
            passed.append((clock.now, record.getMessage()))
    assert [round(t) for t, _ in passed] == [0, 1, 3, 7]  # backoff 1, 2, 4 s
    assert "more like it" not in passed[0][1]
    assert passed[1][1].endswith("(and 69 more like it in the last 1 s)")
    assert sum(int(m.split("(and ")[1].split()[0]) for _, m in passed[1:]) + len(passed) == 491  # to t = 7 s


def test_kinds_are_throttled_apart_and_quiet_ones_start_over() -> None:
    clock = Clock()
    throttle = RepeatThrottle(clock=clock, max_interval_s=60)
    assert throttle.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))
    assert throttle.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))  # another kind
    assert not throttle.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))
    clock.now = 120.0  # the outage ended long ago: the next one is reported at once
    assert throttle.filter(_record("aiokafka.consumer.fetcher", "Failed fetch messages from %s", 1))


def test_our_own_events_and_library_info_lines_are_never_throttled() -> None:
    throttle = RepeatThrottle(clock=Clock())
    assert all(throttle.filter(_record("storage.mover", "tier_move.conflict")) for _ in range(50))
    assert all(throttle.filter(_record("aiokafka", "joined group", level=logging.INFO)) for _ in range(50))


def test_the_log_handler_throttles_library_storms() -> None:
    out = io.StringIO()
    logger = logging.getLogger("aiokafka.test-storm")
    logger.propagate = False
    logger.addHandler(build_handler(stream=out))
    try:
        for _ in range(200):
            logger.error("Unable connect to node with id %s", 1)
    finally:
        logger.handlers.clear()
        logger.propagate = True
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert 1 <= len(lines) <= 2 and lines[0]["event"] == "Unable connect to node with id 1"
