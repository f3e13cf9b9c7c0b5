"""Helpers for tests and smoke runs: tiny configurations and random inputs (CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .architecture import CascadeGenerator, GeneratorConfig
from .registry import ARCHITECTURES

TINY = ARCHITECTURES["tiny"]


def random_generator(cfg: GeneratorConfig = TINY, seed: int = 0) -> CascadeGenerator:
    """A generator with every weight random (the real init zeroes the RGB heads, which
    would make the network a plain bilinear cascade and hide receptive-field effects)."""
    torch.manual_seed(seed)
    model = CascadeGenerator(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def random_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the previous setting.

    Tiny test networks gain nothing from a second thread, and on a shared, busy machine
    OpenMP threads waiting for each other make small ops tens of times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
