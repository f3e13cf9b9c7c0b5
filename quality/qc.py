"""``run_qc``: the one entry point. Measures once (``measure``), then decides (``judge``) so
thresholds can be re-applied without recomputing (the evaluation does that).

Pipeline: overview (longer side <= ``overview_max_side``) -> tissue mask -> tissue tiles of
``tile_size`` level-0 px -> all of them or a sample -> per-tile sharpness and colour histogram
-> artefact detectors on the overview -> one ``CheckResult`` per check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import quality.blur as blur_mod
from quality.artefacts import Detection, Detector, Region
from quality.bubbles import BubbleDetector
from quality.colour import (
    ColourReference,
    ColourStats,
    conditional_entropy,
    empty_stats,
    hellinger_distance,
    load_reference,
    mean_delta_e,
    mutual_information,
    stats_of_lab,
)
from quality.config import QcConfig
from quality.folds import FoldDetector
from quality.judgeable import StainCheck, brightfield, covered_share, has_colour, stain_type
from quality.normalise import NormalisationMetrics, normalise
from quality.pen import PenDetector
from quality.report import CheckResult, QcReport, not_judged
from quality.sampling import Tile, select_tiles, tiles_with_tissue
from quality.standard import ColourProfile, ColourStandard, colour_profile, load_standard, sampled_lab
from quality.tissue import pixel_tissue, tissue_mask
from slide_io import ArraySlideSource, SlideSource, open_slide

ImageInput = np.ndarray | SlideSource | str | Path
SPARSE_FACTOR = 5  # when no tile is min_tile_fraction tissue, tiles with a fifth of that are judged


@dataclass
class QcMeasurements:
    width: int
    height: int
    mpp: float | None
    magnification: float | None
    mode: str
    overview: np.ndarray
    overview_scale: float
    tissue: np.ndarray
    grid_shape: tuple[int, int]
    tissue_tiles: list[Tile]
    judged_tiles: list[Tile]
    sharpness: list[blur_mod.TileSharpness]
    colour: ColourStats | None
    reference: ColourReference | None
    detections: dict[str, Detection]
    timings: dict[str, float] = field(default_factory=dict)
    profile: ColourProfile | None = None
    standard: ColourStandard | None = None
    brightness: float = 1.0  # 99th percentile luminance of the overview
    colourfulness: float = 1.0  # 99th percentile saturation of the overview
    stain: StainCheck = StainCheck("unknown", 0.0, 0.0)
    ink_cover: float = 0.0  # share of the stained area that ink covers

    @property
    def tissue_fraction(self) -> float:
        return float(self.tissue.mean())

    @property
    def overview_pixel_size(self) -> float | None:
        return overview_pixel_size(blur_mod.pixel_size(self.mpp, self.magnification), self.overview_scale)


def overview_pixel_size(level0_um: float | None, scale: float) -> float | None:
    """Microns per overview pixel, when the slide states its pixel size or magnification."""
    return level0_um / scale if level0_um else None


def fold_detector(config: QcConfig) -> Detector:
    if config.folds.detector == "learned":
        from quality.learned_folds import LearnedFoldDetector  # loads torch: only when asked for

        return LearnedFoldDetector(config.folds)
    return FoldDetector(config.folds)


def default_detectors(config: QcConfig) -> list[Detector]:
    detectors: list[Detector] = [fold_detector(config), BubbleDetector(config.bubbles)]
    if config.pen.enabled:
        detectors.append(PenDetector(config.pen))
    return detectors


def _as_source(image: ImageInput) -> tuple[SlideSource, bool]:
    if isinstance(image, SlideSource):
        return image, False
    if isinstance(image, np.ndarray):
        return ArraySlideSource(image), True
    return open_slide(image), True


def measure(
    image: ImageInput,
    config: QcConfig = QcConfig(),
    reference: ColourReference | None = None,
    detectors: list[Detector] | None = None,
    standard: ColourStandard | None = None,
) -> QcMeasurements:
    source, owned = _as_source(image)
    try:
        return _measure(source, config, reference, detectors, standard)
    finally:
        if owned:
            source.close()


def _measure(source: SlideSource, config: QcConfig, reference: ColourReference | None,
             detectors: list[Detector] | None, standard: ColourStandard | None = None) -> QcMeasurements:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    width, height = source.dimensions
    overview = source.thumbnail(config.overview_max_side)
    scale = overview.shape[1] / width
    magnification = source.effective_magnification()
    level0_um = blur_mod.pixel_size(source.mpp, magnification)
    overview_um = overview_pixel_size(level0_um, scale)  # detectors size look-alikes by it
    tissue = tissue_mask(overview, config.tissue)
    detectors = list(detectors) if detectors is not None else default_detectors(config)
    detections: dict[str, Detection] = {}
    ink_cover = 0.0
    pen = next((d for d in detectors if d.name == "pen_marks"), None)
    if pen is not None:  # ink is not tissue: it must not pass as tissue nor be judged for blur
        detections[pen.name] = pen.detect(overview, tissue, overview_um)
        ink_cover = covered_share(tissue, detections[pen.name].mask)
        tissue = tissue & ~detections[pen.name].mask
    _, brightness = brightfield(overview, config.judgeable)
    _, colourfulness = has_colour(overview, config.judgeable)
    stain = stain_type(overview, tissue, config.judgeable)
    timings["overview_and_tissue"] = time.perf_counter() - clock

    clock = time.perf_counter()
    grid, tissue_tiles = tiles_with_tissue(tissue, width, height, config.tile_size, config.tissue.min_tile_fraction)
    if not tissue_tiles:  # loose tissue (fat, mucus) fills no tile: judge the tiles it touches most
        grid, tissue_tiles = tiles_with_tissue(tissue, width, height, config.tile_size,
                                               config.tissue.min_tile_fraction / SPARSE_FACTOR)
    judged = select_tiles(tissue_tiles, config.sampling)
    if reference is None and config.colour.reference_path is not None:
        reference = load_reference(Path(config.colour.reference_path), config.colour, config.tissue)
    standard = _standard(config, standard) if config.colour.enabled else None
    sharpness: list[blur_mod.TileSharpness] = []
    colour = empty_stats(config.colour) if reference is not None else None
    profile = ColourProfile.empty() if config.colour.enabled else None
    for tile in judged:
        pixels = source.read_region(0, tile.x, tile.y, tile.width, tile.height)
        sharpness.append(blur_mod.tile_sharpness(pixels, config.blur, level0_um))  # judged at a standard size
        if colour is None and profile is None:
            continue
        mask = pixel_tissue(pixels, config.tissue) & _overview_window(tissue, tile, scale, pixels.shape[:2])
        lab, keep = sampled_lab(pixels, mask, config.colour.pixel_stride)  # one Lab conversion for both
        if colour is not None:
            colour = colour.merged(stats_of_lab(lab[keep], config.colour))
        if profile is not None:
            profile = profile + ColourProfile.from_lab(lab, keep)
    timings["tiles"] = time.perf_counter() - clock

    for detector in detectors:
        if detector.name in detections:
            continue
        clock = time.perf_counter()
        detections[detector.name] = detector.detect(overview, tissue, overview_um)
        timings[detector.name] = time.perf_counter() - clock
    return QcMeasurements(width, height, source.mpp, magnification, config.sampling.mode,
                          overview, scale, tissue, grid, tissue_tiles, judged, sharpness, colour, reference,
                          detections, timings, profile, standard, brightness, colourfulness, stain, ink_cover)


def _standard(config: QcConfig, given: ColourStandard | None = None) -> ColourStandard | None:
    """``given`` (e.g. the lab's learning standard, quality.lab_standard) else the configured file."""
    if config.colour.metric != "standard_distance":
        return None
    if given is not None:
        return given
    path = config.colour.standard_path
    return load_standard(Path(path)) if path is not None else load_standard()


# --- decisions ------------------------------------------------------------------------------


def judge_tissue(m: QcMeasurements, config: QcConfig) -> CheckResult:
    """Enough judgeable tissue: a brightfield colour scan with tissue that ink does not bury.
    Every refusal says why, and the other checks are then not judged (see ``not_judgeable``)."""
    c = config.tissue
    fraction = m.tissue_fraction
    details = {"tissue_tiles": len(m.tissue_tiles), "brightness_p99": m.brightness, "saturation_p99": m.colourfulness,
               "ink_cover": m.ink_cover, "stain": m.stain.stain, "he_hue_share": m.stain.pink_share,
               "brown_share": m.stain.brown_share}
    why = not_judgeable(m, config)
    if why is not None:
        return CheckResult("tissue", fraction, c.min_slide_fraction, not c.fail_without_tissue and
                           why.startswith("no tissue"), why if why.startswith("no tissue") else f"not judgeable: {why}",
                           details=details)
    reason = f"tissue covers {fraction:.1%} of the slide ({len(m.tissue_tiles)} tiles of {config.tile_size} px)"
    if m.ink_cover > 0:
        reason += f"; ink covers {m.ink_cover:.1%} of the stained area"
    return CheckResult("tissue", fraction, c.min_slide_fraction, True, reason, details=details)


def not_judgeable(m: QcMeasurements, config: QcConfig) -> str | None:
    """Why this image cannot be judged as a brightfield H&E-like slide, or None."""
    j = config.judgeable
    if m.brightness < j.min_bright_luminance:
        return (f"not a brightfield scan: its brightest pixels reach only {m.brightness:.0%} luminance "
                "(a fluorescence scan, or a 16-bit image using only its low bits?)")
    if m.ink_cover > j.max_covered_share:
        return (f"ink or debris covers {m.ink_cover:.0%} of the stained area (at most "
                f"{j.max_covered_share:.0%}); the tissue left, {m.tissue_fraction:.1%} of the slide, is too little to judge")
    if m.tissue_fraction < config.tissue.min_slide_fraction:
        ink = f"; ink covers {m.ink_cover:.0%} of what is stained" if m.ink_cover > 0.05 else ""
        return (f"no tissue found: {m.tissue_fraction:.2%} of the slide, below {config.tissue.min_slide_fraction:.1%} "
                f"(empty glass or missed scan area){ink}")
    if not m.judged_tiles:
        return (f"the tissue ({m.tissue_fraction:.1%} of the slide) is too sparse: no {config.tile_size}-px tile is "
                f"{config.tissue.min_tile_fraction / SPARSE_FACTOR:.0%} tissue, so neither focus nor colour can be judged")
    if m.colourfulness < j.min_colour_saturation:
        return (f"the image has no colour (99th percentile saturation {m.colourfulness:.2f}): a greyscale scan "
                "cannot show stain, casts or ink")
    return None


def judge_blur(m: QcMeasurements, config: QcConfig) -> CheckResult:
    c = config.blur
    if not m.judged_tiles:
        return not_judged("blur", "no tile has enough tissue")
    # Only tiles with nuclei or coarse texture can show focus; the rest count neither way.
    judgeable = np.array([blur_mod.focus_judgeable(s, c) for s in m.sharpness], bool)
    if not judgeable.any():
        return not_judged("blur", f"none of the {len(m.sharpness)} tissue tiles has structure that shows focus "
                                  "(no nuclei, no coarse texture: fat, mucus, lumen or sparse stroma)")
    pixel_size = blur_mod.pixel_size(m.mpp, m.magnification)
    threshold = c.min_sharpness_at(pixel_size)
    all_values = np.array([s.get(c.metric) for s in m.sharpness])
    values = all_values[judgeable]
    flags = judgeable & (all_values < threshold)
    fraction = blur_mod.blurred_fraction(values, threshold)
    sharp_map = blur_mod.blur_map(m.grid_shape, [(t.row, t.col) for t, j in zip(m.judged_tiles, judgeable) if j],
                                  values)
    regions = _tile_group_regions(m, flags)
    blurred = int(flags.sum())
    passed = fraction <= c.max_blurred_fraction
    skipped = len(all_values) - len(values)
    left_out = f"; {skipped} tile(s) without structure to show focus left out" if skipped else ""
    judged_at = max(pixel_size, c.reference_mpp) if pixel_size and c.resample else pixel_size
    scale = f", at {judged_at:.3g} um/px" if judged_at else ", pixel size unknown"
    reason = (f"{blurred} of {len(values)} judged tissue tiles ({fraction:.0%}) are blurred "
              f"({c.metric.replace('_', ' ')} < {threshold:.3g}{scale}); at most {c.max_blurred_fraction:.0%} allowed"
              f"{left_out}")
    details = {"metric": c.metric, "tile_threshold": threshold, "pixel_size_um": pixel_size,
               "judged_at_um": judged_at,
               "median_sharpness": float(np.median(values)),
               "blurred_tiles": blurred, "judged_tiles": len(values), "not_focus_judgeable_tiles": skipped}
    for name in blur_mod.METRICS:
        details[f"median_{name}"] = float(np.median([s.get(name) for s, j in zip(m.sharpness, judgeable) if j]))
    result = CheckResult("blur", fraction, c.max_blurred_fraction, passed, reason, len(regions), details=details,
                         regions=regions)
    result.details["map_shape"] = list(sharp_map.shape)
    return result


def judge_colour(m: QcMeasurements, config: QcConfig) -> CheckResult:
    c = config.colour
    if not c.enabled:
        return not_judged("colour_cast", "colour check disabled")
    if m.stain.stain == "non_he":
        return not_judged("colour_cast", f"not an H&E stain ({m.stain.reason}); the H&E colour standard does not apply")
    if c.metric == "standard_distance":
        return _judge_against_standard(m, config)
    return _judge_against_image(m, config)


def _judge_against_standard(m: QcMeasurements, config: QcConfig) -> CheckResult:
    c = config.colour
    if m.standard is None or m.profile is None or m.profile.tissue_pixels == 0:
        return not_judged("colour_cast", "no tissue pixels to compare")
    descriptor = m.profile.descriptor()
    score = m.standard.score(descriptor)
    deviations = m.standard.contributions(descriptor)
    worst = max(deviations, key=lambda k: abs(deviations[k]))
    passed = score <= c.max_standard_distance
    verdict = "within" if passed else "beyond"
    reason = (f"colour distance to the standard '{m.standard.name}' is {score:.2f} (1 = the edge of normal variation "
              f"between labs), {verdict} the limit {c.max_standard_distance:.2f}; largest deviation: {worst} "
              f"{deviations[worst]:+.1f} SD")
    details: dict[str, object] = {"standard": m.standard.name, "mahalanobis": m.standard.distance(descriptor),
                                  "descriptor": [float(v) for v in descriptor], "deviations_sd": deviations}
    if m.reference is not None and m.colour is not None and m.colour.pixels:
        details.update(_image_metrics(m))
    return CheckResult("colour_cast", score, c.max_standard_distance, passed, reason, details=details)


def _image_metrics(m: QcMeasurements) -> dict[str, object]:
    assert m.reference is not None and m.colour is not None
    return {"mutual_information_bits": mutual_information(m.colour.histogram, m.reference.stats.histogram),
            "conditional_entropy_bits": conditional_entropy(m.colour.histogram, m.reference.stats.histogram),
            "histogram_distance": hellinger_distance(m.colour.histogram, m.reference.stats.histogram),
            "delta_e": mean_delta_e(m.colour, m.reference.stats), "reference": m.reference.name}


def _judge_against_image(m: QcMeasurements, config: QcConfig) -> CheckResult:
    c = config.colour
    if m.reference is None or m.colour is None:
        return not_judged("colour_cast", f"metric {c.metric} needs a standard (reference) image")
    if m.colour.pixels == 0:
        return not_judged("colour_cast", "no tissue pixels to compare")
    details = _image_metrics(m)
    if c.metric == "mutual_information":
        score, threshold = details["mutual_information_bits"], c.max_mutual_information
        label = "mutual information I(slide; colour)"
    else:
        score, threshold, label = details["histogram_distance"], c.max_histogram_distance, "Hellinger distance"
    assert isinstance(score, float)
    passed = score <= threshold
    shift = m.colour.lab_mean - m.reference.stats.lab_mean
    verdict = "within" if passed else "beyond"
    unit = " bits" if c.metric == "mutual_information" else ""
    reason = (f"{label} to the standard image is {score:.3f}{unit}, {verdict} the limit {threshold:.3f}; "
              f"mean colour shift dL={shift[0]:+.1f} da={shift[1]:+.1f} db={shift[2]:+.1f} (dE {details['delta_e']:.1f})")
    return CheckResult("colour_cast", score, threshold, passed, reason, details=details)


def judge_folds(m: QcMeasurements, config: QcConfig) -> CheckResult:
    if m.stain.stain == "non_he" and not config.folds.judge_non_he:
        return not_judged("folds", f"not an H&E stain ({m.stain.reason}); the two-stain fold test does not apply")
    return _judge_area("folds", m, config.folds.max_area_fraction, "tissue folds (doubled tissue density)")


def judge_pen(m: QcMeasurements, config: QcConfig) -> CheckResult:
    if "pen_marks" not in m.detections:
        return not_judged("pen_marks", "pen detection disabled", affects_verdict=False)
    detection = m.detections["pen_marks"]
    fraction = detection.area_px / m.tissue.size
    c = config.pen
    regions = [r.scaled(1 / m.overview_scale) for r in detection.regions]
    passed = fraction <= c.max_area_fraction
    reason = (f"ink covers {fraction:.2%} of the slide in {len(regions)} region(s); "
              f"at most {c.max_area_fraction:.2%} allowed")
    return CheckResult("pen_marks", fraction, c.max_area_fraction, passed, reason, len(regions),
                       affects_verdict=c.affects_verdict, regions=regions)


def judge_bubbles(m: QcMeasurements, config: QcConfig) -> CheckResult:
    detection = m.detections.get("bubbles")
    if detection is None:
        return not_judged("bubbles", "no bubble detector")
    regions = [r.scaled(1 / m.overview_scale) for r in detection.regions]
    count = len(regions)
    c = config.bubbles
    passed = count <= c.max_count
    covered = (detection.mask & m.tissue).sum() / max(1, m.tissue.sum())
    reason = (f"{count} air bubble(s) found, covering {covered:.1%} of the tissue; at most {c.max_count} allowed")
    return CheckResult("bubbles", float(count), float(c.max_count), passed, reason, count,
                       details={"tissue_covered": float(covered)}, regions=regions)


def _judge_area(name: str, m: QcMeasurements, max_fraction: float, what: str) -> CheckResult:
    detection = m.detections.get(name)
    if detection is None:
        return not_judged(name, f"no {name} detector")
    tissue_px = max(1, int(m.tissue.sum()))
    fraction = float((detection.mask & m.tissue).sum() / tissue_px)
    regions = [r.scaled(1 / m.overview_scale) for r in detection.regions]
    passed = fraction <= max_fraction
    reason = (f"{what} cover {fraction:.1%} of the tissue in {len(regions)} region(s); "
              f"at most {max_fraction:.1%} allowed")
    return CheckResult(name, fraction, max_fraction, passed, reason, len(regions), regions=regions)


def _tile_group_regions(m: QcMeasurements, flags: np.ndarray) -> list[Region]:
    """One box per 8-connected group of flagged tiles, in level-0 pixels."""
    from scipy import ndimage as ndi

    grid = np.zeros(m.grid_shape, bool)
    boxes: dict[tuple[int, int], Tile] = {}
    for tile, flagged in zip(m.judged_tiles, flags):
        if flagged:
            grid[tile.row, tile.col] = True
            boxes[(tile.row, tile.col)] = tile
    labels, count = ndi.label(grid, structure=np.ones((3, 3)))
    regions = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        members = [boxes[(r, c)] for r in range(box[0].start, box[0].stop) for c in range(box[1].start, box[1].stop)
                   if labels[r, c] == index]
        x0, y0 = min(t.x for t in members), min(t.y for t in members)
        x1, y1 = max(t.x + t.width for t in members), max(t.y + t.height for t in members)
        regions.append(Region(x0, y0, x1 - x0, y1 - y0, sum(t.width * t.height for t in members), 1.0))
    return regions


def judge(m: QcMeasurements, config: QcConfig = QcConfig()) -> QcReport:
    tissue = judge_tissue(m, config)
    problem = not_judgeable(m, config)
    if problem is not None:
        why = ("no tissue on the slide (empty glass is not judged)" if problem.startswith("no tissue")
               else "the slide is not judgeable (see the tissue check)")
        checks = [tissue, not_judged("colour_cast", why), not_judged("blur", why), not_judged("bubbles", why),
                  not_judged("folds", why), not_judged("pen_marks", why, affects_verdict=False)]
    else:
        checks = [tissue, judge_colour(m, config), judge_blur(m, config), judge_bubbles(m, config),
                  judge_folds(m, config), judge_pen(m, config)]
    masks = {name: d.mask for name, d in m.detections.items() if d.mask.any()}
    blur = next(c for c in checks if c.name == "blur")
    if blur.judged and blur.regions:
        masks["blur"] = _regions_mask(m, blur.regions)
    return QcReport(checks, m.width, m.height, m.mpp, m.magnification, m.mode, m.tissue_fraction,
                    len(m.tissue_tiles), len(m.judged_tiles), dict(m.timings), overview=m.overview,
                    overview_scale=m.overview_scale, overlay_masks=masks, tissue=m.tissue)


def _regions_mask(m: QcMeasurements, regions: list[Region]) -> np.ndarray:
    mask = np.zeros(m.tissue.shape, bool)
    s = m.overview_scale
    for r in regions:
        mask[int(r.y * s): int(np.ceil((r.y + r.height) * s)), int(r.x * s): int(np.ceil((r.x + r.width) * s))] = True
    return mask & m.tissue


def run_qc(
    image: ImageInput,
    config: QcConfig = QcConfig(),
    reference: ColourReference | None = None,
    detectors: list[Detector] | None = None,
    standard: ColourStandard | None = None,
) -> QcReport:
    """Quality-check a slide (array, ``SlideSource`` or path) and, when configured, normalise
    its colour toward the standard (``report.normalised`` then holds the corrected level 0).
    ``standard``: the colour standard to judge against instead of ``config.colour.standard_path``'s."""
    source, owned = _as_source(image)
    try:
        started = time.perf_counter()
        m = _measure(source, config, reference, detectors, standard)
        report = judge(m, config)
        if config.normalise.enabled and m.reference is not None and not_judgeable(m, config) is None:
            _apply_normalisation(source, m, report, config)
        report.timings["total"] = time.perf_counter() - started
        return report
    finally:
        if owned:
            source.close()


def _apply_normalisation(source: SlideSource, m: QcMeasurements, report: QcReport, config: QcConfig) -> None:
    clock = time.perf_counter()
    assert m.reference is not None
    pixels = source.read_level(0)
    full_tissue = _upsample_mask(m.tissue, pixels.shape[:2])
    corrected, metrics = normalise(pixels, m.reference.pixels, m.reference.stats, config.normalise.method,
                                   config.colour, config.tissue, tissue=full_tissue)
    report.normalised = corrected
    report.normalisation = metrics.as_dict()
    report.timings["normalisation"] = time.perf_counter() - clock
    colour_check = report.check("colour_cast")
    if colour_check.judged and not colour_check.passed and config.normalise.fixes_colour_cast:
        after = colour_score_after(corrected, metrics, config, m.standard, full_tissue)
        if after <= colour_check.threshold:
            colour_check.passed = True
            colour_check.reason = (f"colour cast corrected by {metrics.method} normalisation: "
                                   f"{colour_check.score:.3f} -> {after:.3f} (limit {colour_check.threshold:.3f}); "
                                   + colour_check.reason)
            colour_check.details["corrected"] = True


def colour_score_after(corrected: np.ndarray, metrics: NormalisationMetrics, config: QcConfig,
                       standard: ColourStandard | None = None, tissue: np.ndarray | None = None) -> float:
    """The colour check's score after normalisation, in the configured metric's units."""
    c = config.colour
    if c.metric == "mutual_information":
        return metrics.mutual_information_after
    if c.metric == "histogram_distance":
        return metrics.histogram_distance_after
    standard = standard if standard is not None else _standard(config)
    assert standard is not None
    tissue = tissue_mask(corrected, config.tissue) if tissue is None else tissue
    return standard.score(colour_profile(corrected, tissue, c.pixel_stride).descriptor())


def _overview_window(mask: np.ndarray, tile: Tile, scale: float, shape: tuple[int, int]) -> np.ndarray:
    """The overview mask under ``tile``, blown up (nearest) to the tile's ``shape``."""
    rows = ((tile.y + np.arange(shape[0]) + 0.5) * scale).astype(int).clip(0, mask.shape[0] - 1)
    cols = ((tile.x + np.arange(shape[1]) + 0.5) * scale).astype(int).clip(0, mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def _upsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(shape[0]) * mask.shape[0] // shape[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // shape[1]).clip(0, mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]
