"""Training crops cut on the training device, for GPUs that a CPU sampler cannot feed.

``PatchSampler`` makes each LR input on the CPU (scipy blur, PIL JPEG per crop): fine
for a 2-core run, a bottleneck in front of a GPU. Here every source and its LR
versions live in device memory, made once per image and scale:

* ``lossless``: the area-downsampled image rounded to 8 bits (what storage holds
  without a lossy codec);
* ``jpeg444-qNN``: that image through JPEG with full chroma, as slide_io stores LR
  tiles (quality 90 by default), plus neighbouring qualities;
* ``jpeg420-q85``: the harsher 4:2:0 of scanners and web images;
* ``blur``: Gaussian blur (defocus) before pooling.

A crop picks a source (by area), a variant (by weight), an LR position and one of the
eight flips/rotations; the HR crop is the same region at ``scale`` times the size, so
input and target always align. JPEG's 8x8 grid lands at a random phase in the crop,
as it does in a viewport. Random choices come from one numpy generator whose state
is checkpointed, as with ``PatchSampler``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F

from .data import Batch
from .degradation import (
    avif_roundtrip,
    box_downsample,
    crop_to_multiple,
    jpeg_roundtrip,
    jpegxl_roundtrip,
    to_uint8,
)


@dataclass(frozen=True)
class LrVariant:
    name: str
    weight: float
    jpeg_quality: int | None = None
    full_chroma: bool = True
    blur_sigma_lr: float = 0.0
    jpegxl_distance: float | None = None  # through JPEG XL at this distance (ingest's default before AVIF)
    avif_quality: int | None = None  # through AVIF at this quality, as slide_io writes it (ingest's default)



def lr_versions(hr: np.ndarray, scale: int, variants: Sequence[LrVariant]) -> list[np.ndarray]:
    """Every variant's LR image of one HR source; the area mean is computed once."""
    pooled = to_uint8(box_downsample(hr, scale))
    out = []
    for variant in variants:
        lr = pooled
        if variant.blur_sigma_lr:
            sigma = variant.blur_sigma_lr * scale
            lr = to_uint8(box_downsample(gaussian_filter(hr.astype(np.float32), sigma=(sigma, sigma, 0),
                                                         mode="reflect"), scale))
        if variant.jpeg_quality is not None:
            lr = jpeg_roundtrip(lr, variant.jpeg_quality, full_chroma=variant.full_chroma)
        if variant.jpegxl_distance is not None:
            lr = jpegxl_roundtrip(lr, variant.jpegxl_distance)
        if variant.avif_quality is not None:
            lr = avif_roundtrip(lr, variant.avif_quality)
        out.append(lr)
    return out


# The mix for shipped weights: what storage really holds (lossless or JPEG 4:4:4 q90)
# dominates; the rest keeps the model robust to other codecs and to defocus.
STORED_MIX: tuple[LrVariant, ...] = (
    LrVariant("lossless", 0.35),
    LrVariant("jpeg444-q90", 0.30, jpeg_quality=90),
    LrVariant("jpeg444-q80", 0.10, jpeg_quality=80),
    LrVariant("jpeg444-q95", 0.10, jpeg_quality=95),
    LrVariant("jpeg420-q85", 0.05, jpeg_quality=85, full_chroma=False),
    LrVariant("blur", 0.10, blur_sigma_lr=0.4),
)


# Since the rate-distortion study ingest stores LR as JPEG XL distance 1: the mix for the next
# weights puts that first and keeps the rest for robustness (``model_zoo.train --lr-mix jxl``).
STORED_JXL_MIX: tuple[LrVariant, ...] = (
    LrVariant("jpegxl-d1", 0.35, jpegxl_distance=1.0),
    LrVariant("lossless", 0.20),
    LrVariant("jpegxl-d2", 0.10, jpegxl_distance=2.0),
    LrVariant("jpeg444-q90", 0.15, jpeg_quality=90),
    LrVariant("jpeg420-q85", 0.05, jpeg_quality=85, full_chroma=False),
    LrVariant("jpegxl-d0.5", 0.05, jpegxl_distance=0.5),
    LrVariant("blur", 0.10, blur_sigma_lr=0.4),
)
# Since the study's fourth run ingest stores AVIF q70 (slide_io.pyramid): that first, its
# neighbours for sites that set another quality, and JPEG XL d1 for the slides stored before.
STORED_AVIF_MIX: tuple[LrVariant, ...] = (
    LrVariant("avif-q70", 0.35, avif_quality=70),
    LrVariant("lossless", 0.15),
    LrVariant("avif-q60", 0.10, avif_quality=60),
    LrVariant("avif-q80", 0.10, avif_quality=80),
    LrVariant("jpegxl-d1", 0.15, jpegxl_distance=1.0),
    LrVariant("jpeg444-q90", 0.05, jpeg_quality=90),
    LrVariant("blur", 0.10, blur_sigma_lr=0.4),
)
LR_MIXES = {"stored": STORED_MIX, "jxl": STORED_JXL_MIX, "avif": STORED_AVIF_MIX}


def _chw(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous().to(device)


class DeviceSampler:
    def __init__(self, images: Sequence[np.ndarray], scales: Sequence[int] = (2, 4, 8),
                 variants: Sequence[LrVariant] = STORED_MIX, device: str | torch.device = "cpu",
                 seed: int = 0, noise_prob: float = 0.1) -> None:
        if not images:
            raise ValueError("DeviceSampler needs at least one image")
        self.device = torch.device(device)
        self.variants = tuple(variants)
        self.rng = np.random.default_rng(seed)
        self.noise_prob = noise_prob
        top = max(scales)
        # Crop every source to a multiple of the largest scale so all LR grids align.
        sources = [crop_to_multiple(im, top) for im in images]
        self.hr = [_chw(im, self.device) for im in sources]
        # PIL's codec and scipy release the GIL: threads build the LR versions in parallel.
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
            made = {s: list(pool.map(lambda im, s=s: lr_versions(im, s, self.variants), sources)) for s in scales}
        self.lr = {s: [[_chw(lr, self.device) for lr in versions] for versions in made[s]] for s in scales}
        areas = np.array([im.shape[0] * im.shape[1] for im in sources], dtype=np.float64)
        self.area_weights = areas / areas.sum()
        weights = np.array([v.weight for v in self.variants], dtype=np.float64)
        self.variant_weights = weights / weights.sum()

    def _pick(self, size_hr: int) -> int:
        fitting = [i for i, im in enumerate(self.hr) if min(im.shape[1:]) >= size_hr]
        if not fitting:
            raise ValueError(f"no source image is at least {size_hr}x{size_hr} pixels")
        weights = self.area_weights[fitting] / self.area_weights[fitting].sum()
        return fitting[int(self.rng.choice(len(fitting), p=weights))]

    @staticmethod
    def _dihedral(image: torch.Tensor, k: int) -> torch.Tensor:
        if k >= 4:
            image = image.flip(-1)
        return torch.rot90(image, k % 4, dims=(-2, -1))

    def batch(self, batch_size: int, scale: int, lr_size: int) -> Batch:
        lrs, hrs = [], []
        for _ in range(batch_size):
            index = self._pick(lr_size * scale)
            variant = int(self.rng.choice(len(self.variants), p=self.variant_weights))
            lr_image = self.lr[scale][index][variant]
            top = int(self.rng.integers(0, lr_image.shape[1] - lr_size + 1))
            left = int(self.rng.integers(0, lr_image.shape[2] - lr_size + 1))
            k = int(self.rng.integers(0, 8))
            lrs.append(self._dihedral(lr_image[:, top:top + lr_size, left:left + lr_size], k))
            size = lr_size * scale
            hr = self.hr[index][:, top * scale:top * scale + size, left * scale:left * scale + size]
            hrs.append(self._dihedral(hr, k))
        lr = torch.stack(lrs).float()
        noisy = torch.from_numpy(self.rng.random(batch_size) < self.noise_prob).to(self.device)
        if bool(noisy.any()):
            sigma = float(self.rng.uniform(0.5, 2.0))
            generator = torch.Generator(self.device).manual_seed(int(self.rng.integers(2**31)))
            noise = torch.randn(lr.shape, device=self.device, generator=generator) * sigma * noisy.view(-1, 1, 1, 1)
            lr = (lr + noise).round().clamp(0, 255)
        hr = torch.stack(hrs).float() / 255.0
        targets: dict[int, torch.Tensor] = {}
        out_scale = 2
        while out_scale <= scale:
            factor = scale // out_scale
            targets[out_scale] = F.avg_pool2d(hr, factor) if factor > 1 else hr
            out_scale *= 2
        return Batch(scale, lr / 255.0, targets)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state
