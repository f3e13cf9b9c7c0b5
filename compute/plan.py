"""Request -> tile plan: which HR tiles to produce, and which LR pixels each one needs.

Geometry (``schemas.layout``): the x``s`` HR pyramid of an LR slide (W x H) has its top Deep
Zoom level at W*s x H*s. The ``log2(s)`` finest levels are super-resolved; level ``L`` of
them has an *effective* scale ``e = s / 2**(top - L)`` and is exactly the LR image upscaled
by ``e`` (W*e x H*e, no rounding). We run the model at ``e`` directly (the cascade yields
x2/x4/x8) instead of downsampling the x``s`` output: 4x less work per octave.

An HR tile (col, row) of that level covers output pixels [col*256, ...) and therefore LR
pixels [col*256/e, ...) - exact, since 256 is a multiple of every ``e``. The model reads
``margin`` LR pixels of context on every side so that tiles computed separately join
without seams. Windows are clipped at the slide edges and then padded (edge replicate) to
one fixed size per ``e``, so tiles of different requests can share one batch. Neighbouring
tiles can also share one larger window with one margin around them (``compute.blocks``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from schemas.events import Region, TileRef, UpscaleRequested
from schemas.layout import ALLOWED_SCALES, TILE_SIZE, dzi_max_level, hr_tile_key, sr_levels


class InvalidRequest(ValueError):
    """A request that cannot be planned (out-of-range level, tile or region); the message is
    the reason sent back in ``upscale.failed``."""


@dataclass(frozen=True)
class SlideGeometry:
    """Size of the LR slide's level 0 in pixels."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"slide size must be positive, got {self.width}x{self.height}")

    def top_level(self, scale: int) -> int:
        return dzi_max_level(self.width * scale, self.height * scale)

    def sr_levels(self, scale: int) -> range:
        return sr_levels(self.width, self.height, scale)

    def effective_scale(self, scale: int, level: int) -> int:
        """Upscaling factor from LR level 0 to HR ``level`` of the x``scale`` pyramid."""
        levels = self.sr_levels(scale)
        if level not in levels:
            raise InvalidRequest(
                f"level {level} is not a super-resolution level of the x{scale} pyramid "
                f"(levels {levels.start}..{levels.stop - 1}; lower levels are LR downsamples)"
            )
        return scale >> (self.top_level(scale) - level)

    def level_size(self, scale: int, level: int) -> tuple[int, int]:
        e = self.effective_scale(scale, level)
        return self.width * e, self.height * e

    def grid(self, scale: int, level: int) -> tuple[int, int]:
        w, h = self.level_size(scale, level)
        return math.ceil(w / TILE_SIZE), math.ceil(h / TILE_SIZE)


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class TileJob:
    """Everything needed to compute and store one HR tile; independent of any request."""

    exam_id: str
    slide_number: int
    scale: int  # of the requested pyramid (names the cache key)
    tile: TileRef
    effective_scale: int  # model scale for this level
    lr_read: Rect  # LR level-0 pixels to read (clipped to the slide)
    pad: tuple[int, int, int, int]  # left, top, right, bottom: edge padding up to input_side
    input_side: int  # the padded LR window is input_side x input_side
    crop: Rect  # the tile inside the upscaled window, in output pixels

    @property
    def key(self) -> str:
        t = self.tile
        return hr_tile_key(self.exam_id, self.slide_number, self.scale, t.level, t.col, t.row)

    @property
    def batch_key(self) -> tuple[int, int]:
        """Tiles with equal batch keys can go through the model in one batch."""
        return self.effective_scale, self.input_side

    @property
    def output_pixels(self) -> int:
        return self.crop.width * self.crop.height

    @property
    def margin(self) -> int:
        """LR context pixels on each side of the tile's core."""
        return self.crop.x // self.effective_scale

    @property
    def block_group(self) -> tuple[str, int, int, int]:
        """Tiles of one group are one image at one scale: neighbours can share an LR window
        (``compute.blocks``)."""
        return self.exam_id, self.slide_number, self.scale, self.tile.level


def input_side(effective_scale: int, margin: int) -> int:
    return TILE_SIZE // effective_scale + 2 * margin


def plan_tile(geometry: SlideGeometry, exam_id: str, slide_number: int, scale: int, tile: TileRef,
              margin: int) -> TileJob:
    """The job for one tile, or InvalidRequest if the tile is outside the pyramid."""
    if scale not in ALLOWED_SCALES:
        raise InvalidRequest(f"scale {scale} is not one of {ALLOWED_SCALES}")
    if margin < 0:
        raise ValueError(f"context margin must be >= 0, got {margin}")
    e = geometry.effective_scale(scale, tile.level)
    cols, rows = geometry.grid(scale, tile.level)
    if tile.col >= cols or tile.row >= rows:
        raise InvalidRequest(
            f"tile ({tile.col}, {tile.row}) is outside level {tile.level} of the x{scale} pyramid "
            f"({cols}x{rows} tiles)"
        )
    level_w, level_h = geometry.level_size(scale, tile.level)
    out_x0, out_y0 = tile.col * TILE_SIZE, tile.row * TILE_SIZE
    out_w, out_h = min(TILE_SIZE, level_w - out_x0), min(TILE_SIZE, level_h - out_y0)
    # Exact: TILE_SIZE, level sizes and tile origins are all multiples of e.
    lr_x0, lr_y0, lr_w, lr_h = out_x0 // e, out_y0 // e, out_w // e, out_h // e
    side = input_side(e, margin)
    read_x0, read_y0 = max(0, lr_x0 - margin), max(0, lr_y0 - margin)
    read_x1 = min(geometry.width, lr_x0 + lr_w + margin)
    read_y1 = min(geometry.height, lr_y0 + lr_h + margin)
    pad_left, pad_top = margin - (lr_x0 - read_x0), margin - (lr_y0 - read_y0)
    pad_right = side - pad_left - (read_x1 - read_x0)
    pad_bottom = side - pad_top - (read_y1 - read_y0)
    return TileJob(
        exam_id=exam_id,
        slide_number=slide_number,
        scale=scale,
        tile=tile,
        effective_scale=e,
        lr_read=Rect(read_x0, read_y0, read_x1 - read_x0, read_y1 - read_y0),
        pad=(pad_left, pad_top, pad_right, pad_bottom),
        input_side=side,
        crop=Rect(margin * e, margin * e, out_w, out_h),
    )


def region_tiles(geometry: SlideGeometry, scale: int, region: Region) -> list[TileRef]:
    """Top-level tiles covering ``region`` (level-0 output pixels), clipped to the slide;
    InvalidRequest if the region does not overlap the slide at all."""
    width, height = geometry.width * scale, geometry.height * scale
    x1, y1 = min(region.x + region.width, width), min(region.y + region.height, height)
    if region.x >= width or region.y >= height:
        raise InvalidRequest(
            f"region at ({region.x}, {region.y}) lies outside the x{scale} image ({width}x{height} px)"
        )
    level = geometry.top_level(scale)
    return [
        TileRef(level=level, col=col, row=row)
        for row in range(region.y // TILE_SIZE, (y1 - 1) // TILE_SIZE + 1)
        for col in range(region.x // TILE_SIZE, (x1 - 1) // TILE_SIZE + 1)
    ]


def _unique(tiles: Iterable[TileRef]) -> list[TileRef]:
    seen: set[tuple[int, int, int]] = set()
    out = []
    for t in tiles:
        if (t.level, t.col, t.row) not in seen:
            seen.add((t.level, t.col, t.row))
            out.append(t)
    return out


def plan_request(request: UpscaleRequested, geometry: SlideGeometry, margin: int | Callable[[int], int],
                 max_tiles: int) -> list[TileJob]:
    """All tile jobs of ``request`` in request order (duplicates dropped). ``margin`` is the
    LR context per side, or a function of the model scale giving it.

    The whole request is refused if any tile is out of range: a client that asks for
    impossible tiles has a bug, and a partial answer would hide it.
    """
    if request.region is not None:
        tiles = region_tiles(geometry, request.scale, request.region)
    else:
        tiles = _unique(request.tiles or [])
    if len(tiles) > max_tiles:
        raise InvalidRequest(
            f"request covers {len(tiles)} tiles, more than the limit of {max_tiles} per request; "
            "split it or use whole-slide generation"
        )
    margin_for = margin if callable(margin) else (lambda _scale: margin)
    return [
        plan_tile(geometry, request.exam_id, request.slide_number, request.scale, t,
                  margin_for(geometry.effective_scale(request.scale, t.level)))
        for t in tiles
    ]
