"""Keep a server outage from turning into a log storm.

While Kafka is down, aiokafka logs the same few errors dozens of times a second (seen: about
70 lines/s from one worker, 12,944 of 14,873 lines in one outage). ``RepeatThrottle`` lets
the first record of a kind through, then suppresses repeats with exponential backoff (1 s,
2 s, 4 s ... up to 60 s); the next record that passes says how many were held back. A kind
is the logger, level and message template (``record.msg``, before its arguments), so "node
1 unreachable" and "node 2 unreachable" count as one. Only the libraries' loggers are
throttled; slidestream's own events always pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

THROTTLED_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "pymongo", "urllib3")


@dataclass
class _Kind:
    next_pass: float
    interval: float
    suppressed: int = 0
    last_seen: float = 0.0


class RepeatThrottle(logging.Filter):
    def __init__(self, *, first_interval_s: float = 1.0, max_interval_s: float = 60.0,
                 prefixes: tuple[str, ...] = THROTTLED_LOGGERS, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._first = first_interval_s
        self._max = max_interval_s
        self._prefixes = prefixes
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def _throttled(self, name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in self._prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not self._throttled(record.name):
            return True
        now = self._clock()
        key = (record.name, record.levelno, str(record.msg))
        kind = self._kinds.get(key)
        if kind is None or now - kind.last_seen > self._max:  # new, or quiet long enough: start over
            self._kinds[key] = _Kind(next_pass=now + self._first, interval=self._first, last_seen=now)
            return True
        kind.last_seen = now
        if now < kind.next_pass:
            kind.suppressed += 1
            return False
        if kind.suppressed:
            record.msg = f"{record.msg} (and {kind.suppressed} more like it in the last {kind.interval:g} s)"
        kind.suppressed = 0
        kind.interval = min(kind.interval * 2, self._max)
        kind.next_pass = now + kind.interval
        return True
