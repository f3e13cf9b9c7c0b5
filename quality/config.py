"""Every QC threshold in one validated, documented model (``QcConfig``).

Thresholds are checked by ``python -m quality.evaluate`` (see EVALUATION.md: tuned on one half of
the sources, reported on the other) with images at their native scanner resolution (~0.25-0.5
um/px). The colour limit is in calibrated units (1 = the distance 99% of clean slides from labs
the standard never saw stay within). Blur thresholds depend on the pixel size, so focus is judged
at one standard pixel size (``BlurConfig.reference_mpp``): finer tiles are resampled to it and
the threshold is rescaled for coarser ones (``BlurConfig.min_sharpness_at``, quality/blur.py).

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
    """Colour cast, on tissue pixels only.

    ``standard_distance`` (default): calibrated Mahalanobis distance of the slide's colour
    descriptor to the colour standard - a distribution of accepted slides (quality/standard.py);
    1.0 is the distance 99% of clean slides from laboratories the standard never saw stay
    within. ``standard_path`` None = the shipped standard, built from the H&E in ../shared/data.

    ``mutual_information`` / ``histogram_distance`` compare with one standard *image*
    (``reference_path``): I(S; C) in bits between the source S (slide or reference) and the
    quantised CIELAB colour C - the Jensen-Shannon divergence of the two colour histograms - or
    their Hellinger distance. One image cannot represent normal variation between labs (every
    clean image of other labs was rejected against one), so these are for a lab that scans one
    stain protocol only. With a reference image the MI figures are reported in any case, and
    the image is the target of colour normalisation."""

    enabled: bool = Field(True, description="judge colour (False: reported as not judged)")
    metric: Literal["standard_distance", "mutual_information", "histogram_distance"] = "standard_distance"
    standard_path: Path | None = Field(None, description="colour standard JSON; None = the shipped one")
    max_standard_distance: float = Field(1.0, gt=0, description="calibrated distance allowed (1 = edge of normal)")
    reference_path: Path | None = Field(None, description="standard H&E image (MI metrics, normalisation target)")
    max_mutual_information: float = Field(0.70, gt=0, le=1)
    max_histogram_distance: float = Field(0.80, gt=0, le=1)
    bins: int = Field(16, ge=4, le=128, description="bins per chromaticity axis (a*, b* over [-64, 64))")
    lightness_bins: int = Field(8, ge=1, le=64, description="bins over L* (0..100)")
    pixel_stride: int = Field(4, ge=1, description="every n-th pixel per axis feeds the histogram")


class BlurConfig(_Section):
    """A tissue tile is blurred when its sharpness (``metric`` on luminance 0..1) is below
    ``min_sharpness``; the slide fails when more than ``max_blurred_fraction`` of its
    focus-judgeable tiles are blurred. A tile can show focus only if it has structure with edges:
    at least ``min_nuclear_fraction`` of its pixels haematoxylin-dark (red optical density >=
    ``nuclear_red_od``) or coarse texture (std of 8-px block-mean luminance) >=
    ``min_coarse_contrast``. Fat, lumen, mucus and sparse stroma have neither, are as "unsharp"
    in focus as out of it, and are left out (quality/blur.py)."""

    metric: Literal["laplacian_variance", "tenengrad", "spatial_frequency"] = "laplacian_variance"
    min_sharpness: float = Field(6e-4, gt=0, description="per-tile threshold at reference_mpp")
    reference_mpp: float = Field(0.25, gt=0, description="pixel size focus is judged at (um/px; 0.25 = 40x)")
    resample: bool = Field(True, description="tiles finer than reference_mpp are area-averaged to it first")
    scale_exponent: float = Field(2.0, ge=0, description="sharpness ~ (mpp / reference_mpp) ** exponent")
    max_blurred_fraction: float = Field(0.25, ge=0, le=1)
    nuclear_red_od: float = Field(0.3, gt=0, description="red OD of a haematoxylin-dark pixel (half the red light absorbed)")
    min_nuclear_fraction: float = Field(0.005, ge=0, le=1, description="about one nucleus per 256-px tile at 0.25 um/px")
    min_coarse_contrast: float = Field(0.05, ge=0, le=1, description="std of 8-px block-mean luminance (0..1)")

    def min_sharpness_at(self, mpp: float | None) -> float:
        """Threshold for a slide with pixel size ``mpp`` (unknown: as tuned). Finer pixels are
        resampled to ``reference_mpp`` (quality/blur.py), so they meet the tuned threshold."""
        if not mpp:
            return self.min_sharpness
        if self.resample:
            mpp = max(mpp, self.reference_mpp)
        return self.min_sharpness * (mpp / self.reference_mpp) ** self.scale_exponent


class FoldConfig(_Section):
    """Folds: a fold lays the section over itself, so along a band the tissue is darker in *both*
    stains than the same tissue right beside it, and keeps a doubled (not smoothed-out) texture.

    On an analysis grid (the overview averaged over ``smoothing_px / 4`` px blocks), candidate
    regions are where smoothed optical density exceeds ``relative_od`` x its tissue median. A
    region is a fold when haematoxylin and eosin inside it are each >= ``min_ring_ratio`` x
    their level in the ring of tissue around it, within ``max_stain_imbalance`` of each other,
    its texture (coefficient of variation relative to the ring's) is >= ``min_texture_ratio``,
    and it is a band (``min_elongation``) covering >= ``min_region_fraction`` of the tissue.
    Dense epithelium and lymphoid aggregates are haematoxylin-heavy against their ring,
    keratin and collagen eosin-heavy, muscle and dense stroma homogeneous; none passes all.

    ``detector = "learned"`` replaces the rules with a small network that sees a band and its
    edges (quality/learned_folds.py): a fold is a connected region of cells whose probability
    exceeds ``learned_probability`` covering >= ``min_region_fraction`` of the tissue, in which
    both stains rise >= ``learned_min_ring_ratio`` x the ring around it, within
    ``max_stain_imbalance`` of each other; the smoothing, candidate, texture and elongation
    settings then do not apply."""

    detector: Literal["classical", "learned"] = Field(
        "learned", description="classical: the ring rules below (quality/folds.py); learned: FoldNet (learned_folds.py)")
    learned_weights: str = Field("all", description="registered FoldNet weights (learned_folds.WEIGHTS)")
    learned_probability: float = Field(0.7, gt=0, lt=1, description="learned: fold probability of a fold cell")
    learned_min_ring_ratio: float = Field(1.2, gt=0, description="learned: each stain inside a region / its ring")
    smoothing_px: float = Field(16.0, gt=0, description="Gaussian sigma that erases nuclei (overview px)")
    relative_od: float = Field(1.6, gt=1, description="candidate: smoothed OD over its tissue median")
    min_ring_ratio: float = Field(1.4, gt=1, description="each stain inside / in the surrounding ring")
    max_stain_imbalance: float = Field(2.0, gt=1, description="max ratio between the two stains' ring ratios")
    min_texture_ratio: float = Field(0.4, ge=0, description="relative texture inside / ring: doubled, not flat")
    min_elongation: float = Field(2.5, ge=1, description="major / minor axis: folds are bands")
    min_region_fraction: float = Field(0.01, gt=0, lt=1, description="of the tissue area")
    judge_non_he: bool = Field(False, description="the stain test assumes H&E; other stains are not judged")
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
    max_ink_share: float = Field(0.2, ge=0, le=1, description="a rim this much ink-coloured is a pen circle")
    max_count: int = Field(0, ge=0, description="bubbles allowed before the check fails")


class PenConfig(_Section):
    """Pen/ink marks by colour (green/blue ink, saturated red, black); advisory by default.

    Nuclei (blue/black hues), red cells (red) and pigment share ink's colour in places but not
    its size or shape: in those colours a component is ink only when it covers
    ``min_blob_fraction`` of the image or is a stroke (a band at least ``min_stroke_length`` of
    the longer image side and 4x longer than wide). Green ink has no tissue look-alike. Where the
    slide states its pixel size, such a blob or stroke must also have a marker's size: at high
    magnification a vessel full of red cells is a long red band and a pigment deposit a large
    black blob *of the image*, but tens of microns across, where a marker's line is a few tenths
    of a millimetre wide and several times as long."""

    enabled: bool = True
    affects_verdict: bool = Field(False, description="QcCheckName has no pen check yet; report only")
    min_region_fraction: float = Field(1e-3, gt=0, lt=1)
    min_blob_fraction: float = Field(0.01, gt=0, lt=1, description="blue/black/red blobs smaller than this are cells")
    min_stroke_length: float = Field(0.05, gt=0, le=1, description="of the longer image side")
    min_blob_mm2: float = Field(0.01, ge=0, description="blue/black/red blobs smaller than this (in mm^2) are cells")
    min_stroke_mm: float = Field(0.5, ge=0, description="blue/black/red strokes shorter than this (mm) are vessels")
    max_area_fraction: float = Field(0.005, ge=0, le=1, description="of the image area")


class JudgeableConfig(_Section):
    """Whether the image can be judged at all (quality/judgeable.py); each failure is a clear
    "not judgeable: <why>" on the tissue check."""

    min_bright_luminance: float = Field(0.5, gt=0, lt=1, description="99th pct luminance of a brightfield scan")
    min_colour_saturation: float = Field(0.05, gt=0, lt=1, description="99th pct saturation of a colour scan")
    min_he_hue_share: float = Field(0.3, ge=0, le=1, description="pink/purple share of stained H&E tissue")
    max_brown_share: float = Field(0.2, ge=0, le=1, description="DAB-brown share above which it is IHC")
    max_background_chroma: float = Field(8.0, gt=0, description="a stain is named only on a neutral background")
    max_covered_share: float = Field(0.5, gt=0, le=1, description="ink/debris share of the stained area")


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
    judgeable: JudgeableConfig = JudgeableConfig()
    sampling: SamplingConfig = SamplingConfig()
    normalise: NormaliseConfig = NormaliseConfig()
