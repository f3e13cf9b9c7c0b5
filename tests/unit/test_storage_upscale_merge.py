"""Answers to one upscale request arrive per tile batch; the gateway merges them."""

from __future__ import annotations

from uuid import uuid4

from core.upscale_client import merge_answers
from schemas.common import ObjectRef
from schemas.events import TileRef, UpscaleDone, UpscaleFailed, UpscaleTileResult

REQUEST = uuid4()


def _done(cols: list[int], remaining: int, compute_ms: float) -> UpscaleDone:
    results = [UpscaleTileResult(tile=TileRef(level=12, col=c, row=0),
                                 object=ObjectRef(bucket="slidestream-hr-cache", key=f"hr/E1/0001/x8/12/{c}_0.png"), cached=False)
               for c in cols]
    return UpscaleDone(request_id=REQUEST, exam_id="E1", slide_number=1, scale=8, results=results,
                       model="sr-cascade-small", timings_ms={"compute": compute_ms}, remaining=remaining)


def test_batches_are_merged_into_one_answer_with_every_tile() -> None:
    merged = merge_answers([_done([0, 1], 2, 10.0), _done([2, 3], 0, 15.0)])
    assert isinstance(merged, UpscaleDone)
    assert [r.tile.col for r in merged.results] == [0, 1, 2, 3]
    assert merged.remaining == 0
    assert merged.timings_ms["compute"] == 25.0


def test_a_failed_batch_makes_the_answer_a_failure() -> None:
    failed = UpscaleFailed(request_id=REQUEST, exam_id="E1", slide_number=1, reason="model error on one tile",
                           remaining=1)
    merged = merge_answers([_done([0], 2, 5.0), failed, _done([2], 0, 5.0)])
    assert isinstance(merged, UpscaleFailed)
    assert merged.reason == "model error on one tile"
    assert merged.remaining == 0
