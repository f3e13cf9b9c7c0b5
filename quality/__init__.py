"""Slide quality control (SPEC 1): tissue, colour cast, blur, bubbles, folds, pen marks,
colour normalisation. numpy/scipy/scikit-image (and a small torch network for folds), no servers.

    from quality import QcConfig, run_qc
    report = run_qc(pixels_or_source_or_path, QcConfig())   # colour vs the shipped standard
    report.passed, report.to_dict(), report.event_checks(), report.overlay_png("qc.png")
"""

from quality.artefacts import Detection, Detector, Region
from quality.bubbles import BubbleDetector
from quality.colour import ColourReference, load_reference
from quality.config import QcConfig
from quality.folds import FoldDetector
from quality.pen import PenDetector
from quality.qc import QcMeasurements, judge, measure, run_qc
from quality.report import CheckResult, QcReport
from quality.standard import ColourProfile, ColourStandard, load_standard, updated

__all__ = [
    "BubbleDetector",
    "CheckResult",
    "ColourProfile",
    "ColourReference",
    "ColourStandard",
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
    "load_standard",
    "measure",
    "run_qc",
    "updated",
]
