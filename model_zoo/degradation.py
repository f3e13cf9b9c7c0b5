"""HR -> LR degradation: how a low-magnification image is made from a high-magnification one.

The core operation is **area (box) downsampling**: each LR pixel is the mean of the
``factor x factor`` HR pixels it covers, the way a low-magnification optic and sensor
integrate light over a larger field per pixel, and the way slidestream's own LR
storage is produced (mean pooling of 8-bit sRGB code values). The result is rounded
to uint8 because stored LR images are 8-bit.

Optional mild extras, off by default and enabled by training as augmentation only:
Gaussian blur before pooling (defocus, optics PSF), Gaussian sensor noise and JPEG
re-encoding of the LR image (lossy storage). Evaluation always uses the clean
pooling so figures are reproducible.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean-pool an (H, W, C) image by ``factor``; H and W must be multiples of it.

    Returns float32 in the input's value range (no rounding).
    """
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    h, w = image.shape[:2]
    if h % factor or w % factor:
        raise ValueError(f"image {h}x{w} is not a multiple of the factor {factor}")
    if factor == 1:
        return image.astype(np.float32, copy=True)
    if image.dtype == np.uint8:
        return _box_sum_uint8(image, factor).astype(np.float32) / np.float32(factor * factor)
    pixels = image.astype(np.float32, copy=False)
    return pixels.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def _box_sum_uint8(image: np.ndarray, factor: int) -> np.ndarray:
    """Integer block sums, rows then columns (contiguous reads: ~10x faster than a float
    mean over both axes at x8). The sums are exact, so dividing them in float32 gives the
    float mean bit for bit; uint16 holds 255 * factor**2 up to factor 16."""
    h, w = image.shape[:2]
    acc = np.uint16 if factor <= 16 else np.uint32
    rows = image.reshape(h // factor, factor, w, -1).sum(axis=1, dtype=acc)
    return rows.reshape(h // factor, w // factor, factor, -1).sum(axis=2, dtype=acc)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def crop_to_multiple(image: np.ndarray, factor: int) -> np.ndarray:
    """Centre-crop H and W down to multiples of ``factor``."""
    h, w = image.shape[:2]
    hh, ww = h - h % factor, w - w % factor
    if hh == 0 or ww == 0:
        raise ValueError(f"image {h}x{w} is smaller than the factor {factor}")
    top, left = (h - hh) // 2, (w - ww) // 2
    return image[top:top + hh, left:left + ww]


@dataclass(frozen=True)
class DegradationConfig:
    """Probabilities and ranges of the optional mild degradations (training augmentation)."""

    blur_prob: float = 0.0
    blur_sigma_lr: tuple[float, float] = (0.2, 0.5)  # in LR pixels; scaled by the factor on HR
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (0.5, 2.0)  # 8-bit code values
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (80, 95)

    @classmethod
    def mild(cls) -> DegradationConfig:
        """The training default for shipped weights: each extra on a fifth of the crops."""
        return cls(blur_prob=0.2, noise_prob=0.2, jpeg_prob=0.2)


def degrade(hr: np.ndarray, factor: int, cfg: DegradationConfig | None = None,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Make the uint8 LR image of an (H, W, 3) uint8 HR image."""
    cfg = cfg or DegradationConfig()
    rng = rng or np.random.default_rng(0)
    source = hr.astype(np.float32)
    if cfg.blur_prob and rng.random() < cfg.blur_prob:
        sigma = rng.uniform(*cfg.blur_sigma_lr) * factor
        source = gaussian_filter(source, sigma=(sigma, sigma, 0), mode="reflect")
    lr = box_downsample(source, factor)
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        lr = lr + rng.normal(0.0, rng.uniform(*cfg.noise_sigma), size=lr.shape).astype(np.float32)
    lr8 = to_uint8(lr)
    if cfg.jpeg_prob and rng.random() < cfg.jpeg_prob:
        lr8 = jpeg_roundtrip(lr8, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return lr8


def jpeg_roundtrip(image: np.ndarray, quality: int, full_chroma: bool = False) -> np.ndarray:
    """Encode and decode as JPEG; ``full_chroma`` keeps 4:4:4 as slide_io stores LR tiles,
    otherwise the common 4:2:0 of scanners and web images (training's harsher case)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0 if full_chroma else 2)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def jpegxl_roundtrip(image: np.ndarray, distance: float) -> np.ndarray:
    """Encode and decode as JPEG XL at ``distance`` (effort 7), as slide_io stores LR tiles
    with lr_compression=jpegxl."""
    import imagecodecs  # optional at import time: only evaluation and benches need it

    return np.asarray(imagecodecs.jpegxl_decode(imagecodecs.jpegxl_encode(image, distance=distance, effort=7)))


def avif_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as AVIF at ``quality`` with slide_io's own tile settings (4:4:4, the
    speed ingest uses): the LR as storage holds it by default."""
    import imagecodecs  # optional at import time: only evaluation and benches need it

    from slide_io.pyramid import AvifSettings

    return np.asarray(imagecodecs.avif_decode(AvifSettings(quality=quality).encode(image)))[..., :3]
