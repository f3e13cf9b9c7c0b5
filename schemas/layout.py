"""Object keys and the Deep Zoom geometry shared by storage, compute and the viewer.

One definition, so the retrieval side and the compute side agree on where an HR tile lives.

HR pyramid of a slide at ``scale`` s: the LR level-0 image (W x H) upscaled to (W*s x H*s),
cut into Deep Zoom levels (level L has size ceil(W*s / 2**(max_level-L)) ...), tiles of
``TILE_SIZE`` px, no overlap. The top log2(s) levels are finer than the LR image and are
computed by super-resolution; lower levels are plain downsamples of the LR pyramid.
"""

from __future__ import annotations

import math

TILE_SIZE = 256
HR_TILE_FORMAT = "png"  # lossless: SR output is diagnostic material, not a preview

ALLOWED_SCALES = (2, 4, 8)

# What the ingest bucket holds, by prefix (each prefix has its lifecycle expiry rule,
# storage/ingest_lifecycle.py; a save deletes the first two of a saved slide at once).
SCANS_PREFIX = "scans/"  # the scanners' original uploads
LR_STAGING_PREFIX = "lr-staging/"  # QC's LR of slides that passed, until saved
QC_PREFIX = "qc/"  # QC reports and overlays, also of refusals
INGEST_PREFIXES = (SCANS_PREFIX, LR_STAGING_PREFIX, QC_PREFIX)


def _slide(exam_id: str, slide_number: int) -> str:
    return f"{exam_id}/{slide_number:04d}"


def ingest_key(exam_id: str, slide_number: int, filename: str) -> str:
    """Where a scanner's original upload lives in the ingest bucket."""
    return f"{scan_prefix(exam_id, slide_number)}{filename}"


def lr_staging_key(exam_id: str, slide_number: int) -> str:
    """QC's LR of a slide that passed, in the ingest bucket until the save agent stores it."""
    return f"{LR_STAGING_PREFIX}{_slide(exam_id, slide_number)}.tiff"


def qc_report_prefix(exam_id: str, slide_number: int) -> str:
    """QC's report.json (and overlay.png) of a scan, in the ingest bucket, also for refusals."""
    return f"{QC_PREFIX}{_slide(exam_id, slide_number)}/"


def ingest_released_key(exam_id: str, slide_number: int) -> str:
    """Written when a saved slide's upload and LR leave the ingest bucket (JSON naming the
    scan), so that a redelivered ``slide.scanned`` of it is recognised, not refused as missing."""
    return f"{qc_report_prefix(exam_id, slide_number)}released.json"


def lr_key(exam_id: str, slide_number: int) -> str:
    """The LR pyramidal TIFF, identical key in every permanent tier and in the mirror."""
    return f"lr/{_slide(exam_id, slide_number)}.tiff"


def hr_prefix(exam_id: str, slide_number: int, scale: int | None = None) -> str:
    base = f"hr/{_slide(exam_id, slide_number)}/"
    return base if scale is None else f"{base}x{scale}/"


def hr_provenance_key(exam_id: str, slide_number: int, scale: int) -> str:
    """Present when the x``scale`` HR tiles of a slide were cut from a real HR scan (scanned,
    not computed); JSON saying from which scan."""
    return f"{hr_prefix(exam_id, slide_number, scale)}scanned.json"


def hr_consistency_prefix(exam_id: str, slide_number: int, scale: int) -> str:
    """The x``scale`` consistency map of a slide's computed tiles: JSON fragments, one per
    batch and writer (never rewritten), merged by readers; deleted with the HR tiles."""
    return f"{hr_prefix(exam_id, slide_number, scale)}consistency/"


def hr_consistency_key(exam_id: str, slide_number: int, scale: int, fragment: str) -> str:
    """One fragment of the map; ``fragment`` is unique per write (no read-modify-write)."""
    if not fragment or "/" in fragment or fragment.startswith("."):
        raise ValueError(f"fragment name {fragment!r} must be one plain path segment")
    return f"{hr_consistency_prefix(exam_id, slide_number, scale)}{fragment}.json"


def scan_prefix(exam_id: str, slide_number: int) -> str:
    """Where a scanner's uploads of one slide live in the ingest bucket."""
    return f"{SCANS_PREFIX}{_slide(exam_id, slide_number)}/"


def hr_scale_for(lr_magnification: float | None, target_magnification: float) -> int:
    """The allowed SR factor that brings the LR closest to the target magnification (x8 when
    the LR magnification is unknown: slides are stored at 5x by default)."""
    if lr_magnification is None or lr_magnification <= 0 or target_magnification <= 0:
        return max(ALLOWED_SCALES)
    wanted = target_magnification / lr_magnification
    return min(ALLOWED_SCALES, key=lambda s: (abs(math.log2(s / wanted)), s))


def hr_tile_key(exam_id: str, slide_number: int, scale: int, level: int, col: int, row: int) -> str:
    return f"{hr_prefix(exam_id, slide_number, scale)}{level}/{col}_{row}.{HR_TILE_FORMAT}"


def dzi_max_level(width: int, height: int) -> int:
    """Deep Zoom level of the full-resolution image (level 0 is 1x1)."""
    return max(0, math.ceil(math.log2(max(width, height, 1))))


def level_size(width: int, height: int, level: int) -> tuple[int, int]:
    factor = 2 ** (dzi_max_level(width, height) - level)
    return math.ceil(width / factor), math.ceil(height / factor)


def tile_grid(width: int, height: int, level: int) -> tuple[int, int]:
    """Columns and rows of tiles at ``level``."""
    w, h = level_size(width, height, level)
    return math.ceil(w / TILE_SIZE), math.ceil(h / TILE_SIZE)


def sr_levels(lr_width: int, lr_height: int, scale: int) -> range:
    """Deep Zoom levels of the x``scale`` HR pyramid that need super-resolution."""
    top = dzi_max_level(lr_width * scale, lr_height * scale)
    return range(top - int(math.log2(scale)) + 1, top + 1)
