"""Slide quality control (SPEC 1): tissue, colour cast, blur, bubbles, folds, pen marks,
colour normalisation. Pure numpy/scipy/scikit-image, no servers.

    from quality import QcConfig, run_qc
    report = run_qc(pixels_or_source_or_path, QcConfig(colour={"reference_path": "standard.png"}))
    report.passed, report.to_dict(), report.event_checks(), report.overlay_png("qc.png")
"""

from quality.artefacts import BubbleDetector, Detection, Detector, FoldDetector, Region
from quality.colour import ColourReference, load_reference
from quality.config import QcConfig
from quality.pen import PenDetector
from quality.qc import QcMeasurements, judge, measure, run_qc
from quality.report import CheckResult, QcReport

__all__ = [
    "BubbleDetector",
    "CheckResult",
    "ColourReference",
    "Detection",
    "Detector",
    "FoldDetector",
    "PenDetector",
    "QcConfig",
    "QcMeasurements",
    "QcReport",
    "Region",
    "judge",
    "load_reference",
    "measure",
    "run_qc",
]
