"""QC results: one ``CheckResult`` per check, the ``QcReport`` (JSON-able), and its overlay PNG.

``CheckResult`` carries exactly the fields of ``schemas.events.QcCheck`` (name, score,
threshold, passed, reason, region_count) plus local extras (judged, details, regions) that
stay in the JSON report; ``QcReport.event_checks()`` gives the event objects.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from quality.artefacts import Region

OVERLAY_COLOURS = {  # RGB tint per flagged thing
    "blur": (255, 200, 0),
    "folds": (220, 0, 220),
    "bubbles": (0, 200, 255),
    "pen_marks": (0, 160, 0),
}


@dataclass
class CheckResult:
    name: str
    score: float
    threshold: float
    passed: bool
    reason: str
    region_count: int | None = None
    judged: bool = True  # False: not applicable (no tissue, no reference image...)
    affects_verdict: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    regions: list[Region] = field(default_factory=list)  # level-0 pixel boxes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "score": _finite(self.score),
            "threshold": _finite(self.threshold),
            "passed": self.passed,
            "reason": self.reason,
            "region_count": self.region_count,
            "judged": self.judged,
            "affects_verdict": self.affects_verdict,
            "details": {k: _finite(v) if isinstance(v, float) else v for k, v in self.details.items()},
            "regions": [r.__dict__ for r in self.regions],
        }


def not_judged(name: str, why: str, affects_verdict: bool = True) -> CheckResult:
    return CheckResult(name, 0.0, 0.0, True, f"not judged: {why}", None, judged=False, affects_verdict=affects_verdict)


@dataclass
class QcReport:
    checks: list[CheckResult]
    width: int
    height: int
    mpp: float | None
    magnification: float | None
    mode: str
    tissue_fraction: float
    tiles_with_tissue: int
    tiles_judged: int
    timings: dict[str, float]
    normalisation: dict[str, Any] | None = None
    # Not serialised: images for the overlay and for storage.
    overview: np.ndarray | None = None
    overview_scale: float = 1.0  # overview px per level-0 px
    overlay_masks: dict[str, np.ndarray] = field(default_factory=dict)  # overview-sized bool masks
    tissue: np.ndarray | None = None
    normalised: np.ndarray | None = None  # level-0 pixels after colour normalisation

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.affects_verdict)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.affects_verdict and not c.passed]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    @property
    def stain(self) -> str | None:
        """What the tissue check recognised: "he", "non_he" or "unknown" (None: not measured)."""
        tissue = next((c for c in self.checks if c.name == "tissue"), None)
        return None if tissue is None else tissue.details.get("stain")

    @property
    def colour_descriptor(self) -> np.ndarray | None:
        """The slide's colour descriptor (``quality.standard.DESCRIPTOR_NAMES``) as the colour
        check measured it against a standard; None when that check was not judged that way.
        Read from the check, not recomputed: it is what the verdict was based on."""
        colour = next((c for c in self.checks if c.name == "colour_cast"), None)
        if colour is None or not colour.judged or "descriptor" not in colour.details:
            return None
        return np.asarray(colour.details["descriptor"], float)

    def summary(self) -> str:
        """One line: the verdict and, on failure, every failing check's reason."""
        if self.passed:
            return "passed: " + ", ".join(c.name for c in self.checks if c.judged and c.affects_verdict)
        return "failed: " + "; ".join(f"{c.name}: {c.reason}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary(),
            "width": self.width,
            "height": self.height,
            "mpp": self.mpp,
            "magnification": self.magnification,
            "mode": self.mode,
            "tissue_fraction": _finite(self.tissue_fraction),
            "tiles_with_tissue": self.tiles_with_tissue,
            "tiles_judged": self.tiles_judged,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "normalisation": self.normalisation,
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def event_checks(self) -> list[Any]:
        """``schemas.events.QcCheck`` objects for the checks the event model knows."""
        from schemas.common import QcCheckName
        from schemas.events import QcCheck

        known = {member.value for member in QcCheckName}
        return [
            QcCheck(name=c.name, score=_event_float(c.score), threshold=_event_float(c.threshold),
                    passed=c.passed, reason=c.reason[:4096], region_count=c.region_count)
            for c in self.checks
            if c.name in known
        ]

    def overlay_png(self, path: str | Path | None = None) -> bytes:
        """The overview with flagged regions tinted and boxed, non-tissue dimmed."""
        if self.overview is None:
            raise ValueError("report has no overview image")
        base = self.overview.astype(np.float32)
        if self.tissue is not None:
            base[~self.tissue] = base[~self.tissue] * 0.6 + 255 * 0.4
        for name, mask in self.overlay_masks.items():
            colour = np.array(OVERLAY_COLOURS.get(name, (255, 0, 0)), np.float32)
            base[mask] = base[mask] * 0.55 + colour * 0.45
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for check in self.checks:
            colour = OVERLAY_COLOURS.get(check.name)
            if colour is None or check.passed:
                continue  # boxes for failing checks only; every detection is tinted anyway
            for r in check.regions:
                s = self.overview_scale
                draw.rectangle([r.x * s, r.y * s, (r.x + r.width) * s - 1, (r.y + r.height) * s - 1], outline=colour, width=2)
        legend = [f"{'PASS' if self.passed else 'FAIL'}"] + [
            f"{c.name}: {'ok' if c.passed else 'FLAG'}" for c in self.checks if c.judged
        ]
        draw.rectangle([0, 0, 160, 12 * len(legend) + 4], fill=(255, 255, 255))
        for i, line in enumerate(legend):
            swatch = OVERLAY_COLOURS.get(line.split(":")[0])
            if swatch is not None:
                draw.rectangle([3, 4 + 12 * i, 10, 11 + 12 * i], fill=swatch)
            draw.text((14, 2 + 12 * i), line, fill=(0, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        if path is not None:
            Path(path).write_bytes(data)
        return data


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _event_float(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0
