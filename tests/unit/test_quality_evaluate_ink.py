"""The evaluation's ink table: ink found on images that carry none is counted, per kind of image."""

from __future__ import annotations

from types import SimpleNamespace

from quality.config import QcConfig
from quality.evaluate import ink_table


def _result(clean: float, stained: float, strong: float) -> SimpleNamespace:
    return SimpleNamespace(ink={"clean": clean, "stain": stained, "strong haematoxylin": strong})


def test_ink_rows_count_any_region_and_what_the_pen_check_flags() -> None:
    limit = QcConfig().pen.max_area_fraction
    results = [_result(0.0, 0.0, 0.0), _result(0.0, limit / 2, 2 * limit), _result(3 * limit, 0.0, limit / 10)]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in ink_table(results, QcConfig())[2:]}
    assert rows["clean H&E as scanned"][:3] == ["3", "1", "1"]
    assert rows["another lab's staining (H, E x0.7-1.4)"][:3] == ["3", "1", "0"]
    assert rows["strongly stained nuclei (H x2)"][:3] == ["3", "2", "1"]
    assert rows["strongly stained nuclei (H x2)"][3].startswith(f"{2 * limit:.2%}")
