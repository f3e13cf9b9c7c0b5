"""Slide input/output: read scanner formats, write and read the LR pyramidal TIFF.

Public API::

    open_slide(path, limits=...) -> SlideSource     # any supported file
    ArraySlideSource(pixels, mpp=, magnification=)  # in-memory image, same interface
    downsample_to_magnification(source, target)     # HR scan -> LrImage (area averaging)
    write_pyramid(pixels, dest, mpp=, magnification=, compression=)  # JPEG, JPEG XL, AVIF, Zstd
    transcode_pyramid(src, dest, compression=)      # re-encode a stored LR (e.g. AVIF -> Zstd)
    TiledTiff(path_or_range_reader)                 # tile (level, col, row) of a stored LR
    RangeReader / FileRangeReader                   # byte-range access (storage plugs S3 in)
    PixelLimits                                     # decompression-bomb guard
    SlideError, UnreadableSlide, UnsupportedFormat, SlideTooLarge
"""

from slide_io.array_source import ArraySlideSource
from slide_io.errors import SlideError, SlideTooLarge, UnreadableSlide, UnsupportedFormat
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.pyramid import (
    AvifSettings,
    Compression,
    LrImage,
    downsample_to_magnification,
    tiff_codec,
    transcode_pyramid,
    write_pyramid,
)
from slide_io.readers import open_slide
from slide_io.remote import FileRangeReader, RangeReader, RangeReaderIO
from slide_io.source import SlideSource
from slide_io.tiles import TiledTiff, TileLevel, read_tile

__all__ = [
    "DEFAULT_LIMITS",
    "ArraySlideSource",
    "AvifSettings",
    "Compression",
    "FileRangeReader",
    "LrImage",
    "PixelLimits",
    "RangeReader",
    "RangeReaderIO",
    "SlideError",
    "SlideSource",
    "SlideTooLarge",
    "TileLevel",
    "TiledTiff",
    "UnreadableSlide",
    "UnsupportedFormat",
    "downsample_to_magnification",
    "open_slide",
    "read_tile",
    "tiff_codec",
    "transcode_pyramid",
    "write_pyramid",
]
