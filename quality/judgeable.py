"""Can this image be judged as a brightfield H&E slide at all? Answered before any check, so a
bad input gets one clear "not judgeable: <why>" instead of a string of meaningless verdicts.

* brightfield: the brightest pixels must be bright (glass, lumens); a fluorescence scan or a
  16-bit image squeezed into the dark end of 8 bits is not;
* colour: a greyscale image has no stain colour to judge, and stained tissue cannot be told
  from grey dust;
* stain: H&E tissue is mostly pink/purple (eosin, haematoxylin); IHC is brown (DAB) on a blue
  counterstain - the H&E colour standard and stain-based fold test do not apply to it. A
  yellow cast also turns H&E brown, so a stain is named non-H&E only when the brightest
  pixels (glass, lumens) are neutral: a tinted background is a cast, for the colour check;
* coverage: ink or debris covering most of the stained area leaves too little tissue to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from quality.colourspace import hue_degrees, luminance, to_lab, value_saturation
from quality.config import JudgeableConfig

Stain = Literal["he", "non_he", "unknown"]


@dataclass(frozen=True)
class StainCheck:
    stain: Stain
    pink_share: float  # of coloured tissue pixels: eosin/haematoxylin hues
    brown_share: float  # of coloured tissue pixels: DAB-like hues

    @property
    def reason(self) -> str:
        return (f"{self.pink_share:.0%} of the stained tissue has H&E (pink/purple) hues and "
                f"{self.brown_share:.0%} brown (DAB) hues")


def brightfield(rgb: np.ndarray, config: JudgeableConfig) -> tuple[bool, float]:
    """(is brightfield, 99th percentile luminance)."""
    bright = float(np.percentile(luminance(rgb[::4, ::4]), 99)) if rgb.size else 0.0
    return bright >= config.min_bright_luminance, bright


def has_colour(rgb: np.ndarray, config: JudgeableConfig) -> tuple[bool, float]:
    """(has colour, 99th percentile saturation): a scanned stain is never this grey."""
    _, saturation = value_saturation(rgb[::4, ::4])
    level = float(np.percentile(saturation, 99)) if saturation.size else 0.0
    return level >= config.min_colour_saturation, level


def background_chroma(rgb: np.ndarray) -> float:
    """CIELAB chroma of the brightest 2% of pixels: ~0 on a white-balanced scan."""
    sub = rgb[::4, ::4].reshape(-1, 3)
    if len(sub) == 0:
        return 0.0
    light = luminance(sub)
    brightest = sub[light >= np.quantile(light, 0.98)]
    lab = to_lab(brightest.reshape(-1, 1, 3)).reshape(-1, 3)
    return float(np.hypot(lab[:, 1].mean(), lab[:, 2].mean()))


def stain_type(rgb: np.ndarray, tissue: np.ndarray, config: JudgeableConfig) -> StainCheck:
    hue = hue_degrees(rgb)[tissue]
    _, saturation = value_saturation(rgb)
    coloured = saturation[tissue] > 0.08
    n = int(coloured.sum())
    if n < 100:
        return StainCheck("unknown", 0.0, 0.0)
    hue = hue[coloured]
    pink = float(((hue >= 270) | (hue < 15)).sum() / n)
    brown = float(((hue >= 15) & (hue < 60)).sum() / n)
    he = pink >= config.min_he_hue_share and brown < config.max_brown_share
    if not he and background_chroma(rgb) > config.max_background_chroma:
        return StainCheck("unknown", pink, brown)  # tinted glass: a cast, judged as H&E
    return StainCheck("he" if he else "non_he", pink, brown)


def covered_share(tissue: np.ndarray, ink: np.ndarray) -> float:
    """Share of the stained area (tissue + ink) that ink covers."""
    stained = int((tissue | ink).sum())
    return float(ink.sum() / stained) if stained else 0.0
