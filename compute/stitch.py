"""Stitch HR tiles into one pyramidal HR TIFF without holding the slide in memory.

Level 0 is streamed to tifffile tile row by tile row as the tiles are fetched; while a row
goes by, its 2x reduction is written into a memory-mapped level 1 on disk. Each further
level is reduced from the previous memory map in bands. So memory holds one tile row
(256 px x width) at a time; disk holds the lower levels (a third of level 0, raw) while
the file is written. Same layout as the LR slides (``slide_io.pyramid``): one IFD per
level, REDUCEDIMAGE for all but the first, 256 px tiles, so ``slide_io.TiledTiff``,
OpenSlide and viewers read it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tifffile

from schemas.layout import TILE_SIZE
from slide_io import Compression, tiff_codec
from slide_io.resample import halve

HR_METADATA_KEY = "slidestream_hr"
BAND_ROWS = 2048  # rows of a lower level reduced at once

# fetch_row(row) -> the HR tiles of tile row ``row``, left to right (edge tiles may be smaller)
FetchRow = Callable[[int], list[np.ndarray]]


def _padded(tile: np.ndarray) -> np.ndarray:
    if tile.shape[:2] == (TILE_SIZE, TILE_SIZE):
        return tile
    out = np.full((TILE_SIZE, TILE_SIZE, 3), 255, dtype=np.uint8)
    out[: tile.shape[0], : tile.shape[1]] = tile
    return out


def write_hr_pyramid(dest: Path, width: int, height: int, fetch_row: FetchRow, *, mpp: float | None,
                     magnification: float | None, compression: Compression = Compression.JPEG,
                     jpeg_quality: int = 90, metadata: dict | None = None,
                     on_row: Callable[[int, int], None] | None = None) -> list[tuple[int, int]]:
    """Write the pyramid to ``dest``; returns the (width, height) of each level."""
    cols, rows = -(-width // TILE_SIZE), -(-height // TILE_SIZE)
    codec = tiff_codec(compression, jpeg_quality=jpeg_quality, full_chroma=False)
    description = json.dumps({HR_METADATA_KEY: 1, "mpp": mpp, "magnification": magnification,
                              "tile_size": TILE_SIZE, "compression": Compression(compression).value,
                              **(metadata or {})})
    sizes = [(width, height)]
    while max(sizes[-1]) > TILE_SIZE:
        w, h = sizes[-1]
        sizes.append((-(-w // 2), -(-h // 2)))
    raw = sum(w * h * 3 for w, h in sizes)

    def resolution(level_width: int) -> dict:
        if not mpp:
            return {}
        per_cm = 1e4 / (mpp * width / level_width)
        return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}

    with tempfile.TemporaryDirectory(prefix="hr-pyramid-", dir=dest.parent) as tmp:
        maps = [np.lib.format.open_memmap(Path(tmp) / f"level{i}.npy", mode="w+", dtype=np.uint8,
                                          shape=(h, w, 3)) for i, (w, h) in enumerate(sizes) if i > 0]

        def level0_tiles() -> Iterator[np.ndarray]:
            for row in range(rows):
                tiles = fetch_row(row)
                if len(tiles) != cols:
                    raise ValueError(f"tile row {row} has {len(tiles)} tiles, expected {cols}")
                band_h = min(TILE_SIZE, height - row * TILE_SIZE)
                if maps:
                    band = np.concatenate([t[:band_h] for t in tiles], axis=1)[:, :width]
                    reduced = halve(band)
                    y0 = row * TILE_SIZE // 2
                    maps[0][y0 : y0 + reduced.shape[0]] = reduced[: maps[0].shape[0] - y0]
                if on_row is not None:  # before yielding: tifffile stops pulling after the last tile
                    on_row(row + 1, rows)
                yield from (_padded(t) for t in tiles)

        with tifffile.TiffWriter(dest, bigtiff=raw > 2**32 - 2**27) as writer:
            writer.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                         tile=(TILE_SIZE, TILE_SIZE), description=description, software="slidestream",
                         metadata=None, **resolution(width), **codec)
            for index, level in enumerate(maps):
                if index + 1 < len(maps):
                    _reduce_into(level, maps[index + 1])
                writer.write(level, photometric="rgb", tile=(TILE_SIZE, TILE_SIZE), subfiletype=1,
                             metadata=None, **resolution(level.shape[1]), **codec)
                level.flush()
        maps.clear()
    return sizes


def _reduce_into(source: np.ndarray, target: np.ndarray) -> None:
    """target = halve(source), band by band (even band heights keep the 2x grid aligned)."""
    for y in range(0, source.shape[0], BAND_ROWS):
        reduced = halve(np.asarray(source[y : y + BAND_ROWS]))
        target[y // 2 : y // 2 + reduced.shape[0]] = reduced[: target.shape[0] - y // 2]
