"""Controlled artefacts painted onto clean H&E images, for a labelled evaluation set larger
than the handful of real artefact images we have. Each generator is deterministic given its
``rng`` and models the physics loosely: blur as optics, casts as white-balance gains, folds as
doubled optical density, bubbles as a refracting rim over slightly defocused tissue."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve

from quality.colourspace import optical_density

CASTS = {  # channel gains per unit strength: which channels lose light
    "yellow": (0.0, 0.0, -1.0),
    "blue": (-1.0, -0.5, 0.0),
    "red": (0.0, -1.0, -1.0),
    "green": (-1.0, 0.0, -1.0),
    "cyan": (-1.0, 0.0, 0.0),
    "magenta": (0.0, -1.0, 0.0),
}


def _from_od(od: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(256.0 * 10 ** (-od) - 1.0), 0, 255).astype(np.uint8)


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    out = ndi.gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def defocus_blur(rgb: np.ndarray, radius: float) -> np.ndarray:
    """Uniform disc point-spread function: geometric defocus of a circular aperture."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    kernel /= kernel.sum()
    padded = np.pad(rgb.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.stack([fftconvolve(padded[..., c], kernel, mode="valid") for c in range(3)], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def colour_cast(rgb: np.ndarray, cast: str, strength: float) -> np.ndarray:
    """Scanner white-balance error: per-channel gains 1 + strength * direction."""
    gains = 1.0 + strength * np.array(CASTS[cast], dtype=np.float32)
    return np.clip(np.rint(rgb.astype(np.float32) * gains), 0, 255).astype(np.uint8)


def _smooth_curve_mask(shape: tuple[int, int], rng: np.random.Generator, width: float) -> np.ndarray:
    """Soft (0..1) band of ``width`` px along a random quadratic Bezier crossing the image."""
    h, w = shape
    side = rng.integers(2)
    if side == 0:  # left -> right
        p0, p2 = np.array([0.0, rng.uniform(0.2, 0.8) * h]), np.array([w - 1.0, rng.uniform(0.2, 0.8) * h])
    else:  # top -> bottom
        p0, p2 = np.array([rng.uniform(0.2, 0.8) * w, 0.0]), np.array([rng.uniform(0.2, 0.8) * w, h - 1.0])
    p1 = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h])
    t = np.linspace(0, 1, 400)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    line = np.zeros(shape, bool)
    xs = np.clip(curve[:, 0].round().astype(int), 0, w - 1)
    ys = np.clip(curve[:, 1].round().astype(int), 0, h - 1)
    line[ys, xs] = True
    distance = ndi.distance_transform_edt(~line)
    return np.clip((width / 2 - distance) / 2 + 0.5, 0, 1).astype(np.float32)


def add_fold(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A band where the section lies on itself: OD of a displaced copy is added."""
    h, w = rgb.shape[:2]
    width = rng.uniform(0.06, 0.15) * min(h, w)
    band = _smooth_curve_mask((h, w), rng, width)
    od = optical_density(rgb)
    shift = (int(rng.integers(-40, 41)), int(rng.integers(-40, 41)))
    layer = np.roll(od, shift, axis=(0, 1)) * rng.uniform(0.8, 1.0)
    folded = _from_od(od + layer * band[..., None])
    return folded, band > 0.5


def add_bubble(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A round air bubble: dark grey refracting rim, slightly brighter defocused interior."""
    h, w = rgb.shape[:2]
    radius = rng.uniform(0.12, 0.3) * min(h, w)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    yy, xx = np.mgrid[:h, :w]
    distance = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    inside = distance < radius
    rim_width = rng.uniform(2.0, 4.5)
    rim = np.exp(-(((distance - radius) / rim_width) ** 2))[..., None]
    interior = gaussian_blur(rgb, 2.0).astype(np.float32) * 0.9 + 255 * 0.1
    out = np.where(inside[..., None], interior, rgb.astype(np.float32))
    grey = rng.uniform(35, 90)
    out = out * (1 - 0.9 * rim) + grey * 0.9 * rim
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), distance < radius + rim_width


def stain_variation(rgb: np.ndarray, haematoxylin: float, eosin: float) -> np.ndarray:
    """Another lab's or batch's staining: each stain's amount scaled (Ruifrok deconvolution),
    glass unchanged. Normal variation, not an artefact: QC must pass it."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    hed[..., 0] *= haematoxylin
    hed[..., 1] *= eosin
    return np.clip(np.rint(hed2rgb(hed) * 255.0), 0, 255).astype(np.uint8)


def ink_over(rgb: np.ndarray, share: float, colour: tuple[int, int, int] = (205, 25, 45)) -> np.ndarray:
    """Marker ink laid over all of the image but a corner holding ``1 - share`` of it, as when
    a region is coloured in (the ink multiplies the light: it hides, but does not erase, tissue)."""
    h, w = rgb.shape[:2]
    side = np.sqrt(max(0.0, 1.0 - share))
    covered = np.ones((h, w), bool)
    covered[: int(round(h * side)), : int(round(w * side))] = False
    tint = np.array(colour, np.float32) / 255.0
    out = rgb.astype(np.float32)
    out[covered] = out[covered] * tint * 0.35 + 255 * tint * 0.6
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
