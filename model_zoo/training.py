"""The training loop: a two-phase schedule with resumable checkpoints.

Phase 1 ("pixel", the first ``pixel_steps`` steps): Charbonnier loss on every cascade
output plus the stain-colour term, Adam with warm-up and cosine decay.
Phase 2 ("gan", the next ``gan_steps``): the same pixel and colour terms, plus the
perceptual terms (random-feature CNN and discriminator feature matching) and a low-
weight adversarial term against a spectral-norm patch discriminator, at a low constant
learning rate so fidelity is kept while texture sharpens.

Each step draws one scale (x2/x4/x8, by ``scale_weights``) for the whole batch; all
cascade outputs up to that scale are supervised. Everything random (crops, scales,
degradations) comes from the sampler's generator, whose state is checkpointed, so a
resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .architecture import CascadeGenerator
from .data import Batch, PatchSampler
from .device_sampler import DeviceSampler
from .discriminator import PatchDiscriminator
from .losses import (
    RandomFeatureNet,
    charbonnier,
    discriminator_loss,
    feature_distance,
    generator_adversarial_loss,
    stain_colour_loss,
)
from .registry import ARCHITECTURES
from .validation import ValidationSet


@dataclass
class TrainConfig:
    arch: str = "small"
    pixel_steps: int = 3000
    gan_steps: int = 500
    batch_size: int = 16
    lr_size: int = 32  # LR crop side; HR crop is lr_size * scale
    scale_weights: tuple[float, ...] = (0.2, 0.4, 0.4)  # probabilities of x2, x4, x8 batches
    lr: float = 2e-3
    lr_min: float = 2e-5
    warmup_steps: int = 100
    gan_lr: float = 5e-5
    disc_lr: float = 2e-4
    disc_channels: int = 16
    gan_crop: int = 128  # adversarial/perceptual terms on a random crop this size (cost bound)
    w_colour: float = 0.05
    w_perceptual: float = 0.01
    w_feature_match: float = 0.01
    w_adversarial: float = 2e-3
    degradation: str = "mild"  # "mild" or "clean", see degradation.DegradationConfig
    seed: int = 0
    val_every: int = 250
    ckpt_every: int = 100

    @property
    def total_steps(self) -> int:
        return self.pixel_steps + self.gan_steps

    def to_dict(self) -> dict:
        data = asdict(self)
        data["scale_weights"] = list(self.scale_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["scale_weights"] = tuple(data["scale_weights"])
        return cls(**data)


@dataclass
class StepStats:
    step: int
    phase: str
    scale: int
    loss: float
    pixel: float
    disc: float | None = None


@dataclass
class History:
    validations: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    def __init__(self, cfg: TrainConfig, sampler: PatchSampler | DeviceSampler, valset: ValidationSet | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.sampler = sampler
        self.valset = valset
        torch.manual_seed(cfg.seed)
        self.generator = CascadeGenerator(ARCHITECTURES[cfg.arch]).to(self.device)
        self.discriminator = PatchDiscriminator(cfg.disc_channels).to(self.device)
        self.features = RandomFeatureNet().to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.99))
        self.step = 0
        self.history = History()
        self._autocast = self.device.type == "cuda"
        scales = self.generator.scales
        if len(cfg.scale_weights) != len(scales):
            raise ValueError(f"scale_weights needs one weight per scale {scales}, got {cfg.scale_weights}")
        self._scale_p = np.asarray(cfg.scale_weights, dtype=np.float64) / sum(cfg.scale_weights)

    # -- schedule ---------------------------------------------------------------------
    def phase_at(self, step: int) -> str:
        return "pixel" if step < self.cfg.pixel_steps else "gan"

    def learning_rate(self, step: int) -> float:
        cfg = self.cfg
        if step >= cfg.pixel_steps:
            return cfg.gan_lr
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.pixel_steps - cfg.warmup_steps)
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * progress))

    def next_batch(self) -> Batch:
        scale = int(self.sampler.rng.choice(self.generator.scales, p=self._scale_p))
        batch = self.sampler.batch(self.cfg.batch_size, scale, self.cfg.lr_size)
        return Batch(batch.scale, batch.lr.to(self.device),
                     {s: t.to(self.device) for s, t in batch.targets.items()})

    # -- one optimisation step --------------------------------------------------------
    def pixel_terms(self, outputs: dict[int, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        pixel = sum(charbonnier(outputs[s].float(), batch.targets[s]) for s in batch.targets)
        final = outputs[batch.scale].float()
        colour = stain_colour_loss(final, batch.targets[batch.scale])
        return pixel, pixel + self.cfg.w_colour * colour

    def train_step(self, batch: Batch | None = None) -> StepStats:
        batch = batch or self.next_batch()
        phase = self.phase_at(self.step)
        for group in self.opt_g.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.generator.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._autocast):
            outputs = self.generator(batch.lr, batch.scale)
        pixel, loss = self.pixel_terms(outputs, batch)
        disc_value = None
        if phase == "gan":
            fake, real = self._gan_crop(outputs[batch.scale].float(), batch.targets[batch.scale])
            disc_value = self._discriminator_step(fake.detach(), real)
            self.discriminator.requires_grad_(False)
            fake_logits, fake_feats = self.discriminator(fake)
            with torch.no_grad():
                _, real_feats = self.discriminator(real)
            loss = (loss
                    + self.cfg.w_perceptual * feature_distance(self.features(fake), self.features(real))
                    + self.cfg.w_feature_match * feature_distance(fake_feats, real_feats)
                    + self.cfg.w_adversarial * generator_adversarial_loss(fake_logits))
            self.discriminator.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.step += 1
        return StepStats(self.step, phase, batch.scale, loss.item(), pixel.item(), disc_value)

    def _gan_crop(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.cfg.gan_crop
        h, w = fake.shape[-2:]
        if h <= size and w <= size:
            return fake, real
        top = int(self.sampler.rng.integers(0, max(h - size, 0) + 1))
        left = int(self.sampler.rng.integers(0, max(w - size, 0) + 1))
        window = (..., slice(top, top + size), slice(left, left + size))
        return fake[window], real[window]

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor) -> float:
        real_logits, _ = self.discriminator(real)
        fake_logits, _ = self.discriminator(fake)
        loss = discriminator_loss(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.item()

    def validate(self) -> dict[int, dict[str, float]] | None:
        if self.valset is None:
            return None
        scores = self.valset.score(self.generator, self.device)
        self.history.validations.append({"step": self.step, **{f"x{s}": v for s, v in scores.items()}})
        return scores

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler_rng": self.sampler.state(),
            "torch_rng": torch.get_rng_state(),
            "history": asdict(self.history),
        }

    def save(self, path: Path) -> None:
        """Write atomically so an interrupted save never leaves a broken checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        saved_arch = state["config"]["arch"]
        if saved_arch != self.cfg.arch:
            raise ValueError(f"checkpoint {path} is for architecture {saved_arch!r}, not {self.cfg.arch!r}")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sampler.restore(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.history = History(**state["history"])

    def fit_to_time(self, seconds: float, gan_share: float = 0.15, probe_steps: int = 50,
                    gan_cost: float = 1.6) -> None:
        """Set the step counts so the whole run takes about ``seconds``.

        Lent accelerators come by the minute, not by the step: the first
        ``probe_steps`` pixel steps (they count as training) measure the speed, and the
        rest of the budget is split between the phases. A GAN step also runs the
        discriminator and the feature net, ``gan_cost`` times a pixel step.
        """
        if not 0 <= gan_share < 1:
            raise ValueError(f"gan_share must be in [0, 1), got {gan_share}")
        warm = min(10, probe_steps - 1)  # the first steps of each scale pick kernels
        begun = time.perf_counter()
        for i in range(probe_steps):
            if i == warm:
                self._synchronise()
                started = time.perf_counter()
            self.train_step()
        self._synchronise()
        now = time.perf_counter()
        per_step = (now - started) / (probe_steps - warm)
        self.history.seconds += now - begun
        remaining = max(0.0, seconds - (now - begun))
        self.cfg.pixel_steps = self.step + int(remaining * (1 - gan_share) / per_step)
        self.cfg.gan_steps = int(remaining * gan_share / (per_step * gan_cost))

    def _synchronise(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- the loop ---------------------------------------------------------------------
    def run(self, checkpoint: Path | None = None,
            on_step: Callable[[StepStats, dict | None], None] | None = None,
            max_steps: int | None = None, deadline: float | None = None) -> None:
        """Train until ``total_steps`` (or ``max_steps`` more), validating and checkpointing.

        ``deadline`` (a ``time.monotonic()`` value) ends the run early, checkpoint saved:
        a lent machine is taken back at its limit whatever the step count."""
        cfg = self.cfg
        stop = cfg.total_steps if max_steps is None else min(cfg.total_steps, self.step + max_steps)
        while self.step < stop:
            if deadline is not None and time.monotonic() >= deadline:
                if checkpoint is not None:
                    self.save(checkpoint)
                break
            started = time.perf_counter()
            stats = self.train_step()
            self.history.seconds += time.perf_counter() - started
            boundary = self.step in (cfg.pixel_steps, cfg.total_steps)
            scores = None
            if self.valset is not None and (self.step % cfg.val_every == 0 or boundary):
                scores = self.validate()
            if checkpoint is not None and (self.step % cfg.ckpt_every == 0 or boundary or self.step == stop):
                self.save(checkpoint)
                if self.step == cfg.pixel_steps:
                    self.save(checkpoint.with_name("phase1.pt"))
            if on_step is not None:
                on_step(stats, scores)
