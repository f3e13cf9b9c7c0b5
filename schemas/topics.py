"""Kafka topic names, partitioning and priority classes: the public event interface.

Defined once here; infra/ creates the topics from ``TOPICS`` and agents import the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Priority(str, Enum):
    """Super-resolution priority classes, highest first (SPEC 3)."""

    INTERACTIVE = "interactive"  # a pathologist's viewer is waiting
    DISTRIBUTION = "distribution"  # pre-computation for assigned terminals / daily diagnosis
    BACKGROUND = "background"  # export, whole-slide generation, research

    @property
    def rank(self) -> int:
        return PRIORITY_ORDER.index(self)


PRIORITY_ORDER: tuple[Priority, ...] = (Priority.INTERACTIVE, Priority.DISTRIBUTION, Priority.BACKGROUND)

# Partitions of ``upscale.requested`` per priority class. Several partitions per class let
# several GPU workers in one consumer group share a class.
PARTITIONS_PER_PRIORITY = 2


# The classes are interleaved (0 interactive, 1 distribution, 2 background, 3 interactive,
# ...), not in blocks: Faust's assignor hands each worker a contiguous range of partitions,
# and with blocks one of two workers would get all the background work and the other all
# the interactive work. Interleaved, every contiguous range of three partitions (and every
# round-robin share) holds one partition of each class, so each worker serves every class.
def priority_partitions(priority: Priority) -> tuple[int, ...]:
    """Partition numbers of ``upscale.requested`` that carry ``priority``."""
    return tuple(priority.rank + i * len(PRIORITY_ORDER) for i in range(PARTITIONS_PER_PRIORITY))


def priority_of_partition(partition: int) -> Priority:
    if not 0 <= partition < len(PRIORITY_ORDER) * PARTITIONS_PER_PRIORITY:
        raise ValueError(f"partition {partition} of upscale.requested has no priority class")
    return PRIORITY_ORDER[partition % len(PRIORITY_ORDER)]


class Topic(str, Enum):
    SLIDE_SCANNED = "slide.scanned"
    SLIDE_QC_PASSED = "slide.qc_passed"
    SLIDE_QC_FAILED = "slide.qc_failed"
    SLIDE_STORED = "slide.stored"
    UPSCALE_REQUESTED = "upscale.requested"
    UPSCALE_DONE = "upscale.done"
    UPSCALE_FAILED = "upscale.failed"
    UPSCALE_CANCELLED = "upscale.cancelled"
    PATIENT_ADMITTED = "patient.admitted"
    PATIENT_DISCHARGED = "patient.discharged"
    TIER_MOVED = "tier.moved"
    DISTRIBUTION_ASSIGNED = "distribution.assigned"
    DEAD_LETTER = "slidestream.dead_letter"


DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


# Event topics keep 7 days (a week of replay after an outage); the dead-letter topic keeps
# 30 days so an operator can inspect and replay rejected events.
_EVENTS = {"retention.ms": str(7 * DAY_MS)}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.SLIDE_SCANNED.value, 4, _EVENTS, "scanner uploaded a slide to the ingest bucket"),
    TopicSpec(Topic.SLIDE_QC_PASSED.value, 4, _EVENTS, "slide passed QC; LR object ready for storage"),
    TopicSpec(Topic.SLIDE_QC_FAILED.value, 2, _EVENTS, "slide failed QC, with a reason per check"),
    TopicSpec(Topic.SLIDE_STORED.value, 4, _EVENTS, "LR slide saved in the recent tier and mirror"),
    TopicSpec(
        Topic.UPSCALE_REQUESTED.value,
        len(PRIORITY_ORDER) * PARTITIONS_PER_PRIORITY,
        _EVENTS,
        "super-resolution work; partitions grouped by priority class",
    ),
    # As many partitions as upscale.requested, and a cancel goes to its request's partition:
    # Faust's assignor gives same-numbered partitions of co-subscribed topics with equal
    # counts to one worker, so the cancel reaches the worker that holds the request.
    TopicSpec(
        Topic.UPSCALE_CANCELLED.value,
        len(PRIORITY_ORDER) * PARTITIONS_PER_PRIORITY,
        {"retention.ms": str(DAY_MS)},
        "tiles a viewer no longer needs; dropped if not yet computed",
    ),
    TopicSpec(Topic.UPSCALE_DONE.value, 4, {"retention.ms": str(DAY_MS)}, "HR tiles written to hr-cache"),
    TopicSpec(Topic.UPSCALE_FAILED.value, 2, _EVENTS, "super-resolution request rejected or failed"),
    TopicSpec(Topic.PATIENT_ADMITTED.value, 2, _EVENTS, "HIS: patient admitted (ADT^A01)"),
    TopicSpec(Topic.PATIENT_DISCHARGED.value, 2, _EVENTS, "HIS: patient discharged (ADT^A03)"),
    TopicSpec(Topic.TIER_MOVED.value, 2, _EVENTS, "an image moved between storage tiers"),
    TopicSpec(Topic.DISTRIBUTION_ASSIGNED.value, 2, _EVENTS, "HR images assigned to a diagnosis terminal"),
    TopicSpec(Topic.DEAD_LETTER.value, 1, {"retention.ms": str(30 * DAY_MS)}, "events that failed validation"),
)

# Operational topics: a probe answered by every worker (liveness check and latency bench).
PROBE_TOPIC = "slidestream.probe"
PROBE_REPLY_TOPIC = "slidestream.probe_reply"
TOPICS = TOPICS + (
    TopicSpec(PROBE_TOPIC, 1, {"retention.ms": str(3600 * 1000)}, "liveness probe to the agents"),
    TopicSpec(PROBE_REPLY_TOPIC, 1, {"retention.ms": str(3600 * 1000)}, "probe answers from the agents"),
)
