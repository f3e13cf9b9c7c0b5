"""Bad input: truncated, corrupt, unsupported and decompression-bomb files raise typed errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from core.settings import get_settings
from slide_io import (
    PixelLimits,
    SlideError,
    SlideTooLarge,
    TiledTiff,
    UnreadableSlide,
    UnsupportedFormat,
    open_slide,
    write_pyramid,
)

DATA = get_settings().shared_data
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")

SVS = DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"
PNG = DATA / "histolab_tiles/low-nuclei-score-level0.png"
DICOM = DATA / "wsi_formats/dicom_wsi/small_dicom_TCGA-XK-AAJU-01A-01-TS1.dcm"
MONUSEG = DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif"


def open_and_read(path: Path, **kwargs) -> None:
    with open_slide(path, **kwargs) as slide:
        slide.read_level(slide.level_count - 1)
        slide.read_level(0)


def truncated_copy(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def png_with_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.95, 0.9995])
def test_truncated_svs_is_unreadable(tmp_path, fraction) -> None:
    with pytest.raises(UnreadableSlide, match="truncated"):
        open_and_read(truncated_copy(SVS, tmp_path / "cut.svs", fraction))


def test_truncated_png_is_unreadable_when_decoded(tmp_path) -> None:
    with pytest.raises(UnreadableSlide, match="does not decode"):
        open_and_read(truncated_copy(PNG, tmp_path / "cut.png", 0.6))


def test_truncated_dicom_is_unreadable(tmp_path) -> None:
    with pytest.raises(UnreadableSlide):
        open_and_read(truncated_copy(DICOM, tmp_path / "cut.dcm", 0.7))


def test_truncated_lr_pyramid_is_refused_at_open(tmp_path) -> None:
    path = tmp_path / "lr.tif"
    write_pyramid(np.full((600, 600, 3), 200, np.uint8), path, mpp=2.0, magnification=5.0)
    cut = truncated_copy(path, tmp_path / "cut.tif", 0.98)
    with pytest.raises(UnreadableSlide, match="truncated"):
        TiledTiff(cut)


def test_corrupt_tile_bytes_raise_unreadable_on_read(tmp_path) -> None:
    path = tmp_path / "lr.tif"
    rng = np.random.default_rng(1)
    write_pyramid(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), path, mpp=2.0, magnification=5.0)
    with TiledTiff(path) as tiff:
        offset, length = tiff.tile_byte_range(0, 1, 1)
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = bytes(length)  # zeroed: not a JPEG stream any more
    path.write_bytes(bytes(data))
    with TiledTiff(path) as tiff:
        tiff.read_tile(0, 0, 0)  # other tiles still fine
        with pytest.raises(UnreadableSlide, match="does not decode"):
            tiff.read_tile(0, 1, 1)


@pytest.mark.parametrize(
    ("content", "suffix", "error"),
    [
        (b"", ".svs", UnreadableSlide),
        (b"\x00\x01garbage" * 100, ".svs", UnreadableSlide),  # claims to be a slide, is not
        (b"hello, this is a text file\n" * 10, ".txt", UnsupportedFormat),
        (b"PK\x03\x04" + b"\0" * 200, ".zip", UnsupportedFormat),
        (b"%PDF-1.7\n" + b"\0" * 200, ".pdf", UnsupportedFormat),
        (b"GIF89a" + b"\0" * 200, ".gif", UnsupportedFormat),
    ],
    ids=["empty", "garbage-svs", "text", "zip", "pdf", "gif"],
)
def test_corrupt_and_unsupported_files_raise_typed_errors(tmp_path, content, suffix, error) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    with pytest.raises(error):
        open_and_read(path)


def test_missing_file_is_unreadable(tmp_path) -> None:
    with pytest.raises(UnreadableSlide, match="no such file"):
        open_slide(tmp_path / "absent.svs")


def test_png_bomb_is_refused_before_decoding(tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_header(100_000, 100_000))  # 10 Gpx declared in a 100-byte file
    with pytest.raises(SlideTooLarge, match="before decoding"):
        open_slide(path)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [(3_000_000, 3_000_000, "side above"), (250_000, 200_000, "Mpx")],
    ids=["absurd-side", "absurd-pixel-count"],
)
def test_tiff_with_absurd_declared_dimensions_is_refused(tmp_path, width, height, message) -> None:
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(64, 64), photometric="rgb")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        fields = [(tags[name].valueoffset, tags[name].dtype) for name in ("ImageWidth", "ImageLength")]
    assert all(dtype == 4 for _, dtype in fields)  # LONG tags: room for the patched values
    data = bytearray(path.read_bytes())
    for (offset, _), value in zip(fields, (width, height)):
        struct.pack_into("<I", data, offset, value)  # the header now lies about the size
    path.write_bytes(bytes(data))
    with pytest.raises(SlideTooLarge, match=message):
        open_slide(path)


def test_pixel_limits_are_configurable(tmp_path) -> None:
    strict = PixelLimits(max_slide_pixels=500_000, max_image_pixels=500_000)
    with pytest.raises(SlideTooLarge, match="Mpx"):
        open_slide(MONUSEG, limits=strict)  # 1000 x 1000
    with pytest.raises(SlideTooLarge):
        open_slide(PNG, limits=PixelLimits(max_image_pixels=100_000))  # 512 x 512
    with open_slide(SVS, limits=PixelLimits(max_region_pixels=10_000)) as slide:
        with pytest.raises(SlideTooLarge, match="region"):
            slide.read_region(0, 0, 0, 200, 200)


def test_every_slide_error_names_only_the_file_not_its_directory(tmp_path) -> None:
    secret_dir = tmp_path / "patient-12345"
    secret_dir.mkdir()
    path = secret_dir / "scan.svs"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert "patient-12345" not in str(info.value) and "scan.svs" in str(info.value)
