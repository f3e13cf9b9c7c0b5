"""The consistency map through the compute engine (directory cache, in-process leases, no
servers): each computed tile is measured against its LR, stored with the tile (metadata and
one map fragment per batch) and published in upscale.done; cached tiles carry no value."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from compute.codec import decode_png
from compute.consistency import consistency_db
from compute.consistency_map import METADATA_KEY, decode_fragment, merge, tile_name
from compute.engine import ComputeEngine, EngineConfig
from compute.plan import SlideGeometry
from compute.samples import write_lr_slide
from compute.slides import DirectorySlides
from compute.tile_cache import DirectoryTileCache
from compute.tile_leases import LocalLeases
from compute.upscaler import InterpolationUpscaler
from schemas.events import Event, Region, TileRef, UpscaleDone, UpscaleRequested
from schemas.layout import TILE_SIZE, hr_consistency_prefix, lr_key

EXAM = "EX-CONSIST-1"
LR_W, LR_H = 150, 100  # x4: 600 x 400 px, 3 x 2 tiles, the last column and row partial


def tissue(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    coarse = rng.uniform(60, 230, (height // 6 + 2, width // 6 + 2, 3))
    smooth = np.kron(coarse, np.ones((6, 6, 1)))[:height, :width]
    return np.clip(smooth + rng.normal(0, 5, (height, width, 3)), 0, 255).astype(np.uint8)


class RecordingCache(DirectoryTileCache):
    """The directory cache, remembering the user metadata each object was written with."""

    def __init__(self, root: Path, fail_maps: bool = False) -> None:
        super().__init__(root)
        self.metadata: dict[str, dict[str, str]] = {}
        self.fail_maps = fail_maps

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: Mapping[str, str] | None = None) -> None:
        if self.fail_maps and "/consistency/" in key:
            raise ConnectionError("hr-cache unreachable for the map")
        self.metadata[key] = dict(metadata or {})
        await super().put(key, data, content_type, metadata)

    def fragments(self, scale: int) -> dict[str, float]:
        folder = self.root / hr_consistency_prefix(EXAM, 1, scale)
        return merge(decode_fragment(p.read_bytes()) for p in sorted(folder.glob("*.json")))


class Inverted(InterpolationUpscaler):
    """A model that has gone wrong on one region: it inverts windows whose LR is dark there."""

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        out = super().upscale_batch(images, scale)
        return [255 - o if int(i.min()) == 0 else o for i, o in zip(images, out)]


class Harness:
    def __init__(self, root: Path, pixels: np.ndarray, upscaler: object | None = None, blocks: bool = True,
                 fail_maps: bool = False) -> None:
        write_lr_slide(pixels, root / "slides" / lr_key(EXAM, 1))
        self.pixels = pixels
        self.events: list[Event] = []
        self.cache = RecordingCache(root / "hr", fail_maps)
        self.engine = ComputeEngine(
            upscaler=upscaler or InterpolationUpscaler(),  # type: ignore[arg-type]  # test doubles
            slides=DirectorySlides(root / "slides"), cache=self.cache, leases=LocalLeases(),
            publish=self._publish, worker_id="worker-A",
            config=EngineConfig(max_batch=4, blocks=blocks, consistency_threshold_db=30.0))

    async def _publish(self, event: Event) -> None:
        self.events.append(event)

    async def run(self, request: UpscaleRequested) -> list[UpscaleDone]:
        await self.engine.submit(request)
        task = asyncio.create_task(self.engine.run())
        try:
            await asyncio.wait_for(self.engine.wait_idle(), 60)
        finally:
            self.engine.stop()
            await task
        return [e for e in self.events if isinstance(e, UpscaleDone) and e.request_id == request.request_id]


def whole_slide(scale: int = 4) -> UpscaleRequested:
    return UpscaleRequested(exam_id=EXAM, slide_number=1, scale=scale, priority="interactive",
                            region=Region(x=0, y=0, width=LR_W * scale, height=LR_H * scale))


@pytest.mark.parametrize("blocks", [True, False])
async def test_each_computed_tile_is_measured_stored_and_published(tmp_path: Path, blocks: bool) -> None:
    pixels = tissue(LR_H, LR_W)
    h = Harness(tmp_path, pixels, blocks=blocks)
    answers = await h.run(whole_slide())
    results = [r for a in answers for r in a.results]
    assert len(results) == 6
    values = {}
    for r in results:
        assert r.consistency_db is not None and r.consistency_db > 30  # bicubic on smooth tissue
        tile = decode_png((await h.cache.get(r.object.key)) or b"")
        x0, y0 = r.tile.col * TILE_SIZE // 4, r.tile.row * TILE_SIZE // 4
        core = pixels[y0 : y0 + tile.shape[0] // 4, x0 : x0 + tile.shape[1] // 4]  # partial at the edges
        assert r.consistency_db == consistency_db(tile, core, 4)  # what was stored, against the LR
        assert h.cache.metadata[r.object.key] == {METADATA_KEY: f"{r.consistency_db:.2f}"}
        values[tile_name(r.tile)] = r.consistency_db
    assert h.cache.fragments(4) == values  # the slide's map: every computed tile, nothing else
    summaries = [a.consistency for a in answers]
    assert all(s is not None and s.below == 0 and s.threshold_db == 30.0 for s in summaries)
    assert sum(s.tiles for s in summaries if s is not None) == 6
    assert min(s.min_db for s in summaries if s is not None) == min(values.values())


async def test_cached_tiles_carry_no_value_and_add_no_fragment(tmp_path: Path) -> None:
    h = Harness(tmp_path, tissue(LR_H, LR_W))
    await h.run(whole_slide())
    before = h.cache.fragments(4)
    again = await h.run(whole_slide())
    assert all(r.cached and r.consistency_db is None for a in again for r in a.results)
    assert all(a.consistency is None for a in again)
    assert h.cache.fragments(4) == before


async def test_tiles_that_disagree_with_the_lr_are_counted_below_the_threshold(tmp_path: Path) -> None:
    pixels = tissue(LR_H, LR_W)
    pixels[:20, :20] = 0  # a dark patch in tile (0, 0): the "model" inverts windows that see it
    h = Harness(tmp_path, pixels, upscaler=Inverted(), blocks=False)
    answers = await h.run(whole_slide())
    by_tile = {(r.tile.col, r.tile.row): r.consistency_db for a in answers for r in a.results}
    top = SlideGeometry(LR_W, LR_H).top_level(4)
    assert by_tile[(0, 0)] is not None and by_tile[(0, 0)] < 15
    assert all(v is not None and v > 30 for k, v in by_tile.items() if k != (0, 0))
    assert sum(a.consistency.below for a in answers if a.consistency is not None) == 1
    assert h.cache.fragments(4)[tile_name(TileRef(level=top, col=0, row=0))] == by_tile[(0, 0)]


async def test_a_map_that_cannot_be_written_fails_no_tile(tmp_path: Path) -> None:
    h = Harness(tmp_path, tissue(LR_H, LR_W), fail_maps=True)
    answers = await h.run(whole_slide())
    results = [r for a in answers for r in a.results]
    assert len(results) == 6 and all(r.consistency_db is not None for r in results)
    assert all(h.cache.metadata[r.object.key] for r in results)  # the tiles still carry their value
    assert h.cache.fragments(4) == {}
