"""Train a generator: ``python -m model_zoo.train [options]`` (also ``slidestream train``).

The shipped default was trained on CPU with::

    python -m model_zoo.train --arch small --pixel-steps 1100 --gan-steps 120 --threads 2 \
        --out-dir out/train/small --resume --export model_zoo/weights/sr-cascade-small.pt

(``out/train/small/phase1.pt``, the end of the pixel phase, is ``sr-cascade-small-psnr``.)

``--resume`` continues from ``<out-dir>/last.pt`` when it exists, so an interrupted
run is restarted with the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .architecture import CascadeGenerator
from .data import PatchSampler, default_data_dir, list_sources, split_sources
from .datapack import read_pack
from .degradation import DegradationConfig
from .device_sampler import LR_MIXES, DeviceSampler
from .images import load_rgb
from .registry import ARCHITECTURES, get_spec, load_generator, save_weights
from .training import StepStats, TrainConfig, Trainer
from .validation import ValidationSet


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog="model_zoo.train", description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default=defaults.arch)
    p.add_argument("--pixel-steps", type=int, default=defaults.pixel_steps)
    p.add_argument("--gan-steps", type=int, default=defaults.gan_steps)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr-size", type=int, default=defaults.lr_size, help="LR crop side in pixels")
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--degradation", choices=("mild", "clean"), default=defaults.degradation)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--val-every", type=int, default=defaults.val_every)
    p.add_argument("--ckpt-every", type=int, default=defaults.ckpt_every)
    p.add_argument("--data-dir", type=Path, default=None, help="shared data folder (default: settings)")
    p.add_argument("--data-pack", type=Path, default=None,
                   help="train on a pack written by model_zoo.datapack instead (no validation set)")
    p.add_argument("--lr-mix", choices=sorted(LR_MIXES), default="stored",
                   help="device sampler: LR codecs trained on (model_zoo.device_sampler LR_MIXES)")
    p.add_argument("--sampler", choices=("auto", "cpu", "device"), default="auto",
                   help="where crops are made: device keeps sources in GPU memory (auto: device on CUDA)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: set the step counts from the measured speed (overrides --*-steps)")
    p.add_argument("--deadline", type=float, default=None,
                   help="seconds from start after which training stops and exports whatever it has")
    p.add_argument("--gan-share", type=float, default=0.15, help="with --time-budget: share of the GAN phase")
    p.add_argument("--max-train-images", type=int, default=None, help="limit sources (smoke tests)")
    p.add_argument("--max-val-images", type=int, default=None)
    p.add_argument("--val-crop", type=int, default=384, help="HR centre crop per validation image")
    p.add_argument("--out-dir", type=Path, default=None, help="checkpoints (default out/train/<arch>)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/last.pt if present")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="fine-tune: start the generator from a registered model's weights")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps; continue later with --resume")
    p.add_argument("--export", type=Path, default=None, help="write fp16 generator weights here at the end")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(arch=args.arch, pixel_steps=args.pixel_steps, gan_steps=args.gan_steps,
                       batch_size=args.batch_size, lr_size=args.lr_size, lr=args.lr,
                       degradation=args.degradation, seed=args.seed, val_every=args.val_every,
                       ckpt_every=args.ckpt_every)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _format_scores(scores: dict[int, dict[str, float]]) -> str:
    return " ".join(f"x{s} {v['model']:.2f}dB ({v['model'] - v['bicubic']:+.2f})" for s, v in scores.items())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    deadline = time.monotonic() + args.deadline if args.deadline else None
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # three crop shapes, each tuned once
    out_dir = args.out_dir or Path("out") / "train" / cfg.arch
    checkpoint = out_dir / "last.pt"

    if args.data_pack:
        images, val_paths, where = read_pack(args.data_pack), [], args.data_pack
    else:
        where = args.data_dir or default_data_dir()
        train_paths, val_paths = split_sources(list_sources(where))
        images = [load_rgb(p) for p in train_paths]
    images = images[:args.max_train_images]
    val_paths = val_paths[:args.max_val_images]
    if not images:
        print(f"no training images found under {where}", file=sys.stderr)
        return 2
    sampler: PatchSampler | DeviceSampler
    if args.sampler == "device" or (args.sampler == "auto" and device.type == "cuda"):
        sampler = DeviceSampler(images, ARCHITECTURES[cfg.arch].scales, variants=LR_MIXES[args.lr_mix],
                                device=device, seed=cfg.seed)
    else:
        degradation = DegradationConfig.mild() if cfg.degradation == "mild" else DegradationConfig()
        sampler = PatchSampler(images, degradation=degradation, seed=cfg.seed)
    valset = (ValidationSet.from_images({p.stem: load_rgb(p) for p in val_paths}, crop=args.val_crop)
              if val_paths else None)

    trainer = Trainer(cfg, sampler, valset, device)
    if args.resume and checkpoint.is_file():
        trainer.load(checkpoint)
        print(f"resumed from {checkpoint} at step {trainer.step}", file=sys.stderr)
    else:
        if args.init_from:
            spec = get_spec(args.init_from)
            if spec.architecture != cfg.arch:
                print(f"--init-from {spec.name} is a {spec.architecture!r} model, not {cfg.arch!r}", file=sys.stderr)
                return 2
            trainer.generator.load_state_dict(load_generator(spec).state_dict())
        if args.time_budget:
            trainer.fit_to_time(args.time_budget, gan_share=args.gan_share)
    print(f"training {cfg.arch} on {device} ({type(sampler).__name__}): {len(images)} train / "
          f"{len(val_paths)} validation "
          f"images, steps {trainer.step}->{cfg.total_steps}", file=sys.stderr)

    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        progress = tqdm(total=cfg.total_steps, initial=trainer.step, mininterval=1.0 if sys.stderr.isatty() else 30.0,
                        dynamic_ncols=True)
    last_val = ""

    def report(stats: StepStats, scores: dict | None) -> None:
        nonlocal last_val
        if scores:
            last_val = _format_scores(scores)
            print(f"step {stats.step} [{stats.phase}] val {last_val}", file=sys.stderr, flush=True)
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"{stats.phase} x{stats.scale} loss {stats.loss:.4f} | {last_val}",
                                     refresh=False)

    trainer.run(checkpoint, report, max_steps=args.stop_after, deadline=deadline)
    trainer.save(checkpoint)
    if progress is not None:
        progress.close()
    summary = {"steps": trainer.step, "train_seconds": round(trainer.history.seconds, 1),
               "validations": trainer.history.validations[-2:]}
    if args.export:
        digest = save_weights(trainer.generator, args.export)
        summary.update(exported=str(args.export), sha256=digest)
        phase1 = checkpoint.with_name("phase1.pt")
        if cfg.gan_steps and phase1.is_file():  # the pixel-phase model: highest PSNR
            pixel_only = CascadeGenerator(ARCHITECTURES[cfg.arch])
            pixel_only.load_state_dict(torch.load(phase1, map_location="cpu", weights_only=False)["generator"])
            psnr_path = args.export.with_name(f"{args.export.stem}-psnr{args.export.suffix}")
            summary.update(exported_psnr=str(psnr_path), sha256_psnr=save_weights(pixel_only, psnr_path))
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
