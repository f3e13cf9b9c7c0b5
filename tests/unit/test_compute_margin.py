"""The compute service reads less LR context than the model declares (the registry's
``margin_cap`` per model, unless ``compute.max_margin`` overrides it): for every registered
model's weights that must not change the output. A window with the capped margin and
one with the full margin give the same core within one 8-bit level, on real H&E, at every scale."""

from __future__ import annotations

import numpy as np
import pytest

from compute.samples import downsample, load_rgb, shared_images
from core.settings import Settings
from model_zoo.inference import load_model
from model_zoo.registry import REGISTRY

pytestmark = pytest.mark.slow


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_the_capped_margin_changes_no_tile(scale: int, name: str) -> None:
    settings = Settings()
    assert settings.compute.max_margin is None  # by default each model's own measured cap applies
    cap = REGISTRY[name].margin_cap
    assert cap is not None
    model = load_model(name, x2_path="model")  # the x2 stage too: compute.x2_path may select it
    assert model.margin_cap == cap
    full = model.margin_for(scale)
    if cap >= full:
        pytest.skip(f"the cap ({cap}) does not cut the x{scale} margin ({full})")
    core = 256 // scale
    # Every core of the grid that has its full margin around it, on each image (10x, 250 px):
    # a value off by two levels is rare (one in millions), so few windows would not see it.
    images = [downsample(load_rgb(path), 4) for path in shared_images(settings.shared_data)[:3]]
    wide, narrow = [], []
    for lr in images:
        for y0 in range(full, lr.shape[0] - core - full + 1, core):
            for x0 in range(full, lr.shape[1] - core - full + 1, core):
                wide.append(lr[y0 - full: y0 + core + full, x0 - full: x0 + core + full])
                narrow.append(lr[y0 - cap: y0 + core + cap, x0 - cap: x0 + core + cap])
    worst, largest = float("inf"), 0
    for out_wide, out_narrow in zip(model.upscale_batch(wide, scale), model.upscale_batch(narrow, scale), strict=True):
        a = out_wide[full * scale: (full + core) * scale, full * scale: (full + core) * scale]
        b = out_narrow[cap * scale: (cap + core) * scale, cap * scale: (cap + core) * scale]
        assert a.shape == b.shape == (256, 256, 3)
        worst = min(worst, psnr(a, b))
        largest = max(largest, int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()))
    # At most one 8-bit level anywhere (a seam between two windows is invisible), and rarely.
    assert largest <= 1, f"capped margin {cap} px moves a value by {largest} levels at x{scale}"
    assert worst >= 65.0, f"capped margin {cap} px differs from the full {full} px: {worst:.1f} dB at x{scale}"
