"""The answers of one request for one batch: ``upscale.done`` for the tiles that came out,
``upscale.failed`` per failure reason, each with the tile keys it answers and ``remaining``
counting down to 0 on the request's last answer (docs/upscale-contract.md)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import ConsistencySummary, Event, TileRef, UpscaleDone, UpscaleFailed, UpscaleRequested, UpscaleTileResult
from schemas.layout import hr_tile_key


@dataclass(frozen=True)
class Answer:
    event: Event
    answers: frozenset[str]  # tile keys this event answers


def batch_answers(request: UpscaleRequested, pending: set[str], results: list[UpscaleTileResult],
                  failures: dict[str, list[TileRef]], *, model: str, timings_ms: dict[str, float],
                  consistency_threshold_db: float) -> list[Answer]:
    """In publishing order; ``pending`` (the request's unanswered tile keys) is not changed.
    ``upscale.done`` summarises the consistency of the tiles it computed (cached ones have no
    value here: they were measured when computed, and the map keeps it)."""
    left = set(pending)
    answers = []
    if results:
        answered = frozenset(r.object.key for r in results)
        left -= answered
        answers.append(Answer(UpscaleDone(
            request_id=request.request_id, exam_id=request.exam_id, slide_number=request.slide_number,
            scale=request.scale, results=results, model=model, timings_ms=timings_ms, remaining=len(left),
            consistency=ConsistencySummary.of([r.consistency_db for r in results if r.consistency_db is not None],
                                              consistency_threshold_db)),
            answered))
    for reason, tiles in failures.items():
        answered = frozenset(hr_tile_key(request.exam_id, request.slide_number, request.scale, t.level, t.col, t.row)
                             for t in tiles)
        left -= answered
        answers.append(Answer(UpscaleFailed(
            request_id=request.request_id, exam_id=request.exam_id, slide_number=request.slide_number,
            reason=reason, tiles=tiles, remaining=len(left)), answered))
    return answers
