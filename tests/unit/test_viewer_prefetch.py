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


def test_the_ring_reaches_as_far_sideways_as_up_and_down_in_screens() -> None:
    top = VIEW.max_level
    tiles = viewport_tiles(VIEW, top, 4096, 4096, 1920, 1080)  # columns 16-23, rows 16-20
    cols = [t.col for t in tiles.ring]
    rows = [t.row for t in tiles.ring]
    # A 16:9 screen (7.5 x 4.2 tiles): 96 ring tiles reach 4 columns to each side and 2 rows up
    # and down, about half a screen each way. Nearest in tiles alone reached 2-3 columns sideways
    # (and 4-5 rows up and down), so a sideways pan found a quarter of its screen computed
    # instead of half.
    assert min(cols) == 12 and max(cols) == 27
    assert min(rows) == 14 and max(rows) == 22
    right = sum(1 for t in tiles.ring if t.col > 23 and 16 <= t.row <= 20)
    below = sum(1 for t in tiles.ring if t.row > 20 and 16 <= t.col <= 23)
    assert right / 5 >= 3 and below / 8 >= 2  # columns of the screen's height, rows of its width


def test_edges_clip_and_lr_levels_need_nothing() -> None:
    top = VIEW.max_level
    corner = viewport_tiles(VIEW, top, -500, -500, 1000, 1000)
    assert {(t.col, t.row) for t in corner.visible} == {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert all(t.col >= 0 and t.row >= 0 for t in corner.ring)
    assert viewport_tiles(VIEW, VIEW.lr_level, 0, 0, 1000, 1000).visible == []
    with pytest.raises(TileOutOfRange):
        viewport_tiles(VIEW, top, 0, 0, 0, 10)
