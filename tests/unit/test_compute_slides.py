"""Opened LR slides are shared: concurrent first reads of one slide open it once."""

from __future__ import annotations

import asyncio

import pytest

from compute.slides import DirectorySlides, LrSlide, UnknownSlide


class CountingSlides(DirectorySlides):
    def __init__(self) -> None:
        super().__init__("/nonexistent")
        self.opened = 0

    async def _open_uncached(self, exam_id: str, slide_number: int) -> LrSlide:
        self.opened += 1
        await asyncio.sleep(0.05)
        if exam_id == "missing":
            raise UnknownSlide("no such slide")
        return object()  # type: ignore[return-value]  # identity is all this test needs


async def test_concurrent_opens_share_one() -> None:
    slides = CountingSlides()
    got = await asyncio.gather(*(slides.open("E1", 1) for _ in range(8)))
    assert slides.opened == 1 and all(g is got[0] for g in got)
    assert await slides.open("E1", 1) is got[0] and slides.opened == 1


async def test_a_failed_open_is_reported_to_all_and_retried_later() -> None:
    slides = CountingSlides()
    results = await asyncio.gather(*(slides.open("missing", 1) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, UnknownSlide) for r in results) and slides.opened == 1
    with pytest.raises(UnknownSlide):
        await slides.open("missing", 1)
    assert slides.opened == 2
