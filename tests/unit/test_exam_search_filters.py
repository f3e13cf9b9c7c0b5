"""The worklist's filters are flat top-level equalities where they can be (FerretDB pushes those
down to its backend's index; ``$or`` and ``$and`` it evaluates over the whole collection), and
mean the same as before."""

from __future__ import annotations

from datetime import UTC, datetime

from catalog.exam_search import ExamQuery, ExamScope, _all_of


def test_a_single_reader_is_a_plain_equality() -> None:
    assert ExamScope(pathologist="dr.a").filter() == {"pathologist": "dr.a"}
    assert ExamScope(department="GI").filter() == {"department": "GI"}
    assert ExamScope(pathologist="dr.a", department="GI").filter() == {
        "$or": [{"pathologist": "dr.a"}, {"department": "GI"}]}


def test_clauses_on_different_fields_merge_and_overlapping_ones_stay_an_and() -> None:
    since = datetime(2026, 1, 1, tzinfo=UTC)
    query = ExamQuery(body_part="breast", date_from=since).filter()
    assert _all_of([query, ExamScope(pathologist="dr.a").filter()]) == {
        "body_part": "breast", "exam_date": {"$gte": since}, "pathologist": "dr.a"}
    both = ExamScope(pathologist="dr.a", department="GI").filter()
    assert _all_of([query, both]) == {"body_part": "breast", "exam_date": {"$gte": since}, **both}
    clash = [{"pathologist": "dr.a"}, {"pathologist": "dr.b"}]
    assert _all_of(clash) == {"$and": clash}
    assert _all_of([]) == {}
