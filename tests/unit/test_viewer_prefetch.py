"""Low-resolution reading mode: the viewport's tiles and the prefetch ring around them."""

from __future__ import annotations

import pytest

from schemas.events import TileRef
from viewer.deepzoom import SlideView, TileOutOfRange
from viewer.prefetch import viewport_tiles

VIEW = SlideView(2000, 1500, 8)  # 16000 x 12000 at 40x


def test_a_1080p_viewport_and_its_ring() -> None:
    top = VIEW.max_level
    tiles = viewport_tiles(VIEW, top, 4096, 4096, 1920, 1080)
    assert len(tiles.visible) == 8 * 5  # 1920/256 = 7.5 -> 8 columns from an aligned start; 1080 -> 5 rows
    assert TileRef(level=top, col=16, row=16) in tiles.visible
    assert not set(tiles.visible) & set(tiles.ring)
    assert 0 < len(tiles.ring) <= 96
    first = tiles.ring[0]  # nearest the centre first
    assert abs(first.col - 19.75) <= 5 and abs(first.row - 18.1) <= 4


def test_edges_clip_and_lr_levels_need_nothing() -> None:
    top = VIEW.max_level
    corner = viewport_tiles(VIEW, top, -500, -500, 1000, 1000)
    assert {(t.col, t.row) for t in corner.visible} == {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert all(t.col >= 0 and t.row >= 0 for t in corner.ring)
    assert viewport_tiles(VIEW, VIEW.lr_level, 0, 0, 1000, 1000).visible == []
    with pytest.raises(TileOutOfRange):
        viewport_tiles(VIEW, top, 0, 0, 0, 10)
