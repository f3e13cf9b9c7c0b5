"""Throughput and cost table: ``python -m model_zoo.bench [--threads 2] [--lr-size 256]``.

For each model size and scale: parameters, fp16 weights size, convolution FLOPs per
output pixel (torch.utils.flop_counter; multiply + add = 2) and output megapixels per
second through the full public path (``SuperResolver.upscale``: uint8 in, tiling,
uint8 out) on CPU with the given threads, and on CUDA when available. On a shared
machine the best of several runs is the closest to the dedicated-hardware figure. Speed does not
depend on the weights, so sizes without shipped weights are timed with random ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .architecture import CascadeGenerator, count_parameters
from .inference import SuperResolver
from .registry import ARCHITECTURES, DEFAULT_MODEL, REGISTRY


def flops_per_output_pixel(model: CascadeGenerator, scale: int, size: int = 64) -> float:
    x = torch.rand(1, 3, size, size, device=next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x, scale)
    return counter.get_total_flops() / (size * scale) ** 2


def output_mpx_per_second(resolver: SuperResolver, scale: int, lr_size: int, repeats: int
                          ) -> tuple[float, float]:
    """(best, median) output Mpx/s over ``repeats`` timed runs."""
    image = np.random.default_rng(0).integers(0, 256, (lr_size, lr_size, 3), dtype=np.uint8)
    resolver.upscale(image, scale)  # warm-up: allocator, oneDNN kernels, cuDNN autotune
    times = []
    for _ in range(repeats):
        if resolver.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        resolver.upscale(image, scale)
        if resolver.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    mpx = (lr_size * scale) ** 2 / 1e6
    return mpx / min(times), mpx / statistics.median(times)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: printed with every table (a shared machine)."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def model_label(arch: str) -> str:
    names = [s.name for s in REGISTRY.values() if s.architecture == arch]
    default = " (default)" if REGISTRY[DEFAULT_MODEL].architecture == arch else ""
    return f"{arch}{default}" + (f" [{', '.join(names)}]" if names else " [no weights shipped]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="model_zoo.bench", description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["small", "large"], choices=sorted(ARCHITECTURES))
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr-size", type=int, default=256, help="LR input side (a 5x viewer tile)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--gpu", choices=("auto", "yes", "no", "only"), default="auto",
                   help="only: skip the CPU columns (a GPU machine's CPUs are not the deployment's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model on the GPU")
    p.add_argument("--onnx", action="store_true",
                   help="only: the default model through ONNX Runtime vs PyTorch on CPU (model_zoo/onnx_cpu.py)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.onnx:
        return onnx_table(args.scales, args.lr_size, args.repeats, args.threads)
    devices = [] if args.gpu == "only" else ["cpu"]
    if args.gpu in ("yes", "only") or (args.gpu == "auto" and torch.cuda.is_available()):
        devices.append("cuda")
    header = ["model", "params", "fp16 MB", "scale", "kFLOP/out px"]
    for d in devices:
        label = f"CPU {args.threads} thr" if d == "cpu" else f"GPU bf16{' compiled' if args.compile else ''}"
        header += [f"{label} Mpx/s best", f"{label} Mpx/s median"]
    load = load_average()
    gpu = f"; {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    print(f"LR input {args.lr_size}x{args.lr_size} uint8 -> output Mpx/s, best and median of {args.repeats} "
          f"runs; {os.cpu_count()} CPUs, load average at start {load}{gpu}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arch in args.archs:
        torch.manual_seed(0)
        model = CascadeGenerator(ARCHITECTURES[arch]).eval()
        params = count_parameters(model)
        for scale in args.scales:
            cells = [model_label(arch), f"{params / 1e6:.2f}M", f"{params * 2 / 2**20:.2f}", f"x{scale}",
                     f"{flops_per_output_pixel(model, scale) / 1e3:.1f}"]
            for device in devices:
                resolver = SuperResolver(model, device=device, compile=device == "cuda" and args.compile)
                best, median = output_mpx_per_second(resolver, scale, args.lr_size, args.repeats)
                cells += [f"{best:.2f}", f"{median:.2f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


def onnx_table(scales: list[int], lr_size: int, repeats: int, threads: int) -> int:
    from .onnx_cpu import compare
    from .registry import get_spec, load_generator

    spec = get_spec(DEFAULT_MODEL)
    model = load_generator(spec, "cpu")
    load = load_average()
    print(f"{spec.name}, raw network forward on a float (1, 3, {lr_size}, {lr_size}) input, {threads} threads, "
          f"output Mpx/s best and median of {repeats} alternating runs; load average at start {load}")
    print("| scale | PyTorch best | PyTorch median | ONNX Runtime best | ONNX Runtime median | ORT / PyTorch (median) "
          "| max abs difference |")
    print("|---|---|---|---|---|---|---|")
    for scale in scales:
        if scale not in model.scales:
            continue
        t = compare(model, scale, lr_size, repeats, threads)
        print(f"| x{scale} | {t.torch_best:.2f} | {t.torch_median:.2f} | {t.onnx_best:.2f} | {t.onnx_median:.2f} "
              f"| {t.onnx_median / t.torch_median:.2f} | {t.max_abs_diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
