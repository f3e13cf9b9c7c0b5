"""QC time on an LR slide of about 50 Mpx, full vs sampled mode (plus LR storage figures).

    python -m quality.bench [--repeats 2] [--keep PATH]

The slide is built from real H&E: MoNuSeg 40x tiles reduced to 5x (8x area averaging, as the
ingest does) and randomly flipped/rotated fill an elliptic section on glass, 8192 x 6144 px
(50.3 Mpx at 2 um/px), written as our LR pyramidal TIFF (JPEG q90), then
QC reads it back through ``open_slide`` exactly as the QC agent would. Times are wall-clock
seconds on this machine (median of the repeats), single process.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from core.settings import get_settings
from quality import QcConfig, run_qc
from slide_io import downsample_to_magnification, open_slide, write_pyramid

WIDTH, HEIGHT = 8192, 6144
LR_MAGNIFICATION = 5.0
LR_MPP = 2.0  # 0.25 um/px x 8


def build_slide(data: Path, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # MoNuSeg tiles are 40x (0.25 um/px); an LR slide is 5x: reduce them 8x as the ingest would.
    tiles = []
    for path in sorted((data / "monuseg2018").glob("*.tif")):
        with open_slide(path) as slide:
            tiles.append(downsample_to_magnification(slide, LR_MAGNIFICATION, source_magnification=40.0).pixels)
    step = tiles[0].shape[0]
    canvas = np.full((HEIGHT, WIDTH, 3), 242, np.uint8)  # glass
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    section = ((xx - WIDTH / 2) / (WIDTH * 0.45)) ** 2 + ((yy - HEIGHT / 2) / (HEIGHT * 0.45)) ** 2 <= 1
    for y in range(0, HEIGHT, step):
        for x in range(0, WIDTH, step):
            tile = np.rot90(tiles[rng.integers(len(tiles))], k=int(rng.integers(4)))
            if rng.integers(2):
                tile = tile[:, ::-1]
            h, w = min(step, HEIGHT - y), min(step, WIDTH - x)
            window = section[y : y + h, x : x + w]
            canvas[y : y + h, x : x + w][window] = tile[:h, :w][window]
    return canvas


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="also keep the LR TIFF here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    data = get_settings().shared_data
    reference = data / "qc_artefacts/histoqc/templates/template1.png"

    pixels = build_slide(data)
    workdir = Path(tempfile.mkdtemp(prefix="qc-bench-"))
    lr = args.keep or workdir / "lr.tif"

    print(f"LR slide: {WIDTH} x {HEIGHT} px = {WIDTH * HEIGHT / 1e6:.1f} Mpx of real H&E tiles on glass\n")
    print("| LR storage | file size | PSNR vs source | write s |")
    print("|---|---|---|---|")
    for index, (label, kwargs) in enumerate((
            ("JPEG q90 (write_pyramid's default)", {}), ("JPEG q80", {"jpeg_quality": 80}),
            ("JPEG XL d1", {"compression": "jpegxl"}), ("AVIF q70 (ingest's default)", {"compression": "avif"}),
            ("ZSTD lossless", {"compression": "zstd"}))):
        path = workdir / f"lr-{index}.tif"
        def write(path: Path = path, kwargs: dict = kwargs) -> None:
            write_pyramid(pixels, path, mpp=LR_MPP, magnification=LR_MAGNIFICATION, **kwargs)

        seconds, _ = timed(write, 1)
        with open_slide(path) as slide:
            decoded = slide.read_region(0, 2048, 2048, 2048, 2048).astype(np.float64)
        mse = ((decoded - pixels[2048:4096, 2048:4096]) ** 2).mean()
        psnr = "lossless" if mse == 0 else f"{10 * np.log10(255**2 / mse):.1f} dB"
        print(f"| {label} | {os.path.getsize(path) / 1e6:.1f} MB | {psnr} | {seconds:.1f} |")
        if label.startswith("JPEG q90"):
            os.replace(path, lr)
    print(f"\n(uncompressed RGB: {pixels.nbytes / 1e6:.0f} MB)\n")

    modes = [
        ("full", QcConfig(colour={"reference_path": reference})),
        ("sampled 10%", QcConfig(colour={"reference_path": reference}, sampling={"mode": "sampled", "fraction": 0.10})),
        ("sampled 5%", QcConfig(colour={"reference_path": reference}, sampling={"mode": "sampled", "fraction": 0.05})),
    ]
    print(f"| mode | tissue tiles | judged | QC s (median of {args.repeats}) | overview+tissue s | tiles s "
          "| detectors s | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    run_qc(lr, modes[0][1])  # warm caches (reference image, imports)
    for label, config in modes:
        seconds, report = timed(lambda c=config: run_qc(lr, c), args.repeats)
        t = report.timings
        detectors = sum(t.get(k, 0.0) for k in ("folds", "bubbles"))
        print(f"| {label} | {report.tiles_with_tissue} | {report.tiles_judged} | {seconds:.2f} | "
              f"{t['overview_and_tissue']:.2f} | {t['tiles']:.2f} | {detectors:.2f} | "
              f"{'pass' if report.passed else 'fail: ' + ', '.join(c.name for c in report.failed)} |")
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs visible, numpy {np.__version__}; "
          "QC reads the JPEG q90 LR TIFF through open_slide.")


if __name__ == "__main__":
    main()
