"""slidestream model zoo: GAN super-resolution generators, training, evaluation and inference.

Public inference API (stable; the compute service depends on it)::

    from model_zoo import load_model
    sr = load_model()                      # DEFAULT_MODEL on CPU, checksum-verified
    hr = sr.upscale(lr_rgb_uint8, scale=4) # tiled, batched, deterministic
    sr.context_margin                      # LR pixels of context for seamless tiles

Heavy modules (torch) are imported lazily so ``import model_zoo`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The closest to the scanned 40x on the held-out split (MODEL_CARD.md, "Evaluation").
DEFAULT_MODEL = "sr-cascade-small-psnr"

__all__ = ["DEFAULT_MODEL", "SuperResolver", "load_model", "available_models"]

if TYPE_CHECKING:
    from .inference import SuperResolver, load_model


def available_models() -> list[str]:
    from .registry import REGISTRY

    return sorted(REGISTRY)


def __getattr__(name: str) -> Any:
    if name in ("SuperResolver", "load_model"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'model_zoo' has no attribute {name!r}")
