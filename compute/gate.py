"""Bounded prefetch per priority class, by pausing that class's partitions of ``upscale.requested``.

A worker reads requests from all six partitions through one Faust stream and orders them
itself (``compute.scheduler``). Without a bound it would pull a whole background backlog
into memory, where no other worker can take it and where Faust's rebalance would have to
wait for all of it (it waits for fetched messages to be acknowledged). So when a class's
queued tiles reach a limit, the gate pauses that class's partitions; below half the limit
it resumes them. Interactive partitions have a much higher limit, so a viewer's request is
fetched at once even when the worker is full of background work.

Faust pauses every partition when a rebalance starts and resumes all of them when it
ends (``faust.tables.recovery``), which would silently undo our pauses. ``attach`` wraps
the consumer's ``resume_partitions`` so that a resume - Faust's own included - never
resumes a partition the gate holds, and the gate itself never resumes while Faust is
rebalancing (Faust does that at the end, through the wrapper).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from schemas.topics import PRIORITY_ORDER, Priority, priority_partitions

log = structlog.get_logger(__name__)


class PrefetchPolicy:
    """Which classes to hold, from queued-tile counts, with hysteresis (hold at the limit,
    release at half of it) so partitions do not flap on every batch."""

    def __init__(self, limits: Mapping[Priority, int]) -> None:
        if any(limit < 1 for limit in limits.values()):
            raise ValueError(f"prefetch limits must be >= 1, got {dict(limits)}")
        self.limits = dict(limits)
        self.held: set[Priority] = set()

    def update(self, backlogs: Mapping[Priority, int]) -> tuple[set[Priority], set[Priority]]:
        """New held set from ``backlogs``; returns (newly held, released)."""
        hold, release = set(), set()
        for priority in PRIORITY_ORDER:
            limit = self.limits.get(priority)
            if limit is None:
                continue
            queued = backlogs.get(priority, 0)
            if priority not in self.held and queued >= limit:
                hold.add(priority)
            elif priority in self.held and queued <= limit // 2:
                release.add(priority)
        self.held = (self.held | hold) - release
        return hold, release


class PartitionGate:
    """Applies a ``PrefetchPolicy`` to a Faust consumer's partitions of one topic."""

    def __init__(self, topic: str, policy: PrefetchPolicy, make_tp: Callable[[str, int], Any],
                 is_rebalancing: Callable[[], bool] = lambda: False) -> None:
        self.topic = topic
        self.policy = policy
        self._make_tp = make_tp
        self._is_rebalancing = is_rebalancing
        self._consumer: Any = None
        self._resume: Callable[[Iterable[Any]], None] | None = None

    def attach(self, consumer: Any) -> None:
        """Route every ``resume_partitions`` of ``consumer`` through the gate."""
        if self._consumer is consumer:
            return
        original = consumer.resume_partitions
        self._consumer, self._resume = consumer, original

        def resume_partitions(tps: Iterable[Any]) -> None:
            tps = set(tps)
            kept = tps & self.held_tps()
            if kept:
                log.info("upscale.partitions_kept_paused", partitions=sorted(tp.partition for tp in kept))
            original(tps - kept)

        consumer.resume_partitions = resume_partitions
        self.apply()

    def held_tps(self) -> set[Any]:
        return {self._make_tp(self.topic, p) for priority in self.policy.held for p in priority_partitions(priority)}

    def _assigned(self, tps: set[Any]) -> set[Any]:
        return tps & set(self._consumer.assignment()) if self._consumer is not None else set()

    def apply(self) -> None:
        """Pause every held partition we are assigned (idempotent)."""
        if self._consumer is not None:
            held = self._assigned(self.held_tps())
            if held:
                self._pause(held)

    def _pause(self, tps: set[Any]) -> None:
        """Pause without losing records of a fetch in flight.

        Faust's ``pause_partitions`` removes the partitions from the very set object that a
        running ``getmany`` filters its records by: records of a partition paused mid-fetch
        are then dropped after the client consumed their offsets, and once later messages
        arrive Faust books the hole as a gap and commits over it - those requests would be
        lost. So we hand Faust a new set instead; the fetch in flight still delivers what
        it got (a few requests beyond the limit), the next one skips the paused partitions.
        Faust's own pauses (rebalances) are followed by a seek to the committed offsets.
        """
        consumer = self._consumer
        if not hasattr(consumer, "_active_partitions") or not hasattr(consumer, "_paused_partitions"):
            consumer.pause_partitions(tps)
            return
        active = set(consumer._get_active_partitions())  # noqa: SLF001 - see above
        consumer._paused_partitions.update(tps)  # noqa: SLF001 - see above
        consumer._active_partitions = active - tps  # noqa: SLF001 - see above

    def on_backlog(self, backlogs: Mapping[Priority, int]) -> None:
        hold, release = self.policy.update(backlogs)
        if hold:
            log.info("upscale.prefetch_paused", classes=sorted(p.value for p in hold))
            self.apply()
        if release:
            log.info("upscale.prefetch_resumed", classes=sorted(p.value for p in release))
            if self._resume is not None and not self._is_rebalancing():
                released = {self._make_tp(self.topic, p) for pr in release for p in priority_partitions(pr)}
                self._resume(self._assigned(released))

    def paused_now(self) -> set[int]:
        """Partitions of our topic the consumer has paused (for tests and status)."""
        if self._consumer is None:
            return set()
        active = self._consumer._get_active_partitions()  # noqa: SLF001 - Faust has no public getter
        return {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic and tp not in active}
