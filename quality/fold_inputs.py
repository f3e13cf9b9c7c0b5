"""What the learned fold detector sees: block-averaged optical density relative to the slide's
own tissue, on a coarse grid of ``BLOCK`` overview pixels.

Relative, because a fold is "twice as dark as the tissue it lies on", not "dark": dividing by
the tissue median removes the lab's staining strength (and stain jitter in training), and the
network's receptive field supplies the local comparison (a band and both of its edges).
Channels: OD of R, G and B over the tissue median of each; the hue of the absorbance (each
channel's share of the block's OD: a second layer of the same tissue keeps it, black pigment,
red cells and ink do not); block texture (std of the mean OD inside a block, over its median);
and the block's tissue share (glass stays 0 everywhere).
"""

from __future__ import annotations

import numpy as np

from quality.colourspace import optical_density
from quality.folds import block_mean

BLOCK = 4  # overview px per input cell: nuclei are averaged out, a 30-px band keeps 7 cells
STRIDE = 2  # the network's output is this much coarser than its input
CELL = BLOCK * STRIDE  # overview px per output cell
CHANNELS = 8
MAX_RELATIVE = 6.0  # ink or a stack of folds: beyond this nothing more is learnt


def padded(rgb: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pad with glass to a multiple of ``CELL`` so input and output grids line up."""
    h, w = tissue.shape
    ph, pw = -h % CELL, -w % CELL
    if ph or pw:
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), constant_values=255)
        tissue = np.pad(tissue, ((0, ph), (0, pw)))
    return rgb, tissue


def fold_inputs(rgb: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """(CHANNELS, H / BLOCK, W / BLOCK) float32 for uint8 RGB whose sides are multiples of CELL."""
    return inputs_and_od(rgb, tissue)[0]


def inputs_and_od(rgb: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fold_inputs``, the block-mean optical density (H / BLOCK, W / BLOCK, 3) it came from and
    the input cells that are mostly tissue (H / BLOCK, W / BLOCK), for the stain test."""
    od = optical_density(rgb)
    mean_od = block_mean(od, BLOCK)  # (h, w, 3)
    grey = od.mean(axis=-1)
    texture = np.sqrt(np.maximum(block_mean(grey * grey, BLOCK) - block_mean(grey, BLOCK) ** 2, 0.0))
    share = block_mean(tissue.astype(np.float32), BLOCK)
    inside = share > 0.5
    if inside.sum() >= 4:
        reference = np.median(mean_od[inside], axis=0)
        texture_reference = float(np.median(texture[inside]))
    else:  # (almost) no tissue: nothing will be flagged, keep the numbers finite
        reference, texture_reference = np.ones(3, np.float32), 1.0
    relative = mean_od / np.maximum(reference, 1e-3)
    hue = mean_od / np.maximum(mean_od.sum(axis=-1, keepdims=True), 0.05)  # faint glass: towards 0
    texture = texture / max(texture_reference, 1e-3)
    stacked = np.concatenate([relative.transpose(2, 0, 1), hue.transpose(2, 0, 1), texture[None], share[None]])
    return np.clip(stacked, 0.0, MAX_RELATIVE).astype(np.float32), mean_od, inside


def cell_target(band: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output cell: fold (band over tissue covers half of it) and weight (tissue present)."""
    target = block_mean((band & tissue).astype(np.float32), CELL) > 0.5
    weight = block_mean(tissue.astype(np.float32), CELL) > 0.25
    return target.astype(np.float32), weight.astype(np.float32)
