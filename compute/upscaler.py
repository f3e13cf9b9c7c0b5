"""What the compute service needs from a super-resolution model, and how it gets one.

``model_zoo.load_model`` provides the GAN generator. When no trained weights are available
(a fresh checkout, or ``compute.model = "bicubic"``) the service runs on bicubic
interpolation instead: a real, deterministic upscaler with the same interface, named
``"bicubic"`` in every ``upscale.done`` so nobody mistakes it for the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import structlog

log = structlog.get_logger(__name__)

BICUBIC = "bicubic"


@runtime_checkable
class Upscaler(Protocol):
    @property
    def name(self) -> str:
        """Reported as ``model`` in ``upscale.done``."""
        ...

    @property
    def context_margin(self) -> int:
        """LR pixels of context each side of a tile needs for a seamless result."""
        ...

    def margin_for(self, scale: int) -> int:
        """Context needed at one scale (<= context_margin; smaller windows at low scales)."""
        ...

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        """Same-size uint8 RGB (H, W, 3) images -> uint8 RGB (H*scale, W*scale, 3)."""
        ...


class InterpolationUpscaler:
    """Bicubic interpolation (torch, replicate borders).

    Border handling matters: torch clamps sample indices at the image edge, which equals
    edge-replicate padding, the padding ``compute.tile_pixels`` applies at slide borders. So
    tiles with ``context_margin`` px of context reproduce the whole-image result exactly.
    """

    name = BICUBIC
    context_margin = 2  # the bicubic kernel reaches 2 input pixels each side

    def margin_for(self, scale: int) -> int:
        return self.context_margin

    def window_bytes(self, height: int, width: int, scale: int) -> int:
        """Peak bytes of one window: float32 input and output, and the rounded copy."""
        return height * width * 3 * 4 * (1 + 2 * scale * scale)

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        import torch
        from torch.nn import functional as F

        if not images:
            return []
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            out = F.interpolate(batch, scale_factor=scale, mode="bicubic", align_corners=False)
            out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        return list(out)


class ModelUpscaler:
    """Adapter over a ``model_zoo`` SuperResolver (``upscale_batch``, ``context_margin``)."""

    def __init__(self, resolver: object, name: str) -> None:
        self._resolver = resolver
        self.name = name
        self.context_margin = int(resolver.context_margin)
        cap = getattr(resolver, "margin_cap", None)  # measured per model (model_zoo registry)
        self.margin_cap: int | None = None if cap is None else int(cap)

    def margin_for(self, scale: int) -> int:
        per_scale = getattr(self._resolver, "margin_for", None)
        return int(per_scale(scale)) if per_scale is not None else self.context_margin

    def method_for(self, scale: int) -> str:
        per_scale = getattr(self._resolver, "method_for", None)
        return str(per_scale(scale)) if per_scale is not None else self.name

    def window_bytes(self, height: int, width: int, scale: int) -> int:
        per_window = getattr(self._resolver, "window_bytes", None)
        if per_window is None:
            return generic_window_bytes(height, width, scale)
        return int(per_window(height, width, scale))

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        return list(self._resolver.upscale_batch(list(images), scale))  # type: ignore[attr-defined]  # model_zoo resolver, loaded lazily


# Peak model memory per output pixel when an upscaler does not say: above what
# sr-cascade-small measures on CPU (~110 B at x8, ~180 B at x4, ~320 B at x2).
GENERIC_BYTES_PER_OUTPUT_PX = 400


def generic_window_bytes(height: int, width: int, scale: int) -> int:
    return height * width * scale * scale * GENERIC_BYTES_PER_OUTPUT_PX


def method_name(upscaler: Upscaler, scale: int) -> str:
    """What ``upscale.done`` names as the model for ``scale`` (optional ``method_for``: a
    model may answer one scale by interpolation, e.g. Lanczos at x2)."""
    per_scale = getattr(upscaler, "method_for", None)
    return str(per_scale(scale)) if per_scale is not None else upscaler.name


def window_bytes(upscaler: Upscaler, height: int, width: int, scale: int) -> int:
    """Estimated peak memory of one model pass over a padded LR window (``compute.blocks``
    caps windows with it). Optional on upscalers: the protocol does not require it."""
    per_window = getattr(upscaler, "window_bytes", None)
    if per_window is None:
        return generic_window_bytes(height, width, scale)
    return int(per_window(height, width, scale))


def load_upscaler(name: str = "default", device: str = "cpu", threads: int | None = None,
                  x2_path: str | None = None) -> Upscaler:
    """The configured model, or bicubic interpolation when no model can be loaded.
    ``x2_path`` overrides the registry's way of answering x2 (None: keep it)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if name == BICUBIC:
        return InterpolationUpscaler()
    try:
        import model_zoo

        options = {} if x2_path is None else {"x2_path": x2_path}
        resolver = model_zoo.load_model(model_zoo.DEFAULT_MODEL if name == "default" else name,
                                        device=device, **options)
    except Exception as exc:  # noqa: BLE001 - any failure to load means: no usable weights
        log.warning("compute.model_unavailable", model=name, error=f"{type(exc).__name__}: {exc}",
                    fallback=BICUBIC)
        return InterpolationUpscaler()
    model_name = str(getattr(resolver, "name", None) or (name if name != "default" else "model_zoo.default"))
    return ModelUpscaler(resolver, model_name)


def window_margin(upscaler: Upscaler, scale: int, override: int | None = None) -> int:
    """LR context read around a window: the upscaler's declared margin, capped by ``override``
    or else by its own measured ``margin_cap`` (model registry) where it has one."""
    margin = upscaler.margin_for(scale)
    cap = override if override is not None else getattr(upscaler, "margin_cap", None)
    return margin if cap is None else min(margin, cap)
