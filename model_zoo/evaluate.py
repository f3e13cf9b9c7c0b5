"""Evaluate models against nearest, bicubic and Lanczos on the validation split.

``python -m model_zoo.evaluate [--models NAME ...] [--scales 2 4 8] [--out-dir out/eval]``
(also ``slidestream evaluate``). For every held-out image and scale ``s`` the LR input is
the clean area-downsampled HR (``degradation.box_downsample``, rounded to 8 bits); every
method upscales it by ``s`` and is compared with the original HR, ignoring an ``s``-pixel
border. Writes ``results.json``, ``results.md`` and one PNG panel per scale
(LR | bicubic | model(s) | HR) to the output directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .architecture import CascadeGenerator
from .baselines import METHODS, interpolate
from .data import default_data_dir, list_sources, source_name, split_sources
from .degradation import avif_roundtrip, box_downsample, crop_to_multiple, jpeg_roundtrip, jpegxl_roundtrip, to_uint8
from .images import load_rgb
from .inference import SuperResolver, load_model
from .metrics import delta_e, psnr, ssim
from .registry import ARCHITECTURES, DEFAULT_MODEL

BASELINES = tuple(METHODS)  # nearest, bicubic, lanczos


@dataclass
class Row:
    image: str
    scale: int
    method: str
    psnr: float
    ssim: float
    delta_e: float
    seconds: float


def load_custom(weights: Path, arch: str, device: str) -> SuperResolver:
    """An unregistered weights file (no checksum): for evaluating checkpoints before release."""
    model = CascadeGenerator(ARCHITECTURES[arch])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if "generator" in state:  # a training checkpoint
        state = state["generator"]
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return SuperResolver(model, name=f"{weights.stem}", device=device)


def stored_lr(lr: np.ndarray, lr_jpeg: int | None = None, lr_jpegxl: float | None = None,
              lr_avif: int | None = None) -> np.ndarray:
    """The LR as storage holds it: JPEG 4:4:4 at ``lr_jpeg``, JPEG XL at ``lr_jpegxl`` or AVIF
    at quality ``lr_avif`` (slide_io's lossy LR codecs), else lossless."""
    if sum(codec is not None for codec in (lr_jpeg, lr_jpegxl, lr_avif)) > 1:
        raise ValueError("choose one LR codec: JPEG, JPEG XL or AVIF")
    if lr_jpeg:
        return jpeg_roundtrip(lr, lr_jpeg, full_chroma=True)
    if lr_jpegxl:
        return jpegxl_roundtrip(lr, lr_jpegxl)
    if lr_avif is not None:
        return avif_roundtrip(lr, lr_avif)
    return lr


def codec_words(lr_jpeg: int | None = None, lr_jpegxl: float | None = None, lr_avif: int | None = None) -> str:
    if lr_jpeg:
        return f", then JPEG quality {lr_jpeg} (4:4:4, as slide_io stores LR tiles with lr_compression=jpeg)"
    if lr_jpegxl:
        return f", then JPEG XL distance {lr_jpegxl:g} (as slide_io stores LR tiles with lr_compression=jpegxl)"
    if lr_avif is not None:
        return f", then AVIF quality {lr_avif} (4:4:4, as slide_io stores LR tiles by default)"
    return ""


def evaluate_image(name: str, hr: np.ndarray, scale: int, models: dict[str, SuperResolver],
                   lr_jpeg: int | None = None, lr_jpegxl: float | None = None, lr_avif: int | None = None
                   ) -> tuple[list[Row], dict[str, np.ndarray], np.ndarray]:
    lr = stored_lr(to_uint8(box_downsample(hr, scale)), lr_jpeg, lr_jpegxl, lr_avif)
    rows, outputs = [], {}
    candidates: dict[str, object] = {m: m for m in BASELINES}
    # An x4/2 variant differs from its model at x2 only.
    candidates.update({label: m for label, m in models.items() if scale == 2 or m.x2_path == "model"})
    for label, method in candidates.items():
        started = time.perf_counter()
        out = interpolate(lr, scale, method) if isinstance(method, str) else method.upscale(lr, scale)
        seconds = time.perf_counter() - started
        outputs[label] = out
        rows.append(Row(name, scale, label, psnr(out, hr, scale), ssim(out, hr, scale),
                        delta_e(out, hr, scale), seconds))
    return rows, outputs, lr


def summarise(rows: list[Row]) -> dict[int, dict[str, dict[str, float]]]:
    table: dict[int, dict[str, dict[str, float]]] = {}
    for scale in sorted({r.scale for r in rows}):
        # x2-only variants (x4/2) have no rows at other scales: no empty (NaN) entries.
        for method in dict.fromkeys(r.method for r in rows if r.scale == scale):
            sel = [r for r in rows if r.scale == scale and r.method == method]
            table.setdefault(scale, {})[method] = {
                "psnr": float(np.mean([r.psnr for r in sel])),
                "ssim": float(np.mean([r.ssim for r in sel])),
                "delta_e": float(np.mean([r.delta_e for r in sel])),
                "seconds": float(np.mean([r.seconds for r in sel])),
                "images": len(sel),
            }
    return table


def markdown(table: dict[int, dict[str, dict[str, float]]], images: list[str], lr_jpeg: int | None = None,
             lr_jpegxl: float | None = None, lr_avif: int | None = None) -> str:
    jpeg = codec_words(lr_jpeg, lr_jpegxl, lr_avif)
    lines = [f"Validation split: {len(images)} held-out images ({', '.join(images)}).",
             f"LR = area (box) downsampling of the HR image, 8-bit{jpeg}; metrics skip a border as wide as the scale factor.",
             "", "| scale | method | PSNR dB | dPSNR vs bicubic | SSIM | dSSIM vs bicubic | dE00 | s/image |",
             "|---|---|---|---|---|---|---|---|"]
    for scale, methods in table.items():
        bic = methods["bicubic"]
        for method, m in methods.items():
            lines.append(f"| x{scale} | {method} | {m['psnr']:.2f} | {m['psnr'] - bic['psnr']:+.2f} | "
                         f"{m['ssim']:.4f} | {m['ssim'] - bic['ssim']:+.4f} | {m['delta_e']:.2f} | "
                         f"{m['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def per_source_markdown(rows: list[Row], source_of: dict[str, str]) -> str:
    """PSNR / SSIM per source collection (organ for MoNuSeg is in the image list above)."""
    methods = list(dict.fromkeys(r.method for r in rows))
    lines = ["| source | images | scale | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for source in dict.fromkeys(source_of[r.image] for r in rows):
        for scale in sorted({r.scale for r in rows}):
            sel = [r for r in rows if source_of[r.image] == source and r.scale == scale]
            cells = []
            for method in methods:
                mine = [r for r in sel if r.method == method]
                cells.append(f"{np.mean([r.psnr for r in mine]):.2f} / {np.mean([r.ssim for r in mine]):.3f}"
                             if mine else "")
            images = len({r.image for r in sel})
            lines.append(f"| {source} | {images} | x{scale} | " + " | ".join(cells) + " |")
    return "PSNR dB / SSIM per source:\n\n" + "\n".join(lines) + "\n"


def panel(lr: np.ndarray, outputs: dict[str, np.ndarray], hr: np.ndarray, scale: int, size: int,
          centre: tuple[int, int] | None = None) -> Image.Image:
    """LR (pixel-replicated) | bicubic | model(s) | HR for one ``size`` x ``size`` HR region."""
    h, w = hr.shape[:2]
    size = min(size, h, w) // scale * scale
    cy, cx = centre or (h // 2, w // 2)
    top = int(np.clip(cy - size // 2, 0, h - size)) // scale * scale
    left = int(np.clip(cx - size // 2, 0, w - size)) // scale * scale
    region = (slice(top, top + size), slice(left, left + size))
    lr_region = lr[top // scale:(top + size) // scale, left // scale:(left + size) // scale]
    columns = [(f"LR 1/{scale}", interpolate(lr_region, scale, "nearest")),
               ("bicubic", outputs["bicubic"][region])]
    columns += [(label, out[region]) for label, out in outputs.items() if label not in BASELINES]
    columns.append(("HR", hr[region]))
    label_h, gap = 16, 4
    canvas = Image.new("RGB", (len(columns) * (size + gap) - gap, size + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, pixels) in enumerate(columns):
        x = i * (size + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(pixels)), (x, label_h))
        draw.text((x + 3, 2), label if label.startswith(("LR", "HR")) else f"{label} x{scale}", fill="black")
    return canvas


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="model_zoo.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=[DEFAULT_MODEL], help="registered model names")
    p.add_argument("--weights", type=Path, action="append", default=[],
                   help="also evaluate an unregistered weights/checkpoint file: PATH (of --arch) or ARCH:PATH")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="small")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--out-dir", type=Path, default=Path("out") / "eval")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--lr-jpeg", type=int, default=None,
                   help="JPEG-compress the LR (4:4:4) at this quality, as lr_compression=jpeg stores it (q90)")
    p.add_argument("--lr-jpegxl", type=float, default=None, metavar="DISTANCE",
                   help="JPEG XL-compress the LR at this distance, as lr_compression=jpegxl stores it (1.0)")
    p.add_argument("--lr-avif", type=int, default=None, metavar="QUALITY",
                   help="AVIF-compress the LR (4:4:4) at this quality, as ingest stores it by default (70)")
    p.add_argument("--x2-via-x4", action="store_true",
                   help="also evaluate each model's x2 as its x4 output area-averaged by 2")
    p.add_argument("--panel-size", type=int, default=256, help="HR pixels per panel column")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Each model's own x2 stage; --x2-via-x4 adds the x4/2 answer beside it.
    models = {name: load_model(name, args.device, x2_path="model") for name in args.models}
    for spec in args.weights:
        arch, _, path = str(spec).rpartition(":")
        resolver = load_custom(Path(path), arch or args.arch, args.device)
        models[resolver.name] = resolver
    if args.x2_via_x4 and 2 in args.scales:
        for label, resolver in list(models.items()):
            models[f"{label} (x4/2)"] = SuperResolver(resolver.model, name=f"{label} (x4/2)",
                                                      device=args.device, x2_path="x4")
    _, val_paths = split_sources(list_sources(args.data_dir or default_data_dir()))
    val_paths = val_paths[:args.max_images]
    if not val_paths:
        print("no validation images found", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for index, path in enumerate(val_paths):
        hr = crop_to_multiple(load_rgb(path), max(args.scales))
        for scale in args.scales:
            image_rows, outputs, lr = evaluate_image(path.stem, hr, scale, models, args.lr_jpeg, args.lr_jpegxl,
                                                     args.lr_avif)
            rows += image_rows
            if index == 0:
                panel(lr, outputs, hr, scale, args.panel_size).save(args.out_dir / f"panel_x{scale}.png",
                                                                    optimize=True)
        print(f"evaluated {path.stem}", file=sys.stderr, flush=True)
    table = summarise(rows)
    names = [p.stem for p in val_paths]
    (args.out_dir / "results.json").write_text(json.dumps(
        {"images": names, "lr_jpeg": args.lr_jpeg, "lr_jpegxl": args.lr_jpegxl, "lr_avif": args.lr_avif,
         "summary": {f"x{s}": v for s, v in table.items()},
         "rows": [r.__dict__ for r in rows]}, indent=1))
    text = markdown(table, names, args.lr_jpeg, args.lr_jpegxl, args.lr_avif) + "\n" + per_source_markdown(
        rows, {p.stem: source_name(p) for p in val_paths})
    (args.out_dir / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
