"""Is the system idle? The tier sweep runs only while the ingest and upscale queues are quiet
(SPEC 2: "when idle"), so bulk copies never compete with scanning or a pathologist waiting
for super-resolution.

Quiet means, for every watched topic: no message arrived since the previous look (end
offsets unchanged) and every consumer group that reads the topic has caught up (lag 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.kafka import new_admin, new_consumer, topic_partitions
from core.settings import Settings

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class QueueSnapshot:
    end_offsets: dict[TopicPartitionKey, int]
    committed: dict[str, dict[TopicPartitionKey, int]] = field(default_factory=dict)  # group -> offsets


@dataclass(frozen=True)
class Quietness:
    quiet: bool
    reason: str


def assess(previous: QueueSnapshot | None, current: QueueSnapshot) -> Quietness:
    if previous is None:
        return Quietness(False, "first look at the queues")
    for tp, end in sorted(current.end_offsets.items()):
        before = previous.end_offsets.get(tp)
        if before is None or end != before:
            return Quietness(False, f"new messages on {tp[0]}")
    for group, offsets in sorted(current.committed.items()):
        for tp, committed in sorted(offsets.items()):
            end = current.end_offsets.get(tp)
            if end is not None and committed >= 0 and end - committed > 0:
                return Quietness(False, f"consumer group {group} is {end - committed} behind on {tp[0]}")
    return Quietness(True, "queues quiet")



class KafkaQueueMonitor:
    """Takes ``QueueSnapshot``s of the watched topics with aiokafka's admin and consumer APIs."""

    def __init__(self, settings: Settings, topics: tuple[str, ...]) -> None:
        self._settings = settings
        self._topics = topics
        self._previous: QueueSnapshot | None = None

    async def snapshot(self) -> QueueSnapshot:
        from aiokafka import TopicPartition

        consumer = new_consumer(self._settings, enable_auto_commit=False)
        admin = new_admin(self._settings)
        await consumer.start()
        await admin.start()
        try:
            tps = [TopicPartition(topic, p) for topic in self._topics
                   for p in await topic_partitions(consumer, topic)]
            ends = await consumer.end_offsets(tps) if tps else {}
            end_offsets = {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
            committed: dict[str, dict[TopicPartitionKey, int]] = {}
            for group in await admin.list_consumer_groups():
                group_id = group[0]
                offsets = await admin.list_consumer_group_offsets(group_id)
                mine = {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()
                        if tp.topic in self._topics}
                if mine:
                    committed[group_id] = mine
            return QueueSnapshot(end_offsets, committed)
        finally:
            await admin.close()
            await consumer.stop()

    async def check(self) -> Quietness:
        current = await self.snapshot()
        verdict = assess(self._previous, current)
        self._previous = current
        return verdict
