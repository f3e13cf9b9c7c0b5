"""Write LR slides as tiled pyramidal TIFF, and build the LR from a higher-magnification scan.

Layout (read by tifffile as one series with ``levels``, by OpenSlide as ``generic-tiff``):
level 0 in the first IFD, each further level a top-level IFD marked REDUCEDIMAGE
(NewSubfileType=1), each half the size of the previous (area-averaged), until the level fits
in one tile. Tiles are 256 x 256: the Deep Zoom/OpenSeadragon default scale, small enough that
a ranged GET for one tile fetches little beyond what is shown.

Compression (``Compression``; ``tiff_codec`` sets each codec's arguments). ``write_pyramid``'s
default is JPEG q90 4:4:4; ingest's (``settings.qc.lr_compression``) is AVIF q70:

* JPEG q90 - about 9x smaller than lossless on H&E (see slide_io/README.md for the measured
  sizes and PSNR), every tile is a self-contained baseline JPEG that any TIFF reader,
  OpenSlide and browsers decode, so a tile server can pass the bytes through. The scanners'
  own files are already JPEG (Aperio Q=30..70), so q90 adds little on top. Chroma is kept at
  full resolution: on a MoNuSeg tile 4:2:0 gave 34.0 dB against the LR pixels and 4:4:4
  37.0 dB for 40 % more bytes, and halved chroma costs the SR model ~0.7 dB at x4 because
  stain colour (eosin vs haematoxylin) is what it reconstructs from.
* JPEG XL (distance 1.0, effort 7) - 27 % fewer bytes than JPEG q90 4:4:4 for the same
  fidelity after super-resolution (docs/rate-distortion.md); decoded by tifffile through
  imagecodecs, but *not* by OpenSlide or browsers.
* AVIF (q70, 4:4:4, speed 8) - the ingest default since the study's fourth run: about 30 %
  fewer bytes than JPEG XL d1 for ~0.2 dB less after SR, and the point where stored 5x + SR
  beats every 40x codec at equal bytes. TIFF has no AVIF compression value, so each tile is a
  complete AVIF image under the private value ``tiles.AVIF_COMPRESSION_TAG``: slidestream's
  tile reader decodes it (the viewer and compute read LR tiles that way); tifffile alone,
  OpenSlide and browsers do not, so a third-party viewer cannot open the stored LR directly.
* ZSTD (+ horizontal predictor) - lossless, for sites that want the LR archive bit-exact
  (e.g. to retrain SR on stored LR). Several times larger; readable by tifffile and OpenSlide 4.

Metadata: resolution tags (pixels per centimetre) on every level, and a JSON ImageDescription
on level 0 with ``mpp``, ``magnification``, tile size and compression, which
``slide_io.tiles.TiledTiff`` reads back.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import tifffile

from slide_io.errors import UnsupportedFormat
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.resample import area_weights, halve, resample_block
from slide_io.source import MICRONS_AT_1X, SlideSource
from slide_io.tiles import AVIF_COMPRESSION_TAG, LR_METADATA_KEY, TiledTiff

TILE_SIZE = 256
CHUNK = 1024  # output pixels per side processed at once when downsampling a scan
# AVIF for LR tiles (docs/rate-distortion.md): at q70 stored 5x + SR beats every 40x codec at
# equal bytes. Speed 8 encodes as fast as JPEG XL effort 7; speed 6 gave the same fidelity after
# SR at 5x (within 0.01 dB) for 2.5x the encode time.
AVIF_QUALITY = 70
AVIF_SPEED = 8


class Compression(str, Enum):
    JPEG = "jpeg"
    JPEGXL = "jpegxl"
    AVIF = "avif"
    ZSTD = "zstd"


@dataclass(frozen=True)
class LrImage:
    """An LR slide in memory, ready for QC and ``write_pyramid``."""

    pixels: np.ndarray  # (H, W, 3) uint8
    magnification: float
    mpp: float | None
    downsample: float  # relative to the source's level 0 (1.0: the scan was already LR)

    @property
    def hr_cache_candidate(self) -> bool:
        """True when the source was a higher-magnification scan (SPEC 1: keep it as HR)."""
        return self.downsample > 1.0


@dataclass(frozen=True)
class AvifSettings:
    """AVIF tile encoding. 4:4:4 as for JPEG: stain colour is what SR reconstructs from."""

    quality: int = AVIF_QUALITY
    speed: int = AVIF_SPEED

    def __post_init__(self) -> None:
        if not 0 <= self.quality <= 100:
            raise ValueError(f"AVIF quality must be in [0, 100], got {self.quality}")
        if not 0 <= self.speed <= 10:
            raise ValueError(f"AVIF speed must be in [0, 10], got {self.speed}")

    def encode(self, tile: np.ndarray) -> bytes:
        return bytes(imagecodecs.avif_encode(tile, level=self.quality, speed=self.speed, pixelformat="444"))


def tiff_codec(compression: Compression, *, jpeg_quality: int = 90, jpegxl_distance: float = 1.0,
               full_chroma: bool = True) -> dict:
    """tifffile ``write`` arguments for one ``Compression`` (the one place codecs are set).
    AVIF has no TIFF compression value tifffile knows: ``write_pyramid`` encodes its tiles and
    hands tifffile the bytes under a stand-in value (any compressed one: tifffile then writes
    byte tiles as they are, where "none" would write a one-tile level contiguously), which it
    then replaces by ``AVIF_COMPRESSION_TAG``."""
    compression = Compression(compression)
    if compression is Compression.AVIF:
        return {"compression": "zstd"}
    if compression is Compression.JPEG:
        return {"compression": "jpeg", "compressionargs": {"level": int(jpeg_quality)},
                **({"subsampling": (1, 1)} if full_chroma else {})}
    if compression is Compression.JPEGXL:
        if not 0.0 < jpegxl_distance <= 25.0:
            raise ValueError(f"JPEG XL distance must be in (0, 25], got {jpegxl_distance}")
        # effort 7 is libjxl's default; 9 was no smaller on H&E and several times slower.
        return {"compression": "jpegxl", "compressionargs": {"distance": float(jpegxl_distance), "effort": 7}}
    return {"compression": "zstd", "compressionargs": {"level": 9}, "predictor": True}


def pyramid_levels(pixels: np.ndarray, tile_size: int = TILE_SIZE) -> list[np.ndarray]:
    levels = [pixels]
    while max(levels[-1].shape[:2]) > tile_size:
        levels.append(halve(levels[-1]))
    return levels


def write_pyramid(
    pixels: np.ndarray,
    destination: str | Path | BinaryIO,
    *,
    mpp: float | None,
    magnification: float | None,
    tile_size: int = TILE_SIZE,
    compression: Compression = Compression.JPEG,
    jpeg_quality: int = 90,
    jpegxl_distance: float = 1.0,
    avif: AvifSettings = AvifSettings(),
    extra_metadata: dict | None = None,
) -> None:
    """Write an (H, W, 3) uint8 image as a tiled pyramidal TIFF to a path or binary stream."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    if tile_size % 16:
        raise ValueError("TIFF tile size must be a multiple of 16")
    compression = Compression(compression)
    codec = tiff_codec(compression, jpeg_quality=jpeg_quality, jpegxl_distance=jpegxl_distance)
    description = {
        LR_METADATA_KEY: 1,
        "mpp": mpp,
        "magnification": magnification,
        "tile_size": tile_size,
        "compression": compression.value,
        **({"jpeg_quality": int(jpeg_quality)} if compression is Compression.JPEG else {}),
        **({"jpegxl_distance": float(jpegxl_distance)} if compression is Compression.JPEGXL else {}),
        **({"avif_quality": avif.quality, "avif_speed": avif.speed} if compression is Compression.AVIF else {}),
        **(extra_metadata or {}),
    }
    levels = pyramid_levels(pixels, tile_size)
    raw_bytes = sum(level.nbytes for level in levels)
    if compression is Compression.AVIF:
        # Tiles go in pre-encoded under a stand-in value (tiff_codec), then the private one.
        staging = io.BytesIO()
        _write_levels(staging, levels, raw_bytes, tile_size, mpp, description, codec,
                      lambda level: _avif_tiles(level, tile_size, avif))
        _mark_compression(staging, AVIF_COMPRESSION_TAG)
        _copy_out(staging, destination)
        return
    _write_levels(destination, levels, raw_bytes, tile_size, mpp, description, codec, lambda level: level)


def _write_levels(destination: str | Path | BinaryIO, levels: list[np.ndarray], raw_bytes: int,
                  tile_size: int, mpp: float | None, description: dict, codec: dict,
                  data: Callable[[np.ndarray], np.ndarray | Iterator[bytes]]) -> None:
    pixels = levels[0]
    with tifffile.TiffWriter(destination, bigtiff=raw_bytes > 2**32 - 2**27) as writer:
        for index, level in enumerate(levels):
            downsample = pixels.shape[1] / level.shape[1]
            resolution = None
            if mpp:
                per_cm = 1e4 / (mpp * downsample)
                resolution = (per_cm, per_cm)
            writer.write(
                data(level),
                shape=level.shape,
                dtype=level.dtype,
                photometric="rgb",
                tile=(tile_size, tile_size),
                subfiletype=1 if index else 0,
                resolution=resolution,
                resolutionunit="CENTIMETER" if resolution else None,
                description=json.dumps(description) if index == 0 else None,
                software="slidestream" if index == 0 else None,
                metadata=None,
                **codec,
            )


def _avif_tiles(level: np.ndarray, tile_size: int, avif: AvifSettings) -> Iterator[bytes]:
    """The level's tiles in TIFF order, each a complete AVIF image; edge tiles are padded by
    repeating the last row and column (cheaper to code than black, and cropped on reading)."""
    height, width = level.shape[:2]

    def tile(origin: tuple[int, int]) -> bytes:
        y, x = origin
        block = level[y:y + tile_size, x:x + tile_size]
        pad = ((0, tile_size - block.shape[0]), (0, tile_size - block.shape[1]), (0, 0))
        return avif.encode(np.pad(block, pad, mode="edge") if any(p[1] for p in pad) else block)

    origins = [(y, x) for y in range(0, height, tile_size) for x in range(0, width, tile_size)]
    # libavif releases the GIL: tiles encode in parallel, as tifffile does for its own codecs.
    with ThreadPoolExecutor(max_workers=min(len(origins), os.cpu_count() or 1)) as pool:
        yield from pool.map(tile, origins)


def _mark_compression(staging: io.BytesIO, tag_value: int) -> None:
    staging.seek(0)
    with tifffile.TiffFile(staging, mode="r+b") as tif:
        for page in tif.pages:
            page.tags["Compression"].overwrite(tag_value)


def _copy_out(staging: io.BytesIO, destination: str | Path | BinaryIO) -> None:
    if isinstance(destination, str | Path):
        Path(destination).write_bytes(staging.getbuffer())
    else:
        destination.write(staging.getbuffer())


# Description keys that belong to one codec's settings, dropped when a file is re-encoded.
_CODEC_KEYS = {LR_METADATA_KEY, "mpp", "magnification", "tile_size", "compression", "jpeg_quality",
               "jpegxl_distance", "avif_quality", "avif_speed"}


def transcode_pyramid(source: str | Path, destination: str | Path | BinaryIO, *,
                      compression: Compression = Compression.ZSTD, limits: PixelLimits = DEFAULT_LIMITS) -> dict:
    """Re-encode a stored LR pyramid (any codec ``TiledTiff`` reads) with another codec, keeping
    its pixel size, magnification and slidestream metadata. The exit path from the private AVIF
    value: ``zstd`` keeps the decoded pixels exactly and is read by tifffile and OpenSlide 4,
    ``jpeg`` by anything. Returns the source's metadata."""
    with TiledTiff(source, limits=limits) as tiff:
        level = tiff.levels[0]
        limits.check_image(level.width, level.height, name=tiff.name)  # decoded whole, in memory
        pixels = tiff.read_region(0, 0, 0, level.width, level.height)
        metadata, mpp, magnification = dict(tiff.metadata), tiff.mpp, tiff.magnification
    extra = {key: value for key, value in metadata.items() if key not in _CODEC_KEYS}
    extra["transcoded_from"] = metadata.get("compression", "unknown")
    write_pyramid(pixels, destination, mpp=mpp, magnification=magnification, compression=compression,
                  tile_size=level.tile_width if level.tile_width % 16 == 0 else TILE_SIZE, extra_metadata=extra)
    return metadata


def downsample_to_magnification(
    source: SlideSource,
    target_magnification: float,
    *,
    source_magnification: float | None = None,
    limits: PixelLimits = DEFAULT_LIMITS,
) -> LrImage:
    """The LR slide at ``target_magnification`` from a scan, by area averaging.

    Reads the pyramid level closest above the target and reduces the rest, chunk by chunk, so a
    multi-gigapixel HR scan never has to fit in memory; only the LR result does. A scan at or
    below the target is returned unchanged (we never upsample).
    """
    magnification = source_magnification or source.effective_magnification()
    if not magnification:
        raise UnsupportedFormat(
            "the scan states neither magnification nor pixel size; pass source_magnification",
            name=source.name,
        )
    factor = magnification / target_magnification
    w0, h0 = source.dimensions
    if factor <= 1.0 + 1e-6:
        limits.check_image(w0, h0, name=source.name)
        return LrImage(source.read_level(0), magnification, source.mpp, 1.0)
    out_w, out_h = max(1, round(w0 / factor)), max(1, round(h0 / factor))
    limits.check_image(out_w, out_h, name=source.name)
    level = source.best_level_for_downsample(factor)
    level_w, level_h = source.level_dimensions[level]
    # Remaining reduction on that level, the same on both axes so the LR pixel stays square.
    scale_x = scale_y = factor / source.level_downsamples[level]
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    for oy in range(0, out_h, CHUNK):
        oh = min(CHUNK, out_h - oy)
        iy0, iy1 = int(np.floor(oy * scale_y)), min(level_h, int(np.ceil((oy + oh) * scale_y)))
        wy = area_weights(oy, oh, scale_y, iy0, iy1 - iy0, level_h)
        for ox in range(0, out_w, CHUNK):
            ow = min(CHUNK, out_w - ox)
            ix0, ix1 = int(np.floor(ox * scale_x)), min(level_w, int(np.ceil((ox + ow) * scale_x)))
            wx = area_weights(ox, ow, scale_x, ix0, ix1 - ix0, level_w)
            block = source.read_region(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
            out[oy : oy + oh, ox : ox + ow] = resample_block(block, wy, wx)
    mpp = source.mpp * factor if source.mpp else MICRONS_AT_1X / target_magnification
    return LrImage(out, target_magnification, mpp, factor)
