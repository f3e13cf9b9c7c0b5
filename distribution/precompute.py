"""Pre-computation for a terminal (SPEC 2): every SR tile of an assigned exam's slides that the
hr-cache lacks is asked for at distribution priority, before the pathologist opens it.

An assignment event is first checked against the catalog. Kafka's ACLs stop strangers, not a
compromised service of ours, and the event steers GPU time and, through the terminal API,
which terminal may download an exam: so an event that the catalog does not back is refused
as forged (the agent dead-letters it), and one that the catalog has moved past is stale and
skipped quietly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from itertools import islice

from catalog.assignments import Assignments
from catalog.errors import PermanentError
from compute.wholeslide import chunk_requests
from core.kafka import EventSink
from distribution.hr_slides import HrSlides, SlideLevels
from schemas.catalog import AssignmentRecord
from schemas.events import DistributionAssigned, TileRef, UpscaleRequested
from schemas.topics import Priority

# Request ids derive from (exam, slide, terminal, revision): a redelivered event asks again
# under the same ids, which compute recognises.
_JOBS = uuid.UUID("0b7e3f0c-9a55-4c61-8d0e-3f6a2c9d4e71")


class ForgedAssignment(PermanentError):
    """A ``distribution.assigned`` event the catalog does not back."""

    def __init__(self, event: DistributionAssigned, why: str) -> None:
        super().__init__(f"distribution.assigned of exam {event.exam_id} to terminal {event.terminal_id} "
                         f"(revision {event.assignment_revision}) is not backed by the catalog: {why}")


def verdict(event: DistributionAssigned, record: AssignmentRecord | None) -> str:
    """``current``, ``stale``, or raises ``ForgedAssignment``."""
    if record is None:
        raise ForgedAssignment(event, "the exam has no assignment")
    if event.assignment_revision > record.revision:
        raise ForgedAssignment(event, f"the assignment is only at revision {record.revision}")
    if not set(event.slide_numbers) <= set(record.slide_numbers):
        raise ForgedAssignment(event, "it names slides that are not in the assignment")
    if record.terminal_id == event.terminal_id and record.state == "assigned":
        return "current"
    held_before = (event.terminal_id == record.terminal_id
                   or any(hop.terminal_id == event.terminal_id for hop in record.history))
    if held_before and event.assignment_revision < record.revision:
        return "stale"  # reassigned away or done since: nothing to prepare any more
    raise ForgedAssignment(event, "the terminal does not hold the exam at that revision")


@dataclass(frozen=True)
class Precomputed:
    requests: int = 0
    tiles: int = 0
    scanned_slides: int = 0
    stale: bool = False


def _chunks(tiles: list[TileRef], size: int) -> list[list[TileRef]]:
    it = iter(tiles)
    return [chunk for chunk in iter(lambda: list(islice(it, size)), [])]


class Precomputer:
    def __init__(self, assignments: Assignments, slides: HrSlides, sink: EventSink, chunk_tiles: int) -> None:
        self.assignments = assignments
        self.slides = slides
        self.sink = sink
        self.chunk_tiles = chunk_tiles

    async def __call__(self, event: DistributionAssigned) -> Precomputed:
        if verdict(event, await self.assignments.get(event.exam_id)) == "stale":
            return Precomputed(stale=True)
        return await self._request(event, job_tag="")

    async def top_up(self, record: AssignmentRecord, round_: int) -> Precomputed:
        """Ask again for the assigned exam's SR tiles that are still missing: a pre-computation
        skipped or lost on the way (a slide counted as scanned while its scan was being cut, and
        the cut then dropped by a discharge; tiles evicted before the terminal copied them).
        ``round_`` keeps each round's request ids apart from earlier ones."""
        assert record.terminal_id is not None
        event = DistributionAssigned(terminal_id=record.terminal_id, exam_id=record.exam_id,
                                     slide_numbers=record.slide_numbers, priority=Priority.DISTRIBUTION,
                                     policy=record.rule, assignment_revision=record.revision)
        return await self._request(event, job_tag=f"/top-up-{round_}")

    async def missing(self, record: AssignmentRecord) -> tuple[int, int]:
        """(tiles present, tiles expected) over the exam's slides that compute fills (not
        scanned ones): the progress the sweep watches for a stall."""
        present = expected = 0
        for number in record.slide_numbers:
            slide = await self.slides.levels(record.exam_id, number)
            if slide is None or slide.scanned:
                continue
            present += len(await self.slides.present(slide))
            expected += slide.expected
        return present, expected

    async def _request(self, event: DistributionAssigned, job_tag: str) -> Precomputed:
        requests = tiles = scanned = 0
        for number in sorted(set(event.slide_numbers)):
            slide = await self.slides.levels(event.exam_id, number)
            if slide is None:
                continue  # no LR record (any more): nothing to compute from
            if slide.scanned:
                scanned += 1  # its 40x tiles come from the scan
                continue
            sent = await self._send(slide, event, job_tag)
            requests += len(sent)
            tiles += sum(len(r.tiles or ()) for r, _ in sent)
        return Precomputed(requests, tiles, scanned)

    def requests_for(self, slide: SlideLevels, missing: list[TileRef],
                     event: DistributionAssigned, job_tag: str = "") -> list[tuple[UpscaleRequested, int]]:
        job = uuid.uuid5(_JOBS, f"{event.exam_id}/{slide.slide_number}/{event.terminal_id}/"
                                f"{event.assignment_revision}{job_tag}")
        planned = chunk_requests(event.exam_id, slide.slide_number, slide.scale, Priority.DISTRIBUTION,
                                 _chunks(missing, self.chunk_tiles), job)
        # No deadline: pre-computation may wait behind interactive work for as long as it takes.
        return [(request.model_copy(update={"requested_by": event.terminal_id}), partition)
                for request, partition in planned]

    async def _send(self, slide: SlideLevels, event: DistributionAssigned,
                    job_tag: str) -> list[tuple[UpscaleRequested, int]]:
        present = await self.slides.present(slide)
        missing = [TileRef(level=lv, col=c, row=r) for lv, c, r in slide.tiles() if (lv, c, r) not in present]
        planned = self.requests_for(slide, missing, event, job_tag)
        for request, partition in planned:
            await self.sink(request, partition=partition)
        return planned
