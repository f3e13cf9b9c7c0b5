"""Download progress on the terminal's console: one tqdm bar per exam on a TTY, plain
periodic lines otherwise (a service's journal, a CI log), both on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from tqdm import tqdm


class ProgressDisplay:
    def __init__(self, stream: IO[str] | None = None, *, tty: bool | None = None, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._every = every_s
        self._clock = clock
        self._bars: dict[str, Any] = {}
        self._printed: dict[str, tuple[float, int]] = {}  # exam -> (when, done) of its last line

    def update(self, exam_id: str, done: int, expected: int, complete: bool) -> None:
        if self._tty:
            self._bar(exam_id, done, expected, complete)
        else:
            self._line(exam_id, done, expected, complete)

    def _bar(self, exam_id: str, done: int, expected: int, complete: bool) -> None:
        bar = self._bars.get(exam_id)
        if bar is None:
            bar = tqdm(total=expected, desc=f"exam {exam_id}", unit="tile", file=self._stream, position=len(self._bars),
                       leave=True, dynamic_ncols=True)
            self._bars[exam_id] = bar
        bar.total = expected
        bar.n = done
        bar.set_postfix_str("complete" if complete else "downloading", refresh=False)
        bar.refresh()

    def _line(self, exam_id: str, done: int, expected: int, complete: bool) -> None:
        now = self._clock()
        last = self._printed.get(exam_id)
        if last is not None and (last[1] == done or (now - last[0] < self._every and not complete)):
            return
        self._printed[exam_id] = (now, done)
        percent = 100 * done / expected if expected else 100.0
        state = "complete" if complete else "downloading"
        print(f"exam {exam_id}: {done}/{expected} tiles ({percent:.0f} %) {state}", file=self._stream, flush=True)

    def remove(self, exam_id: str) -> None:
        bar = self._bars.pop(exam_id, None)
        if bar is not None:
            bar.close()
        self._printed.pop(exam_id, None)

    def close(self) -> None:
        for exam_id in list(self._bars):
            self.remove(exam_id)
