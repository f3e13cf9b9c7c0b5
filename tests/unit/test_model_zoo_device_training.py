"""Training on a lent GPU: the compact data pack, crops cut on the device, a run sized by time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_zoo import train
from model_zoo.datapack import read_pack, write_pack
from model_zoo.degradation import box_downsample, to_uint8
from model_zoo.device_sampler import STORED_MIX, DeviceSampler, LrVariant, lr_versions
from model_zoo.testing import single_thread
from model_zoo.training import TrainConfig, Trainer


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    with single_thread():
        yield


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = np.zeros((height, width, 3))
    for _ in range(8):
        cy, cx, r = rng.random(3) * [1, 1, 0.3]
        image += rng.random(3) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2)[..., None] / (r * r + 1e-3))
    return (255 * image / image.max()).astype(np.uint8)


def test_pack_round_trip_keeps_shapes_and_is_close(tmp_path: Path) -> None:
    sources = []
    for i, (h, w) in enumerate([(96, 128), (80, 80)]):
        path = tmp_path / "src" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(smooth_image(h, w, i)).save(path)
        sources.append(path)
    manifest = write_pack(sources, tmp_path / "pack")
    assert [e["original"] for e in manifest["images"]] == ["img0.png", "img1.png"]
    images = read_pack(tmp_path / "pack")
    for path, image in zip(sources, images):
        original = np.asarray(Image.open(path))
        assert image.shape == original.shape
        # q95 4:4:4 on smooth content: a few code values at most, never a different picture.
        assert np.abs(image.astype(int) - original).mean() < 2.0


def test_pack_refuses_a_folder_that_is_not_one_or_a_changed_image(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a training pack"):
        read_pack(tmp_path)
    path = tmp_path / "a.png"
    Image.fromarray(smooth_image(64, 64, 0)).save(path)
    write_pack([path], tmp_path / "pack")
    manifest = json.loads((tmp_path / "pack" / "pack.json").read_text())
    Image.fromarray(smooth_image(32, 64, 0)).save(tmp_path / "pack" / manifest["images"][0]["file"])
    with pytest.raises(ValueError, match="the pack says"):
        read_pack(tmp_path / "pack")


def test_lr_versions_lossless_is_the_area_mean_and_jpeg_differs_from_it() -> None:
    hr = smooth_image(64, 64, 1)
    lossless, jpeg, blurred = lr_versions(hr, 4, [LrVariant("l", 1), LrVariant("j", 1, jpeg_quality=50),
                                                  LrVariant("b", 1, blur_sigma_lr=1.0)])
    np.testing.assert_array_equal(lossless, to_uint8(box_downsample(hr, 4)))
    assert jpeg.shape == blurred.shape == lossless.shape == (16, 16, 3)
    assert not np.array_equal(jpeg, lossless)
    assert not np.array_equal(blurred, lossless)


def test_the_jpeg_xl_mix_stores_lr_as_ingest_does() -> None:
    from model_zoo.degradation import jpegxl_roundtrip
    from model_zoo.device_sampler import LR_MIXES

    hr = smooth_image(128, 128, 2)
    lossless, jxl = lr_versions(hr, 4, [LrVariant("l", 1), LrVariant("x", 1, jpegxl_distance=1.0)])
    np.testing.assert_array_equal(jxl, jpegxl_roundtrip(lossless, 1.0))
    assert not np.array_equal(jxl, lossless)
    mix = LR_MIXES["jxl"]
    assert abs(sum(v.weight for v in mix) - 1.0) < 1e-9
    assert max(mix, key=lambda v: v.weight).jpegxl_distance == 1.0  # what storage holds comes first


def test_the_avif_mix_stores_lr_as_ingest_does() -> None:
    from model_zoo.degradation import avif_roundtrip
    from model_zoo.device_sampler import LR_MIXES
    from slide_io.pyramid import AVIF_QUALITY

    hr = smooth_image(128, 128, 2)
    lossless, avif = lr_versions(hr, 4, [LrVariant("l", 1), LrVariant("a", 1, avif_quality=AVIF_QUALITY)])
    np.testing.assert_array_equal(avif, avif_roundtrip(lossless, AVIF_QUALITY))
    assert avif.shape == lossless.shape and not np.array_equal(avif, lossless)
    mix = LR_MIXES["avif"]
    assert abs(sum(v.weight for v in mix) - 1.0) < 1e-9
    assert max(mix, key=lambda v: v.weight).avif_quality == AVIF_QUALITY  # what ingest writes comes first


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_device_batches_align_input_and_targets(scale: int) -> None:
    lossless_only = (LrVariant("lossless", 1.0),)
    sampler = DeviceSampler([smooth_image(200, 168, 2), smooth_image(128, 256, 3)], variants=lossless_only,
                            seed=4, noise_prob=0.0)
    batch = sampler.batch(6, scale, 12)
    assert batch.lr.shape == (6, 3, 12, 12)
    assert sorted(batch.targets) == [s for s in (2, 4, 8) if s <= scale]
    hr = batch.targets[scale]
    assert hr.shape == (6, 3, 12 * scale, 12 * scale)
    # The LR is the 8-bit area mean of the very HR crop it is paired with (after the same flip).
    expected = torch.round(torch.nn.functional.avg_pool2d(hr * 255.0, scale)) / 255.0
    torch.testing.assert_close(batch.lr, expected, rtol=0, atol=1.01 / 255)
    for out_scale, target in batch.targets.items():
        torch.testing.assert_close(target, torch.nn.functional.avg_pool2d(hr, scale // out_scale))


def test_device_sampler_draws_every_variant_and_replays_from_its_state() -> None:
    sampler = DeviceSampler([smooth_image(128, 128, 5)], seed=1)
    state = sampler.state()
    first = sampler.batch(4, 4, 8)
    sampler.restore(state)
    again = sampler.batch(4, 4, 8)
    torch.testing.assert_close(first.lr, again.lr, rtol=0, atol=0)
    picks = [int(sampler.rng.choice(len(STORED_MIX), p=sampler.variant_weights)) for _ in range(2000)]
    assert set(picks) == set(range(len(STORED_MIX)))
    with pytest.raises(ValueError, match="at least 256x256"):
        sampler.batch(1, 8, 32)


def tiny_trainer(**overrides) -> Trainer:
    cfg = TrainConfig(arch="tiny", pixel_steps=1000, gan_steps=1000, batch_size=2, lr_size=8, warmup_steps=1,
                      val_every=10**6, ckpt_every=10**6, **overrides)
    return Trainer(cfg, DeviceSampler([smooth_image(96, 96, 6)], seed=0))


def test_fit_to_time_turns_a_budget_into_step_counts() -> None:
    trainer = tiny_trainer()
    trainer.fit_to_time(2.0, gan_share=0.25, probe_steps=12)
    assert trainer.step == 12
    cfg = trainer.cfg
    assert cfg.pixel_steps > trainer.step and cfg.gan_steps > 0
    # The pixel phase gets about three times the GAN phase's seconds (a GAN step costs 1.6).
    assert 3 * 1.6 * 0.5 < (cfg.pixel_steps - 12) / cfg.gan_steps < 3 * 1.6 * 2
    with pytest.raises(ValueError, match="gan_share"):
        trainer.fit_to_time(1.0, gan_share=1.0)


def test_deadline_stops_the_run_and_keeps_a_checkpoint(tmp_path: Path) -> None:
    trainer = tiny_trainer()
    trainer.run(tmp_path / "last.pt", deadline=time.monotonic() + 0.5)
    assert 0 < trainer.step < trainer.cfg.total_steps
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == trainer.step


def test_cli_trains_from_a_pack_and_exports_both_phases(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(smooth_image(96, 96, 7)).save(path)
    write_pack([path], tmp_path / "pack")
    rc = train.main(["--arch", "tiny", "--data-pack", str(tmp_path / "pack"), "--sampler", "device",
                     "--pixel-steps", "3", "--gan-steps", "2", "--batch-size", "2", "--lr-size", "8",
                     "--out-dir", str(tmp_path / "run"), "--export", str(tmp_path / "w.pt"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "w.pt").is_file() and (tmp_path / "w-psnr.pt").is_file()
    final = torch.load(tmp_path / "w.pt", weights_only=True)
    pixel = torch.load(tmp_path / "w-psnr.pt", weights_only=True)
    assert any(not torch.equal(final[k], pixel[k]) for k in final)  # the GAN steps moved the weights
