"""Read single tiles (or regions) of a tiled TIFF without reading the whole file.

tifffile parses the header and IFDs (through ``RangeReaderIO`` for remote objects: a few
block-sized ranged reads); then each tile is fetched with exactly one range read of its
``[offset, offset + bytecount)`` and decoded by tifffile's own codec dispatch
(``TiffPage.decode``, which also handles shared JPEG tables as in Aperio SVS); AVIF tiles, which
no TIFF compression value names, carry ``AVIF_COMPRESSION_TAG`` and are decoded here.

Stripped (untiled) TIFFs work the same way with strips as the chunks, so a region read
decodes only the strips it overlaps.
"""

from __future__ import annotations

import json
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

from slide_io.errors import SlideError, UnreadableSlide, UnsupportedFormat
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.pixels import blank, to_rgb8
from slide_io.remote import FileRangeReader, RangeReader, RangeReaderIO

LR_METADATA_KEY = "slidestream_lr"  # marks the JSON ImageDescription written by pyramid.py
# Private TIFF Compression value (>= 32768) for tiles that are each a complete AVIF image: TIFF
# has no AVIF code. Outside every value tifffile knows (50000-50002 Zstd/WebP/JPEG XL, 65000+
# EER); only slidestream's reader decodes such files.
AVIF_COMPRESSION_TAG = 60001


@dataclass(frozen=True)
class TileLevel:
    """Geometry of one pyramid level. ``downsample`` is relative to level 0."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    downsample: float

    @property
    def columns(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile_height)


class TiledTiff:
    """A (pyramidal) TIFF opened for chunk-wise access from a path or any ``RangeReader``."""

    def __init__(
        self,
        source: str | Path | RangeReader,
        *,
        limits: PixelLimits = DEFAULT_LIMITS,
        cache_tiles: int = 32,
    ) -> None:
        self._owns_reader = not isinstance(source, RangeReader)
        self._reader: RangeReader = FileRangeReader(source) if self._owns_reader else source  # type: ignore[assignment]  # a path is wrapped in a reader
        self.name = self._reader.name
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_tiles
        self._lock = threading.Lock()
        try:
            verify_ifd_chain(self._reader)
            self._tiff = tifffile.TiffFile(RangeReaderIO(self._reader), name=self.name)
            self._pages = self._level_pages()
        except SlideError:
            self.close()
            raise
        except Exception as exc:  # tifffile raises many kinds on corrupt headers
            self.close()
            raise UnreadableSlide(f"cannot parse TIFF structure ({exc})", name=self.name) from exc
        self.levels = self._describe_levels(limits)
        self._check_chunks_inside_file(limits)
        self.metadata = self._read_metadata()

    # --- public API -------------------------------------------------------------------

    @property
    def level_count(self) -> int:
        return len(self.levels)

    @property
    def mpp(self) -> float | None:
        return _positive(self.metadata.get("mpp"))

    @property
    def magnification(self) -> float | None:
        return _positive(self.metadata.get("magnification"))

    @property
    def is_tiled(self) -> bool:
        return bool(self._pages[0].is_tiled)

    def tile_byte_range(self, level: int, col: int, row: int) -> tuple[int, int]:
        """(offset, length) of one stored tile: what a ranged GET must fetch."""
        page, index = self._tile_index(level, col, row)
        return int(page.dataoffsets[index]), int(page.databytecounts[index])

    def read_tile_bytes(self, level: int, col: int, row: int) -> bytes:
        offset, length = self.tile_byte_range(level, col, row)
        return self._reader.read_range(offset, length) if length else b""

    def read_tile(self, level: int, col: int, row: int, *, crop: bool = True) -> np.ndarray:
        """Tile (col, row) of ``level`` as uint8 RGB. Edge tiles are cropped to the image
        unless ``crop`` is False (then they keep the stored, padded tile size)."""
        if not self.is_tiled:
            raise UnsupportedFormat("file is not tiled; use read_region", name=self.name)
        page, index = self._tile_index(level, col, row)
        tile = self._decode_chunk(level, page, index)
        if not crop:
            return tile
        lv = self.levels[level]
        h = min(lv.tile_height, lv.height - row * lv.tile_height)
        w = min(lv.tile_width, lv.width - col * lv.tile_width)
        return np.ascontiguousarray(tile[:h, :w])

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels [y, y+height) x [x, x+width) of ``level``; outside the image is white."""
        lv = self._level(level)
        page = self._pages[level]
        chunk_h, chunk_w = int(page.chunks[0]), int(page.chunks[1])
        chunks_across = int(page.chunked[1])
        out = blank(height, width)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, lv.width), min(y + height, lv.height)
        if x0 >= x1 or y0 >= y1:
            return out
        for row in range(y0 // chunk_h, (y1 - 1) // chunk_h + 1):
            for col in range(x0 // chunk_w, (x1 - 1) // chunk_w + 1):
                chunk = self._decode_chunk(level, page, row * chunks_across + col)
                cy, cx = row * chunk_h, col * chunk_w
                sy0, sy1 = max(y0, cy), min(y1, cy + chunk_h)
                sx0, sx1 = max(x0, cx), min(x1, cx + chunk_w)
                out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = chunk[sy0 - cy : sy1 - cy, sx0 - cx : sx1 - cx]
        return out

    def close(self) -> None:
        tiff = getattr(self, "_tiff", None)
        if tiff is not None:
            tiff.close()
        if self._owns_reader:
            self._reader.close()  # type: ignore[attr-defined]  # our FileRangeReader has close()

    def __enter__(self) -> TiledTiff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------

    def _level_pages(self) -> list[tifffile.TiffPage]:
        if not self._tiff.series:
            raise UnreadableSlide("TIFF holds no image", name=self.name)
        series = self._tiff.series[0]
        pages = [lvl.keyframe for lvl in series.levels]
        for page in pages:
            if page.planarconfig != 1 and page.samplesperpixel > 1:
                raise UnsupportedFormat("planar (separate-plane) TIFF layout is not supported", name=self.name)
            if page.imagedepth > 1:
                raise UnsupportedFormat("volumetric TIFF pages are not supported", name=self.name)
            if page.photometric not in (0, 1, 2, 6):  # MINISWHITE, MINISBLACK, RGB, YCBCR
                raise UnsupportedFormat(f"TIFF photometric {page.photometric!s} is not supported", name=self.name)
        return pages

    def _describe_levels(self, limits: PixelLimits) -> list[TileLevel]:
        levels = []
        base_w = self._pages[0].imagewidth
        for page in self._pages:
            levels.append(
                TileLevel(
                    width=int(page.imagewidth),
                    height=int(page.imagelength),
                    tile_width=int(page.chunks[1]),
                    tile_height=int(page.chunks[0]),
                    downsample=base_w / page.imagewidth,
                )
            )
        first = levels[0]
        limits.check_slide(first.width, first.height, name=self.name)
        for lv in levels:  # each chunk is decoded in one piece
            limits.check_image(lv.tile_width, lv.tile_height, name=self.name)
        return levels

    def _check_chunks_inside_file(self, limits: PixelLimits) -> None:
        size = self._reader.size
        for page in self._pages:
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            expected = int(np.prod(page.chunked))
            if offsets.size < expected:
                raise UnreadableSlide(
                    f"TIFF level {page.imagewidth}x{page.imagelength} lists {offsets.size} chunks, "
                    f"its geometry needs {expected}",
                    name=self.name,
                )
            if offsets.size and int((offsets + counts).max()) > size:
                raise UnreadableSlide(
                    "image data extends beyond the end of the file (truncated upload?)", name=self.name
                )

    def _read_metadata(self) -> dict:
        page = self._pages[0]
        meta: dict = {}
        try:
            described = json.loads(page.description or "")
            if isinstance(described, dict) and LR_METADATA_KEY in described:
                meta.update(described)
        except ValueError:
            pass
        if "mpp" not in meta:
            meta["mpp"] = _mpp_from_resolution(page)
        return meta

    def _level(self, level: int) -> TileLevel:
        if not 0 <= level < len(self.levels):
            raise IndexError(f"level {level} out of range 0..{len(self.levels) - 1}")
        return self.levels[level]

    def _tile_index(self, level: int, col: int, row: int) -> tuple[tifffile.TiffPage, int]:
        lv = self._level(level)
        if not (0 <= col < lv.columns and 0 <= row < lv.rows):
            raise IndexError(f"tile ({col}, {row}) outside level {level} grid {lv.columns}x{lv.rows}")
        return self._pages[level], row * lv.columns + col

    def _decode_chunk(self, level: int, page: tifffile.TiffPage, index: int) -> np.ndarray:
        key = (level, index)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        chunk_h, chunk_w = int(page.chunks[0]), int(page.chunks[1])
        offset, length = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if length == 0:  # sparse tile: nothing was scanned there
            tile = blank(chunk_h, chunk_w)
        else:
            data = self._reader.read_range(offset, length)
            if len(data) != length:
                raise UnreadableSlide(f"tile {index} is truncated ({len(data)} of {length} bytes)", name=self.name)
            try:
                decoded = _decode_tile(page, data, index)
            except Exception as exc:
                raise UnreadableSlide(f"tile {index} of level {level} does not decode ({exc})", name=self.name) from exc
            if decoded is None:
                raise UnreadableSlide(f"tile {index} of level {level} decoded to nothing", name=self.name)
            decoded = np.asarray(decoded).reshape(decoded.shape[-3:])
            if page.photometric == 0:  # MINISWHITE
                decoded = np.iinfo(decoded.dtype).max - decoded
            tile = blank(chunk_h, chunk_w)
            rgb = to_rgb8(decoded, name=self.name)
            tile[: rgb.shape[0], : rgb.shape[1]] = rgb[:chunk_h, :chunk_w]
        with self._lock:
            self._cache[key] = tile
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return tile


def _decode_tile(page: tifffile.TiffPage, data: bytes, index: int) -> np.ndarray | None:
    if page.compression == AVIF_COMPRESSION_TAG:
        return np.asarray(imagecodecs.avif_decode(data))
    return page.decode(data, index, jpegtables=page.jpegtables)[0]


def verify_ifd_chain(reader: RangeReader, *, max_ifds: int = 100_000) -> int:
    """Walk the top-level IFD chain and fail if any directory lies outside the file (the usual
    sign of a truncated upload; tifffile would silently drop those pages). Returns the count."""
    size = reader.size
    header = reader.read_range(0, 16)
    if len(header) < 8 or header[:2] not in (b"II", b"MM"):
        raise UnreadableSlide("not a TIFF header", name=reader.name)
    order = "<" if header[:2] == b"II" else ">"
    version = struct.unpack(order + "H", header[2:4])[0]
    if version == 42:
        offset, count_fmt, entry_size, next_fmt = struct.unpack(order + "I", header[4:8])[0], "H", 12, "I"
    elif version == 43 and len(header) >= 16:
        offset, count_fmt, entry_size, next_fmt = struct.unpack(order + "Q", header[8:16])[0], "Q", 20, "Q"
    else:
        raise UnreadableSlide(f"unknown TIFF version {version}", name=reader.name)
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    seen: set[int] = set()
    while offset:
        if offset in seen or len(seen) >= max_ifds:
            raise UnreadableSlide("TIFF directory chain loops or is absurdly long", name=reader.name)
        seen.add(offset)
        if offset + count_size > size:
            raise UnreadableSlide(
                f"TIFF directory at byte {offset} lies beyond the end of the file ({size} bytes): truncated",
                name=reader.name,
            )
        entries = struct.unpack(order + count_fmt, reader.read_range(offset, count_size))[0]
        next_at = offset + count_size + entries * entry_size
        if next_at + next_size > size:
            raise UnreadableSlide(f"TIFF directory at byte {offset} is cut off: truncated", name=reader.name)
        offset = struct.unpack(order + next_fmt, reader.read_range(next_at, next_size))[0]
    if not seen:
        raise UnreadableSlide("TIFF has no image directory", name=reader.name)
    return len(seen)


def read_tile(source: str | Path | RangeReader, level: int, col: int, row: int) -> np.ndarray:
    """One-shot helper: open, read one tile, close."""
    with TiledTiff(source) as tiff:
        return tiff.read_tile(level, col, row)


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]  # any TIFF tag value; errors caught
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _mpp_from_resolution(page: tifffile.TiffPage) -> float | None:
    """Microns per pixel from X resolution, ignoring the common 72/96 dpi placeholders."""
    tag = page.tags.get("XResolution")
    unit = page.tags.get("ResolutionUnit")
    if tag is None or unit is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den
    unit_um = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value))
    if unit_um is None or (int(unit.value) == 2 and per_unit in (72.0, 96.0, 300.0)):
        return None
    return unit_um / per_unit
