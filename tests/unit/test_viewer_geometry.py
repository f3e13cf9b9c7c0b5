"""The viewer's Deep Zoom geometry agrees with schemas.layout (the compute side's pyramid),
and LR cuts land on the right pixels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from schemas.layout import TILE_SIZE, dzi_max_level, hr_scale_for, level_size, sr_levels, tile_grid
from viewer.deepzoom import SlideView, TileOutOfRange
from viewer.lr_tiles import cut_tile, encode, source_level


@pytest.mark.parametrize(("lr_mag", "target", "scale"), [(5.0, 40.0, 8), (10.0, 40.0, 4), (20.0, 40.0, 2),
                                                         (None, 40.0, 8), (5.0, 20.0, 4), (2.5, 40.0, 8)])
def test_scale_brings_lr_closest_to_target(lr_mag: float | None, target: float, scale: int) -> None:
    assert hr_scale_for(lr_mag, target) == scale


@pytest.mark.parametrize(("w", "h", "scale"), [(600, 600, 8), (1000, 333, 4), (257, 1, 2), (4096, 3000, 8)])
def test_levels_match_the_layout(w: int, h: int, scale: int) -> None:
    view = SlideView(w, h, scale, 5.0)
    assert view.max_level == dzi_max_level(w * scale, h * scale)
    assert level_size(view.width, view.height, view.lr_level) == (w, h)  # the LR level is the LR image
    assert [lv for lv in range(view.max_level + 1) if view.kind(lv) == "sr"] == list(sr_levels(w, h, scale))
    assert view.magnification(view.max_level) == pytest.approx(5.0 * scale)
    root = ET.fromstring(view.dzi())
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None and (int(size.get("Width", 0)), int(size.get("Height", 0))) == (w * scale, h * scale)
    assert root.get("TileSize") == str(TILE_SIZE) and root.get("Overlap") == "0"


def test_tile_boxes_cover_each_level_exactly() -> None:
    view = SlideView(600, 300, 8)
    for level in (view.lr_level - 2, view.lr_level, view.max_level):
        cols, rows = tile_grid(view.width, view.height, level)
        width, height = level_size(view.width, view.height, level)
        assert sum(view.box(level, c, 0).width for c in range(cols)) == width
        assert sum(view.box(level, 0, r).height for r in range(rows)) == height
        with pytest.raises(TileOutOfRange):
            view.box(level, cols, 0)
        with pytest.raises(TileOutOfRange):
            view.box(level, 0, rows)
    with pytest.raises(TileOutOfRange):
        view.box(view.max_level + 1, 0, 0)
    with pytest.raises(TileOutOfRange):
        view.box(-1, 0, 0)


def test_lr_window_of_a_40x_tile_is_its_32_px_source() -> None:
    view = SlideView(600, 600, 8)
    window = view.lr_window(view.max_level, 2, 1)
    assert (window.x, window.y, window.width, window.height, window.factor) == (64, 32, 32, 32, 8.0)
    edge = view.lr_window(view.max_level, 18, 18)  # 600*8 = 4800 = 18*256 + 192
    assert (edge.x, edge.width) == (576, 24)


class ArrayPyramid:
    """Stored levels as arrays (level 0 and its 2x downsamples), like an LR pyramidal TIFF."""

    def __init__(self, base: np.ndarray, levels: int = 3) -> None:
        self.levels = [base]
        for _ in range(levels - 1):
            prev = self.levels[-1]
            self.levels.append(prev[: prev.shape[0] // 2 * 2 : 2, : prev.shape[1] // 2 * 2 : 2])
        self.reads: list[int] = []

    @property
    def level_sizes(self) -> list[tuple[int, int]]:
        return [(a.shape[1], a.shape[0]) for a in self.levels]

    def read_level_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        self.reads.append(level)
        out = np.full((height, width, 3), 255, np.uint8)
        part = self.levels[level][y : y + height, x : x + width]
        out[: part.shape[0], : part.shape[1]] = part
        return out


def test_lr_level_tile_is_the_stored_pixels() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (600, 600, 3), dtype=np.uint8)
    slide = ArrayPyramid(base)
    view = SlideView(600, 600, 8)
    tile = cut_tile(slide, view, view.lr_level, 1, 2)
    assert np.array_equal(tile, base[512:600, 256:512])


def test_zoomed_out_tiles_read_a_coarser_stored_level() -> None:
    slide = ArrayPyramid(np.zeros((1024, 1024, 3), np.uint8))
    view = SlideView(1024, 1024, 8)
    tile = cut_tile(slide, view, view.lr_level - 2, 0, 0)  # a 4x downsample of the LR
    assert tile.shape == (256, 256, 3)
    assert slide.reads == [2]  # the stored 4x level, not level 0
    assert source_level(slide.level_sizes, 3.0) == (1, 2.0)


def test_placeholder_is_the_lr_window_upsampled() -> None:
    base = np.zeros((600, 600, 3), np.uint8)
    base[32:64, 64:96] = 200  # exactly the LR source of 40x tile (2, 1)
    view = SlideView(600, 600, 8)
    tile = cut_tile(ArrayPyramid(base), view, view.max_level, 2, 1)
    assert tile.shape == (256, 256, 3)
    assert abs(float(tile[8:-8, 8:-8].mean()) - 200) < 1


def test_encodings_round_trip() -> None:
    import io

    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    png = Image.open(io.BytesIO(encode(pixels, "image/png")))
    assert png.format == "PNG" and np.array_equal(np.asarray(png), pixels)
    jpeg = Image.open(io.BytesIO(encode(pixels, "image/jpeg", 90)))
    assert jpeg.format == "JPEG" and jpeg.size == (80, 100)


def test_the_cut_cache_keeps_recent_bytes_within_its_capacity() -> None:
    from viewer.tile_service import ByteLru

    lru = ByteLru(10)
    lru.put("a", b"1234")
    lru.put("b", b"5678")
    assert lru.get("a") == b"1234"  # a is now the most recent
    lru.put("c", b"90ab")  # over 10 bytes: the least recent (b) goes
    assert lru.get("b") is None and lru.get("a") == b"1234" and lru.get("c") == b"90ab"
    assert lru.size == 8
    lru.put("huge", b"x" * 11)  # larger than the whole cache: not kept
    assert lru.get("huge") is None and lru.size == 8
