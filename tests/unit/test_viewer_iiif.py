"""IIIF Image API 3.0 request parsing and the level a request is composed from."""

from __future__ import annotations

import pytest

from viewer.deepzoom import SlideView
from viewer.iiif import MAX_AREA, Box, IiifError, info, parse_region, parse_size, plan, tiles_of

VIEW = SlideView(600, 300, 8)  # 4800 x 2400 at 40x, max level 13


@pytest.mark.parametrize(("text", "box"), [
    ("full", Box(0, 0, 4800, 2400)),
    ("square", Box(1200, 0, 2400, 2400)),
    ("100,200,300,400", Box(100, 200, 300, 400)),
    ("4000,2000,5000,5000", Box(4000, 2000, 800, 400)),  # clipped at the edges
    ("pct:50,50,50,50", Box(2400, 1200, 2400, 1200)),
])
def test_regions(text: str, box: Box) -> None:
    assert parse_region(text, VIEW) == box


@pytest.mark.parametrize("text", ["4800,0,10,10", "0,2400,1,1", "0,0,0,5", "a,b,c,d", "1,2,3", "pct:x,0,1,1", "-1,0,5,5"])
def test_bad_regions(text: str) -> None:
    with pytest.raises(IiifError) as err:
        parse_region(text, VIEW)
    assert err.value.status == 400


@pytest.mark.parametrize(("text", "size"), [
    ("max", (1000, 500)), ("500,", (500, 250)), (",250", (500, 250)), ("pct:10", (100, 50)),
    ("100,100", (100, 100)), ("!400,400", (400, 200)), ("^2000,", (2000, 1000)),
])
def test_sizes(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text, Box(0, 0, 1000, 500)) == size


@pytest.mark.parametrize("text", ["2000,", "0,", ",", "!400,", "huge", "pct:", "^99999,99999"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(IiifError):
        parse_size(text, Box(0, 0, 1000, 500))


def test_max_of_a_whole_40x_slide_is_capped_by_area() -> None:
    width, height = parse_size("max", Box(0, 0, 4800, 2400))
    assert width * height <= MAX_AREA and abs(width / height - 2) < 0.01


def test_a_thumbnail_reads_a_coarse_level_and_a_40x_region_the_top() -> None:
    thumb = plan(VIEW, "full", "300,", "0", "default.jpg")
    assert thumb.level == VIEW.max_level - 4 and thumb.media_type == "image/jpeg"  # 4800/300 = 16
    detail = plan(VIEW, "512,256,512,512", "max", "0", "color.png")
    assert detail.level == VIEW.max_level and detail.media_type == "image/png"
    assert tiles_of(VIEW, detail) == (1, 2, 1, 3, 2)


@pytest.mark.parametrize(("rotation", "qf", "status"), [("45", "default.jpg", 400), ("0", "gray.jpg", 400),
                                                        ("0", "default.gif", 400), ("x", "default.jpg", 400),
                                                        ("450", "default.jpg", 400)])
def test_unsupported_features(rotation: str, qf: str, status: int) -> None:
    with pytest.raises(IiifError) as err:
        plan(VIEW, "full", "max", rotation, qf)
    assert err.value.status == status


def test_info_describes_the_pyramid() -> None:
    data = info(VIEW, "http://x/api/iiif/E/1")
    assert (data["width"], data["height"], data["type"]) == (4800, 2400, "ImageService3")
    assert data["tiles"] == [{"width": 256, "scaleFactors": [2 ** k for k in range(14)]}]


@pytest.mark.parametrize(("text", "parsed"), [("0", (False, 0)), ("90", (False, 90)), ("!180", (True, 180)),
                                              ("270.0", (False, 270)), ("360", (False, 0))])
def test_rotations_by_90_and_mirroring(text: str, parsed: tuple[bool, int]) -> None:
    p = plan(VIEW, "full", "max", text, "default.jpg")
    assert (p.mirror, p.rotation) == parsed
