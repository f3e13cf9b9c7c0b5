"""A small fixed validation set for monitoring training: centre crops of held-out images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .architecture import CascadeGenerator
from .baselines import interpolate
from .degradation import box_downsample, to_uint8
from .metrics import psnr


@dataclass
class ValidationPair:
    name: str
    scale: int
    lr: np.ndarray
    hr: np.ndarray
    bicubic_psnr: float = field(init=False)

    def __post_init__(self) -> None:
        self.bicubic_psnr = psnr(interpolate(self.lr, self.scale, "bicubic"), self.hr, shave=self.scale)


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    size_h, size_w = min(size, h), min(size, w)
    size_h, size_w = size_h - size_h % 8, size_w - size_w % 8
    top, left = (h - size_h) // 2, (w - size_w) // 2
    return image[top:top + size_h, left:left + size_w]


class ValidationSet:
    def __init__(self, pairs: list[ValidationPair]) -> None:
        self.pairs = pairs

    @classmethod
    def from_images(cls, images: dict[str, np.ndarray], scales: tuple[int, ...] = (4, 8),
                    crop: int = 384) -> ValidationSet:
        pairs = []
        for name, image in images.items():
            hr = centre_crop(image, crop)
            for scale in scales:
                pairs.append(ValidationPair(name, scale, to_uint8(box_downsample(hr, scale)), hr))
        return cls(pairs)

    @property
    def scales(self) -> list[int]:
        return sorted({p.scale for p in self.pairs})

    @torch.inference_mode()
    def score(self, model: CascadeGenerator, device: torch.device | str = "cpu") -> dict[int, dict[str, float]]:
        """Mean PSNR of the model and of bicubic per scale (whole-crop single passes)."""
        was_training = model.training
        model.eval()
        results: dict[int, dict[str, list[float]]] = {}
        for pair in self.pairs:
            x = torch.from_numpy(pair.lr).permute(2, 0, 1)[None].float().div(255.0).to(device)
            y = model.upscale(x, pair.scale).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
            out = np.rint(y * 255.0).astype(np.uint8)
            entry = results.setdefault(pair.scale, {"model": [], "bicubic": []})
            entry["model"].append(psnr(out, pair.hr, shave=pair.scale))
            entry["bicubic"].append(pair.bicubic_psnr)
        model.train(was_training)
        return {s: {k: float(np.mean(v)) for k, v in d.items()} for s, d in sorted(results.items())}
