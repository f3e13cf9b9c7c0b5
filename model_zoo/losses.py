"""Training losses: pixel, perceptual (offline), adversarial and H&E stain colour.

Perceptual features cannot come from ImageNet weights here (nothing may be downloaded),
so the perceptual term combines two offline sources:

* a **fixed-seed random-weight CNN**: random convolution filters still respond to local
  edges, orientation and texture statistics, so matching their activations penalises
  blur and wrong texture much like a pretrained network's low layers do. The weights
  come from a seeded generator, so the loss is reproducible and nothing is shipped;
* **discriminator feature matching**: the discriminator learns exactly which features
  tell generated H&E texture from real, and matching its intermediate activations is a
  learned, domain-specific perceptual distance (used in the adversarial phase).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Ruifrok & Johnston (2001) stain vectors for haematoxylin, eosin and DAB (rows), in
# optical density per RGB channel; their inverse maps optical density to stain amounts.
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29],
                              [0.07, 0.99, 0.11],
                              [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """A smooth L1: robust to outliers like L1, differentiable at zero."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def stain_density(image: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> haematoxylin, eosin, DAB amounts (colour deconvolution)."""
    od = -torch.log(image.clamp(1.0 / 255.0, 1.0))
    matrix = _HED_FROM_RGB.to(image.device, image.dtype)
    return torch.einsum("nchw,cd->ndhw", od, matrix)


def stain_colour_loss(pred: Tensor, target: Tensor, pool: int = 4) -> Tensor:
    """L1 between stain amounts of low-passed images: colour fidelity, not texture."""
    if pool > 1 and min(pred.shape[-2:]) >= pool:
        pred, target = F.avg_pool2d(pred, pool), F.avg_pool2d(target, pool)
    return F.l1_loss(stain_density(pred), stain_density(target))


class RandomFeatureNet(nn.Module):
    """A frozen CNN with weights drawn from a fixed seed; returns a few feature maps."""

    def __init__(self, seed: int = 2024, widths: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        layers = []
        cin = 3
        for i, width in enumerate(widths):
            conv = nn.Conv2d(cin, width, 3, stride=1 if i == 0 else 2, padding=1)
            with torch.no_grad():
                fan_in = cin * 9
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            cin = width
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: Tensor) -> list[Tensor]:
        feats = []
        x = (image - 0.5) * 2.0
        for conv in self.layers:
            x = F.relu(conv(x))
            feats.append(x)
        return feats

    def train(self, mode: bool = True) -> RandomFeatureNet:
        return super().train(False)  # always frozen


def feature_distance(pred_feats: list[Tensor], target_feats: list[Tensor]) -> Tensor:
    """Mean L1 over layers, each normalised by the target's mean activation magnitude."""
    total = pred_feats[0].new_zeros(())
    for p, t in zip(pred_feats, target_feats):
        t = t.detach()
        total = total + F.l1_loss(p, t) / (t.abs().mean() + 1e-6)
    return total / len(pred_feats)


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating GAN loss for the generator."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
