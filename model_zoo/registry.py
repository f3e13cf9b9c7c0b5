"""Model registry: name -> architecture, weights file, scales and checksum.

Weights are fp16 ``state_dict`` files under ``model_zoo/weights/``. The loader checks
the file's sha256 against the registry before unpickling anything, so a truncated,
corrupted or swapped file fails with an error that names the file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from . import DEFAULT_MODEL  # noqa: F401 - re-exported; defined in the package so `import model_zoo` stays light
from .architecture import CascadeGenerator, GeneratorConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# Sizes from the one definition. "small" is the CPU/interactive default, "large" is
# meant for GPUs, "tiny" exists for tests and smoke runs.
ARCHITECTURES: dict[str, GeneratorConfig] = {
    "tiny": GeneratorConfig(channels=8, blocks=1, stage_channels=(8, 8, 4), stage_convs=1),
    "small": GeneratorConfig(channels=48, blocks=6, stage_channels=(32, 16, 8), stage_convs=1),
    "large": GeneratorConfig(channels=64, blocks=16, stage_channels=(64, 32, 32), stage_convs=2),
}


# How a model answers x2: its own x2 stage, its x4 output area-averaged by 2, or Lanczos.
X2Path = Literal["model", "x4", "lanczos"]
X2_PATHS: tuple[str, ...] = get_args(X2Path)


class WeightsError(RuntimeError):
    """A weights file is missing, corrupted or does not match the registry."""


class WeightsChecksumError(WeightsError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    weights: str | None  # file name under WEIGHTS_DIR; None = architecture only, untrained
    sha256: str | None
    description: str = ""
    # Whichever answer to x2 measured closest to the scanned image (MODEL_CARD.md, "x2").
    x2_path: X2Path = "model"
    # LR context (px) a tile needs at most for these weights: its declared margin (receptive
    # field) is loose, and with this much every output value stays within one 8-bit level of
    # the full margin's, at >= 65 dB on real H&E (tests/unit/test_compute_margin.py keeps it
    # true). None: the full margin. The compute service reads this much around each window.
    margin_cap: int | None = None

    @property
    def config(self) -> GeneratorConfig:
        return ARCHITECTURES[self.architecture]

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="sr-cascade-small",
            architecture="small",
            weights="sr-cascade-small.pt",
            sha256="9df4689033be705405d15ad6c9fe93cef1a22ffeeb36fbf180bd864ee7deacd0",
            description="v2 pixel phase + adversarial/perceptual fine-tune: sharper texture, 0.1 dB lower PSNR (MODEL_CARD.md)",
            x2_path="lanczos",
            margin_cap=10,  # 8 px moves a few values by 2 levels at x8; 9 is the edge
        ),
        ModelSpec(
            name="sr-cascade-small-psnr",
            architecture="small",
            weights="sr-cascade-small-psnr.pt",
            sha256="9e7a4a261f56c421681def13f2f7d986a82511d9baf177cf4b1b21246b23aa65",
            description="default (v5): v4 (GPU, LR stored as JPEG XL) fine-tuned on the CPU on LR stored as AVIF, "
                        "ingest's codec (MODEL_CARD.md)",
            # On LR as ingest stores it (JPEG XL d1) its x2 stage beats Lanczos by 0.39 dB, but at
            # 183 kFLOP per output pixel a 10x screen costs ~2.7 s of 2-thread CPU (a 40x one ~0.5 s);
            # on lossless LR Lanczos is ahead. CPU workers keep Lanczos; GPU workers can set
            # compute.x2_path=model (MODEL_CARD.md, "x2").
            x2_path="lanczos",
            margin_cap=10,  # 8 px moves a few values by 2 levels at x8; 9 passes the grid, not every sample
        ),
        ModelSpec(
            name="sr-cascade-large-psnr",
            architecture="large",
            weights="sr-cascade-large-psnr.pt",
            sha256="f9376b99c0036425823bacb0b4f2504ea232df80c4163f8aad3924325f6aa6d3",
            description="GPU size, 5 min from scratch on an H100: level with the default at 4x the cost; "
                        "a start for longer GPU runs (--init-from), not a default (MODEL_CARD.md)",
            x2_path="lanczos",  # its x2 is not measured yet
            margin_cap=13,  # 11 px moves values by 2 levels at x8, 10 by 3; 12 is the edge
        ),
    )
}



def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(REGISTRY)}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, expected: str) -> None:
    if not path.is_file():
        raise WeightsError(f"weights file {path} is missing")
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsChecksumError(
            f"weights file {path} has sha256 {actual}, expected {expected}: corrupted or not the "
            "registered file")


def save_weights(model: CascadeGenerator, path: Path) -> str:
    """Write an fp16 state_dict and return its sha256 (for the registry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}
    torch.save(state, path)
    return sha256_of(path)


def load_generator(spec: ModelSpec | str, device: str | torch.device = "cpu",
                   weights_dir: Path = WEIGHTS_DIR) -> CascadeGenerator:
    """Build the spec's architecture and load its checksum-verified weights (eval mode)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if spec.weights is None or spec.sha256 is None:
        raise WeightsError(f"model {spec.name!r} has no trained weights registered")
    path = Path(weights_dir) / spec.weights
    verify_checksum(path, spec.sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = CascadeGenerator(spec.config)
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:  # a registered checksum with the wrong architecture, say
        raise WeightsError(f"weights file {path} does not fit model {spec.name!r}: {exc}") from exc
    return model.to(device).eval()
