"""The colour standard as a distribution of accepted slides, not one image.

Every slide is summarised by a small colour *descriptor* (``DESCRIPTOR_NAMES``): the mean
CIELAB colour of its tissue, the chromaticity (a*, b*) of its darkest and lightest fifth of
tissue pixels (haematoxylin-rich and eosin/pale ends of the stain), and the chromaticity of
its brightest 2% of pixels (glass, lumens, fat). Stain batches move the first seven together
along the H&E directions; a scanner cast moves every colour the same way, and most visibly the
brightest pixels, which should be neutral whatever the stain.

The standard is the mean and covariance of accepted slides' descriptors; a slide's score is its
Mahalanobis distance to them divided by ``scale`` - the distance that 99% of slides from a
*laboratory the standard was not built from* stay within (leave-one-source-out). A score of
1.0 is therefore the edge of normal variation between labs, whatever the standard was built
from. ``updated`` folds in a slide that passed (bounded memory, so the standard follows slow
drift but one slide cannot move it far); ``save``/``load`` persist it as a few-KB JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from quality.colourspace import to_lab

L_BINS = 101  # 1 L* unit per bin: quantiles to the unit, and profiles stay mergeable by addition
DARK_SHARE = LIGHT_SHARE = 0.2
BRIGHT_SHARE = 0.02
SHRINKAGE = 0.1  # toward the diagonal: a handful of labs cannot pin down every correlation
DESCRIPTOR_NAMES = ("L_mean", "a_mean", "b_mean", "a_dark", "b_dark", "a_light", "b_light", "a_bright", "b_bright")
SHIPPED = Path(__file__).resolve().parent / "standards" / "he_default.json"


@dataclass(frozen=True)
class ColourProfile:
    """Per-L* bin counts and sums of (L*, a*, b*) for tissue pixels and for all pixels.
    Adding two profiles gives the profile of both images, so tiles are summed as they are read."""

    bins: np.ndarray  # (2, L_BINS, 4): [tissue | all] x L* bin x (count, sum L, sum a, sum b)

    @classmethod
    def empty(cls) -> ColourProfile:
        return cls(np.zeros((2, L_BINS, 4)))

    @classmethod
    def from_lab(cls, lab: np.ndarray, tissue: np.ndarray) -> ColourProfile:
        """``lab``: (N, 3) pixels; ``tissue``: (N,) bool."""
        bins = np.zeros((2, L_BINS, 4))
        index = np.clip(np.rint(lab[:, 0]), 0, L_BINS - 1).astype(np.intp)
        for row, keep in enumerate((tissue, np.ones(len(lab), bool))):
            for col, values in enumerate((None, lab[:, 0], lab[:, 1], lab[:, 2])):
                weights = keep.astype(float) if values is None else np.where(keep, values, 0.0)
                bins[row, :, col] = np.bincount(index, weights=weights, minlength=L_BINS)
        return cls(bins)

    def __add__(self, other: ColourProfile) -> ColourProfile:
        return ColourProfile(self.bins + other.bins)

    @property
    def tissue_pixels(self) -> int:
        return int(self.bins[0, :, 0].sum())

    def descriptor(self) -> np.ndarray:
        """The 9 numbers of ``DESCRIPTOR_NAMES`` (NaN where there is no tissue)."""
        tissue, every = self.bins
        if tissue[:, 0].sum() == 0:
            return np.full(len(DESCRIPTOR_NAMES), np.nan)
        mean = tissue[:, 1:].sum(axis=0) / tissue[:, 0].sum()
        dark = _share_mean(tissue, DARK_SHARE, from_top=False)
        light = _share_mean(tissue, LIGHT_SHARE, from_top=True)
        bright = _share_mean(every, BRIGHT_SHARE, from_top=True)
        return np.array([*mean, *dark[1:], *light[1:], *bright[1:]])


def _share_mean(bins: np.ndarray, share: float, *, from_top: bool) -> np.ndarray:
    """Mean (L, a, b) of the darkest (or lightest) ``share`` of pixels; a bin that straddles
    the cut counts with the fraction of it that falls inside."""
    ordered = bins[::-1] if from_top else bins
    counts = ordered[:, 0]
    wanted = share * counts.sum()
    before = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    taken = np.clip(wanted - before, 0.0, counts)
    fraction = np.divide(taken, counts, out=np.zeros_like(counts), where=counts > 0)
    return (ordered[:, 1:] * fraction[:, None]).sum(axis=0) / max(taken.sum(), 1e-9)


@dataclass(frozen=True)
class ColourStandard:
    """Mean and covariance of accepted slides' descriptors, and the calibrated scale."""

    mean: np.ndarray
    covariance: np.ndarray
    count: float  # slides folded in (capped by ``updated``'s memory)
    scale: float  # Mahalanobis distance that 99% of unseen labs' clean slides stay within
    name: str = "he_default"
    sources: tuple[str, ...] = ()

    def distance(self, descriptor: np.ndarray) -> float:
        """Mahalanobis distance of one descriptor to the standard (uncalibrated)."""
        return float(mahalanobis(self.mean, self.covariance, np.asarray(descriptor)[None])[0])

    def score(self, descriptor: np.ndarray) -> float:
        """Calibrated distance: 1.0 = the edge of normal variation between laboratories."""
        return self.distance(descriptor) / self.scale

    def contributions(self, descriptor: np.ndarray) -> dict[str, float]:
        """Each descriptor entry's deviation in standard deviations: says *what* is off."""
        sd = np.sqrt(np.diag(self.covariance))
        return {n: float(v) for n, v in zip(DESCRIPTOR_NAMES, (np.asarray(descriptor) - self.mean) / sd)}

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "descriptor": list(DESCRIPTOR_NAMES), "mean": self.mean.tolist(),
                "covariance": self.covariance.tolist(), "count": self.count, "scale": self.scale,
                "sources": list(self.sources)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ColourStandard:
        if list(data.get("descriptor", [])) != list(DESCRIPTOR_NAMES):  # type: ignore[call-overload]
            raise ValueError("colour standard was built for another descriptor; rebuild it")
        mean = np.asarray(data["mean"], float)
        covariance = np.asarray(data["covariance"], float)
        if mean.shape != (len(DESCRIPTOR_NAMES),) or covariance.shape != (len(mean), len(mean)):
            raise ValueError("colour standard has the wrong shape")
        return cls(mean, covariance, float(data["count"]), float(data["scale"]),  # type: ignore[arg-type]
                   str(data.get("name", "standard")), tuple(data.get("sources", ())))  # type: ignore[arg-type]


def mahalanobis(mean: np.ndarray, covariance: np.ndarray, points: np.ndarray) -> np.ndarray:
    shrunk = (1 - SHRINKAGE) * covariance + SHRINKAGE * np.diag(np.diag(covariance))
    diff = points - mean
    return np.sqrt(np.einsum("ni,ij,nj->n", diff, np.linalg.inv(shrunk), diff))


def build(descriptors: np.ndarray, sources: Sequence[str], quantile: float = 0.99,
          name: str = "he_default") -> ColourStandard:
    """The standard of ``descriptors`` (one row per accepted slide; ``sources[i]`` names its
    lab / data set). The scale is calibrated leave-one-source-out: each source is scored
    against a standard built without it, and ``scale`` is the ``quantile`` of those distances -
    how far a lab the standard has never seen lies from it."""
    descriptors = np.asarray(descriptors, float)
    labels = np.asarray(sources)
    keep = np.isfinite(descriptors).all(axis=1)
    descriptors, labels = descriptors[keep], labels[keep]
    names = sorted(set(labels.tolist()))
    if len(names) < 2:
        raise ValueError("calibration needs slides from at least two sources (labs or data sets)")
    held_out = []
    for source in names:
        inside = labels != source
        held_out.append(mahalanobis(descriptors[inside].mean(axis=0), np.cov(descriptors[inside].T),
                                    descriptors[~inside]))
    scale = float(np.quantile(np.concatenate(held_out), quantile))
    return ColourStandard(descriptors.mean(axis=0), np.cov(descriptors.T), float(len(descriptors)), scale, name,
                          tuple(names))


def updated(standard: ColourStandard, descriptor: np.ndarray, memory: int = 1000) -> ColourStandard:
    """The standard with one more accepted slide folded in (Welford's update). Beyond ``memory``
    slides each new one weighs 1/memory, so the standard follows slow drift between batches
    but no single slide - nor a run of them - can pull it far. Returns ``standard`` unchanged
    for a descriptor with NaNs (no tissue)."""
    x = np.asarray(descriptor, float)
    if not np.isfinite(x).all():
        return standard
    n = min(standard.count, memory - 1.0) + 1.0
    weight = 1.0 / n
    delta = x - standard.mean
    mean = standard.mean + weight * delta
    covariance = (1 - weight) * (standard.covariance + weight * np.outer(delta, delta))
    return ColourStandard(mean, covariance, n, standard.scale, standard.name, standard.sources)


def save_standard(standard: ColourStandard, path: Path) -> None:
    Path(path).write_text(json.dumps(standard.to_dict(), indent=1) + "\n")


@lru_cache(maxsize=8)
def load_standard(path: Path = SHIPPED) -> ColourStandard:
    """A persisted standard (cached: one file serves every slide)."""
    return ColourStandard.from_dict(json.loads(Path(path).read_text()))


def profiles_to_descriptors(profiles: Iterable[ColourProfile]) -> np.ndarray:
    return np.array([p.descriptor() for p in profiles])


def colour_profile(rgb: np.ndarray, tissue: np.ndarray, stride: int = 4) -> ColourProfile:
    """Profile of every ``stride``-th pixel of ``rgb``; ``tissue`` (same shape) marks tissue."""
    lab, keep = sampled_lab(rgb, tissue, stride)
    return ColourProfile.from_lab(lab, keep)


def sampled_lab(rgb: np.ndarray, tissue: np.ndarray, stride: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) Lab of every ``stride``-th pixel and (N,) its tissue flag: one conversion serves
    the profile and the reference-image histogram."""
    sub = rgb[::stride, ::stride]
    lab = to_lab(sub.reshape(-1, 1, 3)).reshape(-1, 3) if sub.size else np.zeros((0, 3), np.float32)
    return lab, tissue[::stride, ::stride].ravel()
