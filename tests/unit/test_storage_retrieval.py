"""Pure parts of retrieval: which HR tiles may be requested, tiles of a region, and the
priority partition a request goes to."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.kafka import partition_for
from schemas.catalog import ImageRecord
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import Region, TileRef
from schemas.layout import TILE_SIZE, dzi_max_level, sr_levels, tile_grid
from schemas.topics import Priority, priority_partitions
from storage.retrieval import InvalidTileRequest, check_tiles, tiles_for_region


def lr(width: int | None = 1000, height: int | None = 600) -> ImageRecord:
    return ImageRecord(exam_id="E1", patient_id="P1", slide_number=1, state=ImageState.LR, tier=StorageTier.RECENT,
                       object=ObjectRef(bucket="slidestream-recent", key="lr/E1/0001.tiff"),
                       acquired_at=datetime(2026, 1, 1, tzinfo=UTC), width=width, height=height)


def test_only_super_resolution_levels_inside_the_grid_are_accepted() -> None:
    levels = sr_levels(1000, 600, 4)
    top = levels.stop - 1
    cols, rows = tile_grid(4000, 2400, top)
    check_tiles(lr(), 4, [TileRef(level=top, col=cols - 1, row=rows - 1), TileRef(level=levels.start, col=0, row=0)])
    with pytest.raises(InvalidTileRequest, match="outside"):
        check_tiles(lr(), 4, [TileRef(level=top, col=cols, row=0)])
    with pytest.raises(InvalidTileRequest, match="not a super-resolution level"):
        check_tiles(lr(), 4, [TileRef(level=levels.start - 1, col=0, row=0)])
    with pytest.raises(InvalidTileRequest, match="scale"):
        check_tiles(lr(), 3, [TileRef(level=top, col=0, row=0)])
    with pytest.raises(InvalidTileRequest, match="no tiles"):
        check_tiles(lr(), 4, [])
    with pytest.raises(InvalidTileRequest, match="LR size"):
        check_tiles(lr(width=None), 4, [TileRef(level=top, col=0, row=0)])


def test_region_tiles_cover_the_region_at_full_resolution_and_clip_to_the_slide() -> None:
    image = lr()
    top = dzi_max_level(2000, 1200)
    tiles = tiles_for_region(image, 2, Region(x=TILE_SIZE - 1, y=0, width=2, height=TILE_SIZE + 1))
    assert tiles == [TileRef(level=top, col=0, row=0), TileRef(level=top, col=1, row=0),
                     TileRef(level=top, col=0, row=1), TileRef(level=top, col=1, row=1)]
    whole = tiles_for_region(image, 2, Region(x=0, y=0, width=10_000, height=10_000))
    assert len(whole) == tile_grid(2000, 1200, top)[0] * tile_grid(2000, 1200, top)[1]


def test_requests_of_one_slide_stay_on_one_partition_of_their_class() -> None:
    for priority in Priority:
        chosen = {partition_for(priority, f"E{i}", 1) for i in range(50)}
        assert chosen == set(priority_partitions(priority))  # spread over the class
        assert partition_for(priority, "E7", 3) == partition_for(priority, "E7", 3)  # stable per slide
