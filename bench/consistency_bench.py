"""Consistency of computed 40x with the stored LR, per 256-px tile, for each LR codec.

    python -m bench.consistency_bench [--model NAME] [--scales 8 4] [--images N]
    python -m bench consistency

The compute service flags a tile whose HR, box-downsampled back, differs from the stored LR by
more than ``compute.consistency_threshold_db`` allows (docs/viewer.md). The threshold is only
useful if normal tiles pass whatever codec storage uses: this measures the value on the 40x
MoNuSeg images, LR = area downsampling then the codec, the whole image upscaled at once and cut
into 256-px HR tiles (the service's tiles equal whole-image upscaling, compute/README.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.report import machine
from compute.consistency import consistency_db
from core.settings import get_settings
from model_zoo.degradation import avif_roundtrip, box_downsample, crop_to_multiple, jpegxl_roundtrip, to_uint8
from model_zoo.images import load_rgb
from model_zoo.inference import load_model
from model_zoo.registry import DEFAULT_MODEL
from slide_io.pyramid import AVIF_QUALITY

TILE = 256
CODECS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lossless": lambda lr: lr,
    f"AVIF q{AVIF_QUALITY} (ingest default)": lambda lr: avif_roundtrip(lr, AVIF_QUALITY),
    "JPEG XL d1": lambda lr: jpegxl_roundtrip(lr, 1.0),
}


def tile_values(hr: np.ndarray, scale: int, codec: Callable[[np.ndarray], np.ndarray],
                upscale: Callable[[np.ndarray, int], np.ndarray]) -> list[float]:
    hr = crop_to_multiple(hr, TILE)
    lr = codec(to_uint8(box_downsample(hr, scale)))
    sr = upscale(lr, scale)
    side = TILE // scale
    return [consistency_db(sr[y * scale:(y + side) * scale, x * scale:(x + side) * scale],
                           lr[y:y + side, x:x + side], scale)
            for y in range(0, lr.shape[0] - side + 1, side) for x in range(0, lr.shape[1] - side + 1, side)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.consistency_bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--scales", type=int, nargs="+", default=[8, 4])
    p.add_argument("--images", type=int, default=None, help="first N MoNuSeg images (default: all)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = get_settings()
    paths = sorted((settings.shared_data / "monuseg2018").glob("*.tif"))[:args.images]
    if not paths:
        print(f"no MoNuSeg images under {settings.shared_data}", file=sys.stderr)
        return 2
    threshold = settings.compute.consistency_threshold_db
    model = load_model(args.model, "cpu")
    images = [load_rgb(path) for path in paths]
    started = time.perf_counter()
    print(f"{len(images)} MoNuSeg 40x images, {TILE}-px HR tiles, model {args.model}, "
          f"threshold {threshold:g} dB\n")
    print(f"| LR | scale | tiles | worst dB | 5th percentile | median | below {threshold:g} dB |")
    print("|---|---|---|---|---|---|---|")
    for scale in args.scales:
        for name, codec in CODECS.items():
            values = np.array([v for hr in images for v in tile_values(hr, scale, codec, model.upscale)])
            print(f"| {name} | x{scale} | {values.size} | {values.min():.1f} | {np.percentile(values, 5):.1f} | "
                  f"{np.median(values):.1f} | {int((values < threshold).sum())} |", flush=True)
    print(f"\n{machine()}, {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
