"""Every reader on the real files of ../shared/data (one per format)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.settings import get_settings
from slide_io.dicom_reader import DicomSlideSource
from slide_io.openslide_reader import OpenSlideSource
from slide_io.pillow_reader import PillowSlideSource
from slide_io.readers import open_slide
from slide_io.tiff_reader import TiffSlideSource
from slide_io.tiles import TiledTiff

DATA = get_settings().shared_data
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")

SVS_JPEG = DATA / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"
SVS_J2K = DATA / "wsi_formats/aperio_svs/tcga-cr-7395-01a-01-ts1.svs"
DICOM = DATA / "wsi_formats/dicom_wsi/small_dicom_TCGA-XK-AAJU-01A-01-TS1.dcm"
NDPI = DATA / "wsi_formats/hamamatsu_ndpi/test3-TRITC_2_560.ndpi"
MONUSEG = DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif"
PNG_RGBA = DATA / "histolab_tiles/low-nuclei-score-level0.png"


@pytest.mark.parametrize(
    ("path", "reader", "fmt", "dims"),
    [
        (SVS_JPEG, OpenSlideSource, "aperio", (2220, 2967)),
        (SVS_J2K, OpenSlideSource, "aperio", (4443, 3567)),
        (DICOM, DicomSlideSource, "dicom", (3236, 2638)),
        (NDPI, OpenSlideSource, "hamamatsu", (3968, 4864)),
        (MONUSEG, TiffSlideSource, "tiff", (1000, 1000)),
        (PNG_RGBA, PillowSlideSource, "png", (512, 512)),
    ],
    ids=["svs-jpeg", "svs-jpeg2000", "dicom", "ndpi", "tiff", "png"],
)
def test_each_format_opens_with_its_reader_and_reads_rgb(path: Path, reader: type, fmt: str, dims: tuple) -> None:
    with open_slide(path) as slide:
        assert isinstance(slide, reader)
        assert slide.format == fmt
        assert slide.dimensions == dims
        w, h = dims
        region = slide.read_region(0, w // 2 - 64, h // 2 - 64, 128, 96)
        assert region.shape == (96, 128, 3) and region.dtype == np.uint8
        assert region.std() > 2  # real image content, not a blank fill


def test_brightfield_formats_show_stained_tissue_and_ndpi_is_dark_fluorescence() -> None:
    for path in (SVS_JPEG, SVS_J2K, DICOM, MONUSEG, PNG_RGBA):
        with open_slide(path) as slide:
            thumb = slide.thumbnail(256)
            assert thumb.mean() > 120, path.name  # bright background / stained tissue
    with open_slide(NDPI) as slide:
        assert slide.thumbnail(256).mean() < 60  # TRITC fluorescence on black


def test_resolution_metadata_is_read_where_the_file_states_it() -> None:
    with open_slide(SVS_JPEG) as slide:
        assert slide.mpp == pytest.approx(0.499)
        assert slide.magnification == 20
    with open_slide(NDPI) as slide:
        assert slide.mpp == pytest.approx(0.2282, abs=1e-4)
        assert slide.magnification == 40
        assert slide.level_count == 7
        assert slide.level_downsamples[3] == pytest.approx(8)
    with open_slide(MONUSEG) as slide:  # 72-dpi placeholder or nothing: not a pixel size
        assert slide.mpp is None and slide.effective_magnification() is None


def test_openslide_and_tifffile_decode_the_same_svs_pixels() -> None:
    with open_slide(SVS_JPEG) as slide, TiledTiff(SVS_JPEG) as tiff:
        a = slide.read_region(0, 300, 500, 400, 300).astype(int)
        b = tiff.read_region(0, 300, 500, 400, 300).astype(int)
    assert np.abs(a - b).mean() < 1.0  # same JPEG tiles, possibly different IDCT rounding


def test_pyramid_levels_of_an_svs_agree_with_each_other() -> None:
    with open_slide(SVS_J2K) as slide:
        level1 = slide.read_region(1, 400, 400, 200, 200).astype(float)
        level0 = slide.read_region(0, 800, 800, 400, 400).astype(float)
    reduced = level0.reshape(200, 2, 200, 2, 3).mean(axis=(1, 3))
    assert np.abs(level1 - reduced).mean() < 8  # same place, one level down


def test_dicom_frames_are_placed_so_that_frame_seams_are_continuous() -> None:
    with open_slide(DICOM) as slide:
        pixels = slide.read_level(0).astype(float)
    seam = np.abs(pixels[:2500, 500] - pixels[:2500, 499]).mean()
    inside = np.abs(pixels[:2500, 250] - pixels[:2500, 249]).mean()
    assert seam < 3 * inside + 2  # a wrong frame order puts unrelated tissue side by side


def test_png_alpha_channel_is_dropped_not_treated_as_colour() -> None:
    expected = np.asarray(Image.open(PNG_RGBA))
    assert expected.shape[2] == 4
    with open_slide(PNG_RGBA) as slide:
        assert np.array_equal(slide.read_level(0), expected[:, :, :3])


def test_regions_beyond_the_image_read_as_white_glass() -> None:
    with open_slide(MONUSEG) as slide:
        region = slide.read_region(0, 900, 950, 200, 100)
        inside = slide.read_region(0, 900, 950, 100, 50)
    assert (region[50:, :] == 255).all() and (region[:, 100:] == 255).all()
    assert np.array_equal(region[:50, :100], inside)


def test_thumbnail_respects_the_requested_size() -> None:
    with open_slide(NDPI) as slide:
        thumb = slide.thumbnail(300)
    assert max(thumb.shape[:2]) == 300
    assert thumb.shape[0] / thumb.shape[1] == pytest.approx(4864 / 3968, rel=0.01)


# --- reader plugins ---------------------------------------------------------------------------

def _capable(file_kind: str, vendor: str | None) -> list[str]:
    from slide_io.readers import READERS
    from slide_io.source import SlideFile

    facts = SlideFile(path=Path("x"), kind=file_kind, vendor=vendor)
    return [plugin.name for plugin in READERS if plugin.can_open(facts)]


@pytest.mark.parametrize("kind,vendor,expected", [
    ("tiff", "aperio", ["openslide", "tifffile"]),
    ("tiff", "generic-tiff", ["tifffile"]),
    ("dicom", "dicom", ["openslide-dicom", "pydicom"]),
    ("dicom", None, ["pydicom"]),
    ("png", None, ["pillow"]),
    ("PDF document", None, []),
])
def test_each_file_goes_to_the_readers_that_declare_it_in_priority_order(kind, vendor, expected) -> None:
    assert _capable(kind, vendor) == expected


def test_only_a_reader_that_yields_on_failure_lets_the_next_one_try(tmp_path) -> None:
    from slide_io.array_source import ArraySlideSource
    from slide_io.errors import UnreadableSlide
    from slide_io.source import ReaderPlugin

    path = tmp_path / "scan.tif"
    path.write_bytes(b"II*\x00" + bytes(200))
    tried: list[str] = []

    def failing(name: str, yields: bool) -> ReaderPlugin:
        def refuse(file, limits):
            tried.append(name)
            raise UnreadableSlide("not for me", name=file.path)
        return ReaderPlugin(name=name, priority=1, can_open=lambda f: True, open=refuse, yields_on_failure=yields)

    fallback = ReaderPlugin(name="fallback", priority=2, can_open=lambda f: f.kind == "tiff",
                            open=lambda f, limits: ArraySlideSource(np.zeros((4, 4, 3), np.uint8), name=f.path.name))
    assert isinstance(open_slide(path, readers=(failing("strict", True), fallback)), ArraySlideSource)
    with pytest.raises(UnreadableSlide, match="not for me"):
        open_slide(path, readers=(failing("final", False), fallback))
    assert tried == ["strict", "final"]
