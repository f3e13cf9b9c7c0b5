"""The super-resolution generator: a fully convolutional x2 cascade.

Layout (no fully connected layer, stride 1 everywhere except the x2 upsamplers, so any
input size works and the network is translation equivariant, which is what makes
tiled inference exact):

* **encoder** at LR resolution: a 3x3 head conv, ``blocks`` residual blocks and a body
  conv with a long skip (EDSR-like). Almost all the compute sits here, on the fewest
  pixels.
* **decoder**: one x2 stage per octave (x2, x4, x8). Each stage upsamples the features
  by pixel shuffle (or, as an option, a transposed convolution), refines them with
  ``stage_convs`` 3x3 convs at the new resolution and predicts an RGB *residual* that
  is added to the bilinear x2 of the previous stage's image. Every stage's image is a
  supervised output, so one forward pass yields x2, x4 and x8 (10x/20x/40x from 5x),
  and asking for x4 skips the x8 stage entirely.

Images are float tensors in [0, 1], NCHW, RGB.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

UpsampleMode = Literal["pixel_shuffle", "transposed"]
SUPPORTED_SCALES = (2, 4, 8)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture hyper-parameters; one definition serves every model size."""

    channels: int = 32
    blocks: int = 4
    # Feature width after each x2 stage; its length sets the largest scale (2 ** len).
    stage_channels: tuple[int, ...] = (32, 16, 16)
    stage_convs: int = 1
    upsample: UpsampleMode = "pixel_shuffle"
    negative_slope: float = field(default=0.1)

    def __post_init__(self) -> None:
        if self.channels < 1 or self.blocks < 0 or self.stage_convs < 0:
            raise ValueError(f"invalid generator config {self}")
        if not self.stage_channels or any(c < 1 for c in self.stage_channels):
            raise ValueError(f"stage_channels must be positive, got {self.stage_channels}")
        if self.upsample not in ("pixel_shuffle", "transposed"):
            raise ValueError(f"upsample must be pixel_shuffle or transposed, got {self.upsample!r}")

    @property
    def max_scale(self) -> int:
        return 2 ** len(self.stage_channels)

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(2 ** (i + 1) for i in range(len(self.stage_channels)))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["stage_channels"] = list(self.stage_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        data = dict(data)
        data["stage_channels"] = tuple(data.get("stage_channels", cls.stage_channels))
        return cls(**data)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, slope: float) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)
        self.act = nn.LeakyReLU(slope, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Encoder(nn.Module):
    """Feature extraction at LR resolution."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.head = _conv(3, cfg.channels)
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.channels, cfg.negative_slope)
                                      for _ in range(cfg.blocks)])
        self.body = _conv(cfg.channels, cfg.channels)

    def forward(self, x: Tensor) -> Tensor:
        head = self.head(x - 0.5)
        return head + self.body(self.blocks(head))


class UpStage(nn.Module):
    """One x2 octave: upsample features, refine, emit an RGB residual."""

    def __init__(self, cin: int, cout: int, cfg: GeneratorConfig) -> None:
        super().__init__()
        if cfg.upsample == "pixel_shuffle":
            self.up = nn.Sequential(_conv(cin, 4 * cout), nn.PixelShuffle(2))
        else:
            self.up = nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)
        self.act = nn.LeakyReLU(cfg.negative_slope, inplace=True)
        refine: list[nn.Module] = []
        for _ in range(cfg.stage_convs):
            refine += [_conv(cout, cout), nn.LeakyReLU(cfg.negative_slope, inplace=True)]
        self.refine = nn.Sequential(*refine)
        self.to_rgb = _conv(cout, 3)
        # Start as a pure bilinear cascade: the residual branch begins at zero.
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, feats: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.refine(self.act(self.up(feats)))
        base = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
        return feats, base + self.to_rgb(feats)


class CascadeGenerator(nn.Module):
    """Encoder + x2 decoder stages; ``forward(x, scale)`` returns every image up to scale."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        widths = (cfg.channels, *cfg.stage_channels)
        self.stages = nn.ModuleList(UpStage(widths[i], widths[i + 1], cfg)
                                    for i in range(len(cfg.stage_channels)))

    @property
    def scales(self) -> tuple[int, ...]:
        return self.cfg.scales

    def check_scale(self, scale: int) -> int:
        if scale not in self.cfg.scales:
            raise ValueError(f"scale must be one of {self.cfg.scales}, got {scale!r}")
        return int(math.log2(scale))

    def forward(self, x: Tensor, scale: int | None = None) -> dict[int, Tensor]:
        """Return ``{2: x2_image, 4: x4_image, ...}`` up to ``scale`` (default: the largest)."""
        n_stages = self.check_scale(scale or self.cfg.max_scale)
        feats, image = self.encoder(x), x
        outputs: dict[int, Tensor] = {}
        for i in range(n_stages):
            feats, image = self.stages[i](feats, image)
            outputs[2 ** (i + 1)] = image
        return outputs

    def upscale(self, x: Tensor, scale: int) -> Tensor:
        return self.forward(x, scale)[scale]

    def receptive_radius(self, scale: int) -> float:
        """Radius in LR pixels beyond which an input pixel cannot affect an output pixel."""
        n_stages = self.check_scale(scale)
        radius = 1.0 + 2 * self.cfg.blocks + 1  # head, blocks, body
        for i in range(n_stages):
            res_in, res_out = 2 ** i, 2 ** (i + 1)
            # The upsampler (3x3 conv + shuffle, or 4x4 stride-2 deconv) reaches one input
            # pixel; the refine convs and the RGB head reach one pixel each at the new size.
            radius += 1.0 / res_in + (self.cfg.stage_convs + 1) / res_out
        return radius

    def context_margin(self, scale: int) -> int:
        """LR pixels of context a tile needs so its core equals a whole-image pass."""
        # +2 covers the bilinear taps of the image path at every octave.
        return math.ceil(self.receptive_radius(scale)) + 2


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
