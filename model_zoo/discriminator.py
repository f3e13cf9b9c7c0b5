"""Patch discriminator: fully convolutional, one real/fake logit per receptive-field patch.

Spectral normalisation keeps it Lipschitz-bounded, which is what lets a low
adversarial weight train stably for a short fine-tuning phase. Its intermediate
features double as the feature-matching part of the perceptual loss.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    def __init__(self, channels: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(spectral_norm(nn.Conv2d(3, channels, 3, padding=1)),
                                                 nn.LeakyReLU(0.2))]
        width = channels
        for _ in range(depth):
            nxt = min(width * 2, 256)
            layers.append(nn.Sequential(
                spectral_norm(nn.Conv2d(width, nxt, 4, stride=2, padding=1)), nn.LeakyReLU(0.2),
                spectral_norm(nn.Conv2d(nxt, nxt, 3, padding=1)), nn.LeakyReLU(0.2)))
            width = nxt
        self.features = nn.ModuleList(layers)
        self.head = spectral_norm(nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Return (logit map, intermediate features)."""
        feats: list[Tensor] = []
        x = image - 0.5
        for layer in self.features:
            x = layer(x)
            feats.append(x)
        return self.head(x), feats
