"""Training: loss goes down on a tiny batch, the GAN phase runs, resume continues exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_zoo import train
from model_zoo.data import PatchSampler, default_data_dir
from model_zoo.images import load_rgb
from model_zoo.losses import RandomFeatureNet, stain_colour_loss
from model_zoo.testing import single_thread
from model_zoo.training import TrainConfig, Trainer


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def textured_image(size: int, seed: int) -> np.ndarray:
    """Smooth blobs: learnable structure, unlike white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.zeros((size, size, 3))
    for _ in range(12):
        cy, cx, r = rng.random(3) * [1, 1, 0.2]
        image += rng.random(3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2)[..., None] / (r * r + 1e-3))
    return (255 * image / image.max()).astype(np.uint8)


def tiny_config(**overrides) -> TrainConfig:
    base = dict(arch="tiny", pixel_steps=30, gan_steps=0, batch_size=4, lr_size=8, warmup_steps=1,
                lr=3e-3, degradation="clean", val_every=1000, ckpt_every=1000, w_colour=0.0)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.mark.skipif(not (default_data_dir() / "monuseg2018").is_dir(), reason="shared data not present")
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    image = load_rgb(default_data_dir() / "monuseg2018" / "TCGA-18-5592-01Z-00-DX1.tif")[:256, :256]
    trainer = Trainer(tiny_config(pixel_steps=1000), PatchSampler([image], seed=0))
    batch = trainer.sampler.batch(4, 4, 8)
    first = trainer.train_step(batch).pixel
    for _ in range(40):
        last = trainer.train_step(batch).pixel
    assert last < 0.9 * first


def test_gan_phase_updates_generator_and_discriminator() -> None:
    trainer = Trainer(tiny_config(pixel_steps=0, gan_steps=2, gan_crop=16),
                      PatchSampler([textured_image(128, 1)], seed=0))
    before_d = [p.detach().clone() for p in trainer.discriminator.parameters()]
    before_g = [p.detach().clone() for p in trainer.generator.parameters()]
    stats = trainer.train_step(trainer.sampler.batch(2, 8, 8))
    assert stats.phase == "gan" and stats.disc is not None and np.isfinite(stats.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before_d, trainer.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_g, trainer.generator.parameters()))


def test_perceptual_and_colour_terms_are_fixed_and_zero_on_identity() -> None:
    a, b = RandomFeatureNet(seed=7), RandomFeatureNet(seed=7)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb) and not pa.requires_grad
    image = torch.rand(1, 3, 16, 16)
    assert float(stain_colour_loss(image, image)) == 0.0
    assert float(stain_colour_loss(image, image.flip(1))) > 0.0


@pytest.fixture()
def tiny_data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "monuseg2018"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(textured_image(96, i)).save(folder / f"synthetic-{i}.png")
    return tmp_path / "data"


def cli(data_dir: Path, out_dir: Path, steps: int, *extra: str) -> int:
    return train.main(["--arch", "tiny", "--pixel-steps", str(steps), "--gan-steps", "2",
                       "--batch-size", "2", "--lr-size", "8", "--data-dir", str(data_dir),
                       "--out-dir", str(out_dir), "--ckpt-every", "1", "--no-progress", *extra])


def test_resumed_checkpoint_continues_exactly(tiny_data_dir: Path, tmp_path: Path) -> None:
    assert cli(tiny_data_dir, tmp_path / "straight", 4) == 0
    # The same run interrupted after 3 of its 6 steps, then resumed with --resume.
    assert cli(tiny_data_dir, tmp_path / "resumed", 4, "--stop-after", "3") == 0
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["step"] == 3
    assert cli(tiny_data_dir, tmp_path / "resumed", 4, "--resume") == 0
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == 6
    for part in ("generator", "discriminator"):
        for key, value in straight[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=0, atol=0)
