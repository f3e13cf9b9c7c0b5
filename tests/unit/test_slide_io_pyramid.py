"""LR pyramid writing, single-tile reads (local and through a RangeReader), HR -> LR."""

from __future__ import annotations

import io

import numpy as np
import openslide
import pytest
import tifffile

from core.settings import get_settings
from slide_io import (
    ArraySlideSource,
    AvifSettings,
    Compression,
    FileRangeReader,
    TiledTiff,
    UnreadableSlide,
    UnsupportedFormat,
    downsample_to_magnification,
    open_slide,
    transcode_pyramid,
    write_pyramid,
)
from slide_io.tiles import AVIF_COMPRESSION_TAG

DATA = get_settings().shared_data
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


@pytest.fixture(scope="module")
def he_mosaic() -> np.ndarray:
    """A 1500 x 1000 px H&E image made of real MoNuSeg tissue (odd-sized levels on purpose)."""
    a = tifffile.imread(DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif")[:, :, :3]
    b = tifffile.imread(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")[:, :, :3]
    return np.concatenate([a, b[:, :500]], axis=1)


class CountingReader:
    """FileRangeReader that records every range requested (what S3 would be asked for)."""

    def __init__(self, path) -> None:
        self._inner = FileRangeReader(path)
        self.requests: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def name(self) -> str:
        return self._inner.name

    def read_range(self, offset: int, length: int) -> bytes:
        self.requests.append((offset, length))
        return self._inner.read_range(offset, length)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return 10 * np.log10(255**2 / mse)


def test_lossless_pyramid_tiles_equal_the_source_region(he_mosaic, tmp_path) -> None:
    path = tmp_path / "lr.tif"
    write_pyramid(he_mosaic, path, mpp=2.0, magnification=5.0, compression=Compression.ZSTD)
    with TiledTiff(path) as tiff:
        assert [(lv.width, lv.height) for lv in tiff.levels] == [(1500, 1000), (750, 500), (375, 250), (188, 125)]
        assert tiff.mpp == 2.0 and tiff.magnification == 5.0
        assert np.array_equal(tiff.read_tile(0, 2, 1), he_mosaic[256:512, 512:768])
        edge = tiff.read_tile(0, 5, 3)  # cropped to the image: 1500-1280 by 1000-768
        assert np.array_equal(edge, he_mosaic[768:1000, 1280:1500])
        assert np.array_equal(tiff.read_region(0, 100, 200, 700, 300), he_mosaic[200:500, 100:800])
        level1 = tiff.read_tile(1, 1, 0).astype(float)
    expected = he_mosaic[0:512, 512:1024].reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(level1 - expected).max() <= 0.5  # exact 2x area average, rounded


def test_jpeg_pyramid_is_close_to_the_source_and_much_smaller(he_mosaic, tmp_path) -> None:
    jpeg, zstd = tmp_path / "jpeg.tif", tmp_path / "zstd.tif"
    write_pyramid(he_mosaic, jpeg, mpp=2.0, magnification=5.0)
    write_pyramid(he_mosaic, zstd, mpp=2.0, magnification=5.0, compression="zstd")
    with TiledTiff(jpeg) as tiff:
        assert tiff.metadata["compression"] == "jpeg"
        assert psnr(tiff.read_region(0, 0, 0, 1500, 1000), he_mosaic) > 33
        assert psnr(tiff.read_tile(0, 3, 2), he_mosaic[512:768, 768:1024]) > 33
    assert jpeg.stat().st_size < zstd.stat().st_size / 2


def test_jpegxl_pyramid_reads_back_by_ranged_tiles_and_is_smaller_than_jpeg(he_mosaic, tmp_path) -> None:
    jpeg, jxl = tmp_path / "jpeg.tif", tmp_path / "jxl.tif"
    write_pyramid(he_mosaic, jpeg, mpp=2.0, magnification=5.0)
    write_pyramid(he_mosaic, jxl, mpp=2.0, magnification=5.0, compression=Compression.JPEGXL)
    with TiledTiff(CountingReader(jxl)) as tiff:
        assert tiff.metadata["compression"] == "jpegxl" and tiff.metadata["jpegxl_distance"] == 1.0
        assert psnr(tiff.read_tile(0, 3, 2), he_mosaic[512:768, 768:1024]) > 33
        assert psnr(tiff.read_region(0, 0, 0, 1500, 1000), he_mosaic) > 33
    assert jxl.stat().st_size < jpeg.stat().st_size
    with pytest.raises(ValueError, match="distance"):
        write_pyramid(he_mosaic, tmp_path / "bad.tif", mpp=2.0, magnification=5.0,
                      compression=Compression.JPEGXL, jpegxl_distance=0.0)


def test_avif_pyramid_reads_back_by_ranged_tiles_and_is_smaller_than_jpegxl(he_mosaic, tmp_path) -> None:
    jxl, avif = tmp_path / "jxl.tif", tmp_path / "avif.tif"
    write_pyramid(he_mosaic, jxl, mpp=2.0, magnification=5.0, compression=Compression.JPEGXL)
    write_pyramid(he_mosaic, avif, mpp=2.0, magnification=5.0, compression=Compression.AVIF)
    with tifffile.TiffFile(avif) as tif:  # every level carries the private AVIF value
        assert {page.compression for page in tif.pages} == {AVIF_COMPRESSION_TAG}
    reader = CountingReader(avif)
    with TiledTiff(reader) as tiff:
        assert tiff.metadata["compression"] == "avif"
        assert (tiff.metadata["avif_quality"], tiff.metadata["avif_speed"]) == (AvifSettings().quality,
                                                                              AvifSettings().speed)
        assert [(lv.width, lv.height) for lv in tiff.levels] == [(1500, 1000), (750, 500), (375, 250), (188, 125)]
        reader.requests.clear()
        tile = tiff.read_tile(0, 3, 2)
        assert reader.requests == [tiff.tile_byte_range(0, 3, 2)]  # one ranged read per tile
        assert psnr(tile, he_mosaic[512:768, 768:1024]) > 33
        edge = tiff.read_tile(0, 5, 3)  # padded when written, cropped when read
        assert edge.shape == (232, 220, 3) and psnr(edge, he_mosaic[768:1000, 1280:1500]) > 33
        assert psnr(tiff.read_region(0, 0, 0, 1500, 1000), he_mosaic) > 33
        level1 = tiff.read_region(1, 0, 0, 750, 500).astype(float)
    halved = he_mosaic.reshape(500, 2, 750, 2, 3).mean(axis=(1, 3))
    assert psnr(level1, halved) > 33
    assert avif.stat().st_size < jxl.stat().st_size
    with open_slide(avif) as source:  # the generic reader goes through the same tile reader
        assert source.level_count == 4 and psnr(source.read_region(0, 10, 20, 300, 200),
                                                he_mosaic[20:220, 10:310]) > 33


def test_avif_pyramid_to_a_stream_equals_the_file_and_bad_settings_are_refused(he_mosaic, tmp_path) -> None:
    small = he_mosaic[:300, :400].copy()
    path = tmp_path / "a.tif"
    write_pyramid(small, path, mpp=2.0, magnification=5.0, compression="avif")
    stream = io.BytesIO()
    write_pyramid(small, stream, mpp=2.0, magnification=5.0, compression="avif")
    assert stream.getvalue() == path.read_bytes()
    with pytest.raises(ValueError, match="AVIF quality"):
        AvifSettings(quality=101)
    with pytest.raises(ValueError, match="AVIF speed"):
        AvifSettings(speed=11)


def test_corrupt_avif_tile_is_a_clear_error_naming_the_tile(he_mosaic, tmp_path) -> None:
    path = tmp_path / "a.tif"
    write_pyramid(he_mosaic[:512, :512].copy(), path, mpp=2.0, magnification=5.0, compression=Compression.AVIF)
    with TiledTiff(path) as tiff:
        offset, length = tiff.tile_byte_range(0, 1, 0)
        good = tiff.read_tile(0, 0, 0)
    data = bytearray(path.read_bytes())
    data[offset:offset + length] = bytes(length)  # zeroed: no longer an AVIF image
    path.write_bytes(bytes(data))
    with TiledTiff(path) as tiff:
        assert np.array_equal(tiff.read_tile(0, 0, 0), good)  # the other tiles still read
        with pytest.raises(UnreadableSlide, match="tile 1 of level 0 does not decode"):
            tiff.read_tile(0, 1, 0)


def test_avif_lr_transcodes_to_zstd_that_openslide_reads_with_the_same_pixels(he_mosaic, tmp_path) -> None:
    avif, zstd = tmp_path / "avif.tif", tmp_path / "zstd.tif"
    write_pyramid(he_mosaic, avif, mpp=2.0, magnification=5.0, compression=Compression.AVIF,
                  extra_metadata={"source_magnification": 20.0})
    assert transcode_pyramid(avif, zstd)["compression"] == "avif"
    with TiledTiff(avif) as a, TiledTiff(zstd) as z:
        assert np.array_equal(a.read_region(0, 0, 0, 1500, 1000), z.read_region(0, 0, 0, 1500, 1000))
        assert z.metadata["compression"] == "zstd" and z.metadata["transcoded_from"] == "avif"
        assert z.metadata["source_magnification"] == 20.0 and "avif_quality" not in z.metadata
        assert (z.mpp, z.magnification) == (2.0, 5.0)
    with openslide.OpenSlide(str(zstd)) as slide:
        assert slide.level_dimensions[0] == (1500, 1000)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(2.0)
    with pytest.raises(UnreadableSlide):  # a file our reader cannot open is refused, not copied
        transcode_pyramid(_not_a_tiff(tmp_path), tmp_path / "x.tif")


def _not_a_tiff(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_bytes(b"not a tiff at all" * 10)
    return path


def test_written_pyramid_is_readable_by_openslide_and_open_slide(he_mosaic, tmp_path) -> None:
    path = tmp_path / "lr.tif"
    write_pyramid(he_mosaic, path, mpp=2.0, magnification=5.0, compression="zstd")
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_dimensions == ((1500, 1000), (750, 500), (375, 250), (188, 125))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(2.0)
    with open_slide(path) as source:
        assert source.magnification == 5.0 and source.level_count == 4
        assert np.array_equal(source.read_region(0, 10, 20, 30, 40), he_mosaic[20:60, 10:40])


def test_range_reader_fetches_exactly_the_tile_bytes(he_mosaic, tmp_path) -> None:
    path = tmp_path / "lr.tif"
    write_pyramid(he_mosaic, path, mpp=2.0, magnification=5.0)
    reader = CountingReader(path)
    with TiledTiff(reader) as tiff:
        header_bytes = sum(length for _, length in reader.requests)
        reader.requests.clear()
        tile = tiff.read_tile(0, 4, 2)
        assert reader.requests == [tiff.tile_byte_range(0, 4, 2)]
        with TiledTiff(path) as local:
            assert np.array_equal(tile, local.read_tile(0, 4, 2))
    assert header_bytes + reader.requests[0][1] < path.stat().st_size / 2


def test_hr_scan_is_area_averaged_down_to_the_lr_magnification() -> None:
    with open_slide(DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs") as hr:  # 20x
        lr = downsample_to_magnification(hr, 10.0)
        full = hr.read_level(0).astype(float)
    assert lr.pixels.shape == (1484, 1110, 3)  # 2967 x 2220 halved, rounded
    assert lr.magnification == 10.0 and lr.mpp == pytest.approx(0.998)
    assert lr.hr_cache_candidate
    expected = full[:2966].reshape(1483, 2, 1110, 2, 3).mean(axis=(1, 3))
    assert np.abs(lr.pixels[:1483].astype(float) - expected).max() <= 0.5


def test_scan_already_at_lr_magnification_is_kept_as_is() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    lr = downsample_to_magnification(ArraySlideSource(pixels, magnification=5.0), 5.0)
    assert np.array_equal(lr.pixels, pixels) and not lr.hr_cache_candidate


def test_downsampling_uses_a_pyramid_level_when_one_matches() -> None:
    with open_slide(DATA / "wsi_formats/hamamatsu_ndpi/test3-TRITC_2_560.ndpi") as hr:  # 40x
        lr = downsample_to_magnification(hr, 5.0)
        assert np.array_equal(lr.pixels, hr.read_level(3))  # level 3 is exactly 8x


def test_scan_without_magnification_needs_it_stated() -> None:
    with open_slide(DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif") as hr:
        with pytest.raises(UnsupportedFormat, match="source_magnification"):
            downsample_to_magnification(hr, 5.0)
        lr = downsample_to_magnification(hr, 5.0, source_magnification=40.0)
    assert lr.pixels.shape == (125, 125, 3) and lr.downsample == 8
