"""A tiny fully-convolutional network that maps ``fold_inputs`` to a per-cell fold logit.

Region context is the point (EVALUATION.md: per block, dense tissue and a doubled band look
alike): a stride-2 stem, then residual 3x3 convolutions dilated 1..16 give each output cell a
receptive field of about 530 overview px (265 each way) - a whole band, both of its edges and
enough of the tissue around to tell a band from a gland. ~35k parameters, ~70 kB in fp16.

Weights are fp16 ``state_dict`` files checked against their sha256 before loading, with the
same helpers as model_zoo's registry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model_zoo.registry import WeightsError, sha256_of, verify_checksum
from quality.fold_inputs import CHANNELS, STRIDE

WIDTH = 24
DILATIONS = (1, 2, 4, 8, 16, 1)


class _Dilated(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.conv(x))


class FoldNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(CHANNELS, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, WIDTH, 3, stride=STRIDE, padding=1), nn.ReLU())
        self.context = nn.Sequential(*[_Dilated(WIDTH, d) for d in DILATIONS])
        self.head = nn.Conv2d(WIDTH, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, CHANNELS, H, W) -> (N, H / STRIDE, W / STRIDE) logits."""
        return self.head(self.context(self.stem(x)))[:, 0]


def save_fold_net(model: FoldNet, path: Path) -> str:
    """Write fp16 weights and return their sha256 (to register in ``learned_folds.WEIGHTS``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()}, path)
    return sha256_of(path)


def load_fold_net(path: Path, sha256: str | None) -> FoldNet:
    """Checksum first (None: an unregistered file, e.g. one just trained), then load (eval mode)."""
    if sha256 is not None:
        verify_checksum(path, sha256)
    elif not path.is_file():
        raise WeightsError(f"fold weights file {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = FoldNet()
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except Exception as exc:
        raise WeightsError(f"fold weights file {path} does not fit the fold network: {exc}") from exc
    return model.eval()
