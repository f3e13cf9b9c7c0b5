"""What QC does with one scan, as plain functions over files (no Kafka, no S3): open it,
judge it, build the LR slide, optionally normalise its colour, write the LR pyramidal TIFF.

The QC agent (agents/qc.py) downloads the scan, calls ``process_scan`` in a worker thread and
turns the ``ScanVerdict`` into an event. Every refusal is a ``ScanVerdict`` with a failure kind
(``schemas.common.QcFailureKind``) and a readable reason, never an exception.

Order: the scan is judged first (at its native resolution by default: the QC thresholds were
tuned there and defocus is still visible; an 8x downsample hides it), and the LR is built only
for a scan that passed, so nothing is computed for a slide that will not be stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from quality import QcConfig, QcReport, load_reference, run_qc
from quality.colour import ColourReference
from quality.lab_standard import LabStandard, LabStandardError
from quality.normalise import normalise
from quality.qc import colour_score_after
from quality.standard import ColourStandard
from schemas.common import QcCheckName, QcFailureKind
from schemas.events import QcCheck
from slide_io import (
    DEFAULT_LIMITS,
    ArraySlideSource,
    AvifSettings,
    Compression,
    LrImage,
    PixelLimits,
    SlideError,
    SlideSource,
    UnsupportedFormat,
    downsample_to_magnification,
    open_slide,
    write_pyramid,
)
from slide_io.source import MICRONS_AT_1X

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PipelineOptions:
    lr_magnification: float
    qc: QcConfig = QcConfig()
    judge: Literal["scan", "lr"] = "scan"
    normalise: bool = False
    compression: Compression = Compression.AVIF  # settings.qc.lr_compression's default
    avif: AvifSettings = AvifSettings()  # used when compression is AVIF
    limits: PixelLimits = DEFAULT_LIMITS
    # The lab's learning colour standard (qc.service builds it from settings.qc); None: judge
    # against qc.colour.standard_path (or the shipped one), and learn nothing.
    lab_standard: LabStandard | None = None

    def reference(self) -> ColourReference | None:
        path = self.qc.colour.reference_path
        return _cached_reference(Path(path), self.qc) if path else None

    def colour_standard(self) -> ColourStandard | None:
        """The lab standard as it stands now, when slides are judged against a standard."""
        colour = self.qc.colour
        if self.lab_standard is None or not colour.enabled or colour.metric != "standard_distance":
            return None
        return self.lab_standard.current()


_REFERENCES: dict[tuple[str, str], ColourReference] = {}


def _cached_reference(path: Path, config: QcConfig) -> ColourReference:
    # Loading the standard image costs more than judging a small slide; load it once.
    key = (str(path), config.model_dump_json(include={"colour", "tissue"}))
    if key not in _REFERENCES:
        _REFERENCES[key] = load_reference(path, config.colour, config.tissue)
    return _REFERENCES[key]


@dataclass
class ScanVerdict:
    """The outcome for one scan: passed (with the LR written to ``lr_path``) or failed."""

    passed: bool
    reason: str
    checks: list[QcCheck] = field(default_factory=list)
    failure: QcFailureKind | None = None
    report: QcReport | None = None
    lr_path: Path | None = None
    width: int = 0
    height: int = 0
    magnification: float | None = None
    mpp: float | None = None
    downsample: float = 1.0  # LR relative to the scan's level 0; > 1: the scan is an HR candidate
    corrected: bool = False
    normalisation: dict[str, Any] | None = None

    @property
    def hr_candidate(self) -> bool:
        return self.passed and self.downsample > 1.0

    def report_json(self) -> str:
        """The QC report (or the refusal) as JSON, for the ingest bucket."""
        document: dict[str, Any] = {"passed": self.passed, "reason": self.reason,
                                    "failure": self.failure.value if self.failure else None}
        if self.report is not None:
            document["qc"] = self.report.to_dict()
        if self.passed:
            document["lr"] = {"width": self.width, "height": self.height, "magnification": self.magnification,
                              "mpp": self.mpp, "downsample": self.downsample, "corrected": self.corrected,
                              "normalisation": self.normalisation}
        return json.dumps(_finite_only(document), indent=1, allow_nan=False, default=str)


def _finite_only(value: Any) -> Any:
    """NaN and infinities (e.g. a metric over zero pixels) become null: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_only(v) for v in value]
    return value


def refused(kind: QcFailureKind, reason: str, *, readable_check: bool = True) -> ScanVerdict:
    """A scan that could not be judged; the failed ``readable`` check carries the reason."""
    checks = [QcCheck(name=QcCheckName.READABLE, score=0.0, threshold=1.0, passed=False, reason=reason[:4096])]
    return ScanVerdict(False, reason, checks if readable_check else [], failure=kind)


class _WithResolution(SlideSource):
    """A source with the magnification/mpp the scanner declared, where the file states none,
    so QC thresholds that depend on the pixel size see the right one."""

    def __init__(self, inner: SlideSource, magnification: float, mpp: float) -> None:
        self._inner, self._mag, self._mpp = inner, magnification, mpp
        self.name, self.format, self.limits = inner.name, inner.format, inner.limits

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self._inner.level_dimensions

    @property
    def level_downsamples(self) -> list[float]:
        return self._inner.level_downsamples

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._inner._read(level, x, y, width, height)  # noqa: SLF001 - same-interface delegation


def _resolution(source: SlideSource, magnification: float | None, mpp: float | None) -> tuple[float, float]:
    """(magnification, mpp) of level 0: the file's statement first, then the scanner's."""
    mag = source.magnification or magnification
    pixel = source.mpp or mpp
    if not mag and pixel:
        mag = MICRONS_AT_1X / pixel
    if not pixel and mag:
        pixel = MICRONS_AT_1X / mag
    if not mag or not pixel:
        raise UnsupportedFormat("the scan states neither its magnification nor its pixel size, and the "
                                "scanner declared none (slidestream ingest --magnification)", name=source.name)
    return float(mag), float(pixel)


def _describe(source: SlideSource, magnification: float) -> str:
    width, height = source.dimensions
    return (f"{source.format} scan {width}x{height} px, {source.level_count} level(s), "
            f"{magnification:g}x")


def _qc_config(options: PipelineOptions) -> QcConfig:
    # Normalisation is applied to the LR here, not by run_qc to whatever it judged (the scan).
    return options.qc.model_copy(update={"normalise": options.qc.normalise.model_copy(update={"enabled": False})})


def _normalise_lr(lr: LrImage, verdict: ScanVerdict, report: QcReport, options: PipelineOptions,
                  standard: ColourStandard | None) -> np.ndarray:
    reference = options.reference()
    if reference is None:
        return lr.pixels
    config = options.qc
    corrected, metrics = normalise(lr.pixels, reference.pixels, reference.stats, config.normalise.method,
                                   config.colour, config.tissue)
    verdict.corrected = True
    verdict.normalisation = metrics.as_dict()
    colour = report.check(QcCheckName.COLOUR_CAST.value)
    if colour.judged and not colour.passed and config.normalise.fixes_colour_cast:
        after = colour_score_after(corrected, metrics, config, standard)
        if after <= colour.threshold:
            colour.passed = True
            colour.details["corrected"] = True
            colour.reason = (f"colour cast corrected by {metrics.method} normalisation: {colour.score:.3f} -> "
                             f"{after:.3f} (limit {colour.threshold:.3f}); {colour.reason}")
    return corrected


def process_scan(path: Path, options: PipelineOptions, lr_path: Path, *, magnification: float | None = None,
                 mpp: float | None = None) -> ScanVerdict:
    """Judge the scan at ``path`` and, if it passes, write its LR pyramidal TIFF to ``lr_path``.

    ``magnification`` / ``mpp``: what the scanner declared (used where the file states none).
    Blocking and CPU-heavy: the agent runs it in a worker thread.
    """
    try:
        with open_slide(path, limits=options.limits) as source:
            return _process(source, options, lr_path, magnification, mpp)
    except SlideError as exc:
        return refused(QcFailureKind(exc.kind), str(exc))
    except MemoryError:
        return refused(QcFailureKind.TOO_LARGE, "not enough memory to process this scan")


def _process(source: SlideSource, options: PipelineOptions, lr_path: Path, magnification: float | None,
             mpp: float | None) -> ScanVerdict:
    mag, pixel = _resolution(source, magnification, mpp)
    if source.magnification is None or source.mpp is None:
        source = _WithResolution(source, mag, pixel)
    readable = QcCheck(name=QcCheckName.READABLE, score=1.0, threshold=1.0, passed=True,
                       reason=_describe(source, mag))
    lr: LrImage | None = None
    if options.judge == "lr":
        lr = downsample_to_magnification(source, options.lr_magnification, source_magnification=mag,
                                         limits=options.limits)
        judged: SlideSource = ArraySlideSource(lr.pixels, mpp=lr.mpp, magnification=lr.magnification,
                                               name=source.name)
    else:
        judged = source
    standard = options.colour_standard()  # read once: the slide is judged and re-scored against one version
    report = run_qc(judged, _qc_config(options), reference=options.reference(), standard=standard)
    verdict = ScanVerdict(False, "", [readable], report=report)
    if not report.passed and not _fixable_by_normalisation(report, options):
        return _quality_failure(verdict, report)
    if lr is None:
        lr = downsample_to_magnification(source, options.lr_magnification, source_magnification=mag,
                                         limits=options.limits)
    pixels = _normalise_lr(lr, verdict, report, options, standard) if options.normalise else lr.pixels
    if not report.passed:  # normalisation did not remove the colour cast
        return _quality_failure(verdict, report)
    verdict.passed, verdict.reason = True, report.summary()
    verdict.checks += report.event_checks()
    lr_mpp = lr.mpp if lr.mpp and math.isfinite(lr.mpp) else None
    write_pyramid(pixels, lr_path, mpp=lr_mpp, magnification=lr.magnification, compression=options.compression,
                  avif=options.avif, extra_metadata={"source_magnification": mag, "downsample": lr.downsample,
                                  "colour_normalised": verdict.corrected})
    verdict.lr_path = lr_path
    verdict.height, verdict.width = pixels.shape[:2]
    verdict.magnification, verdict.mpp, verdict.downsample = lr.magnification, lr_mpp, lr.downsample
    _learn_colour(report, options)
    return verdict


def _learn_colour(report: QcReport, options: PipelineOptions) -> None:
    """Fold an accepted slide into the lab standard. Not learning never fails the slide: it passed."""
    if options.lab_standard is None:
        return
    try:
        options.lab_standard.learn_from(report)
    except (LabStandardError, OSError) as exc:  # the message names the standard file, never the slide
        log.warning("qc.lab_standard_not_updated", error=str(exc))


def _fixable_by_normalisation(report: QcReport, options: PipelineOptions) -> bool:
    """Only a colour cast fails, and normalisation may remove it."""
    failed = {check.name for check in report.failed}
    return (options.normalise and options.qc.normalise.fixes_colour_cast
            and failed == {QcCheckName.COLOUR_CAST.value})


def _quality_failure(verdict: ScanVerdict, report: QcReport) -> ScanVerdict:
    verdict.passed, verdict.failure, verdict.reason = False, QcFailureKind.QUALITY, report.summary()
    verdict.checks += report.event_checks()
    return verdict
