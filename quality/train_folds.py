"""Train ``FoldNet`` on one half of the sources (for the held-out evaluation) or on all of them
(the shipped weights). Seeded and CPU-only; a run takes minutes on one core:

    python -m quality.train_folds --half 1 --out quality/models/folds-half1.pt
    python -m quality.train_folds --half 2 --out quality/models/folds-half2.pt
    python -m quality.train_folds --half all --out quality/models/folds-all.pt

Prints the file's sha256, to register in ``quality.learned_folds.WEIGHTS``. Augmentation
(rotations, flips, scale 0.65-1.5x, stain-strength jitter, random crops) keeps the network
from learning one image size or one generator's quirks; the loss counts tissue cells only.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.settings import get_settings
from quality.datasets import FOLDS, clean_images
from quality.fold_data import Sample, build_samples
from quality.fold_inputs import STRIDE
from quality.fold_net import FoldNet, save_fold_net

CROP = 128  # input cells (512 overview px): a band, its edges and the tissue around
BATCH = 16


def augment(sample: Sample, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = torch.from_numpy(sample.inputs.astype(np.float32))[None]
    t = torch.from_numpy(np.stack([sample.target, sample.weight]).astype(np.float32))[None]
    scale = float(np.exp(rng.uniform(np.log(0.65), np.log(1.5))))
    out_h = max(8, round(t.shape[2] * scale))
    out_w = max(8, round(t.shape[3] * scale))
    x = F.interpolate(x, size=(out_h * STRIDE, out_w * STRIDE), mode="bilinear", antialias=scale < 1,
                      align_corners=False)[0].numpy()
    t = F.interpolate(t, size=(out_h, out_w), mode="nearest")[0].numpy()
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, t = np.rot90(x, k, axes=(1, 2)), np.rot90(t, k, axes=(1, 2))
    if flip:
        x, t = x[:, :, ::-1], t[:, :, ::-1]
    x = x.copy()
    x[:3] *= rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=(3, 1, 1))  # staining strength
    return _crop(x, t, rng)


def _crop(x: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CROP-cell window (glass-padded where the image is smaller); for a fold, one that holds it."""
    half = CROP // STRIDE
    out_x = np.zeros((x.shape[0], CROP, CROP), np.float32)
    out_t = np.zeros((2, half, half), np.float32)
    h, w = t.shape[1:]
    for _ in range(5):
        y0, x0 = int(rng.integers(max(1, h - half + 1))), int(rng.integers(max(1, w - half + 1)))
        window = t[:, y0: y0 + half, x0: x0 + half]
        if not t[0].any() or window[0].any():
            break
    out_t[:, : window.shape[1], : window.shape[2]] = window
    piece = x[:, y0 * STRIDE: (y0 + half) * STRIDE, x0 * STRIDE: (x0 + half) * STRIDE]
    out_x[:, : piece.shape[1], : piece.shape[2]] = piece
    return out_x, out_t[0], out_t[1]


def batch(positives: list[Sample], negatives: list[Sample], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    picks = [positives[i] for i in rng.integers(len(positives), size=BATCH // 2)]
    picks += [negatives[i] for i in rng.integers(len(negatives), size=BATCH - BATCH // 2)]
    xs, ts, ws = zip(*(augment(s, rng) for s in picks), strict=True)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ws))


def train(samples: list[Sample], steps: int, seed: int, log_every: int = 100) -> FoldNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    positives = [s for s in samples if s.positive]
    negatives = [s for s in samples if not s.positive]
    model = FoldNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    started, running = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        x, target, weight = batch(positives, negatives, rng)
        loss = (F.binary_cross_entropy_with_logits(model(x), target, reduction="none") * weight).sum()
        loss = loss / weight.sum().clamp(min=1.0)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running += float(loss)
        if step % log_every == 0:
            print(f"  step {step}/{steps}: loss {running / log_every:.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            running = 0.0
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half", choices=["1", "2", "all"], required=True, help="sources to train on (datasets.FOLDS)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=get_settings().shared_data)
    parser.add_argument("--cache", type=Path, help="keep (or reuse) the training samples of all images in this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    sources = set(FOLDS[0] + FOLDS[1]) if args.half == "all" else set(FOLDS[int(args.half) - 1])
    started = time.perf_counter()
    samples = [s for s in build_samples(clean_images(args.data), args.seed, args.cache) if s.source in sources]
    print(f"{len(samples)} samples ({sum(s.positive for s in samples)} folds) from {sorted(sources)} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    model = train(samples, args.steps, args.seed)
    digest = save_fold_net(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), sha256 {digest}, "
          f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
