"""IIIF Image API 3.0 requests over the slide's Deep Zoom pyramid (pure parsing and planning).

``{region}/{size}/{rotation}/{quality}.{format}``: region ``full``, ``square``, ``x,y,w,h`` or
``pct:x,y,w,h``; size ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h`` or ``!w,h`` (``^`` allows
upscaling past the region); rotation 0, 90, 180 or 270, ``!`` mirrors; quality ``default`` or ``color``; format
``jpg`` or ``png``. The answer is composed from the pyramid level nearest above the wanted
resolution, so a zoomed-out request never reads 40x tiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from schemas.layout import TILE_SIZE
from viewer.deepzoom import SlideView

MAX_AREA = 2048 * 2048  # output pixels per request (info.json says so): at most ~81 tiles to compose
FORMATS = {"jpg": "image/jpeg", "png": "image/png"}
_NUMBER = r"\d+(?:\.\d+)?"


class IiifError(ValueError):
    """A request the service cannot answer; ``status`` is the HTTP status IIIF asks for."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class IiifPlan:
    region: Box  # full-resolution pixels, clipped to the image
    width: int  # output size
    height: int
    level: int  # Deep Zoom level the output is cut from
    media_type: str
    mirror: bool = False
    rotation: int = 0  # clockwise degrees, a multiple of 90


def parse_region(text: str, view: SlideView) -> Box:
    w, h = view.width, view.height
    if text == "full":
        return Box(0, 0, w, h)
    if text == "square":
        side = min(w, h)
        return Box((w - side) // 2, (h - side) // 2, side, side)
    pct = text.startswith("pct:")
    parts = text[4:].split(",") if pct else text.split(",")
    if len(parts) != 4 or not all(re.fullmatch(_NUMBER if pct else r"\d+", p) for p in parts):
        raise IiifError(f"region {text[:40]!r} is not full, square, x,y,w,h or pct:x,y,w,h")
    if pct:
        fx, fy, fw, fh = (float(p) for p in parts)
        x, y = math.floor(fx * w / 100), math.floor(fy * h / 100)
        rw, rh = math.ceil(fw * w / 100), math.ceil(fh * h / 100)
    else:
        x, y, rw, rh = (int(p) for p in parts)
    if rw <= 0 or rh <= 0:
        raise IiifError("region width and height must be positive")
    if x >= w or y >= h:
        raise IiifError(f"region starts outside the image ({w}x{h})")
    return Box(x, y, min(rw, w - x), min(rh, h - y))


def parse_size(text: str, region: Box) -> tuple[int, int]:
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    rw, rh = region.width, region.height
    if body == "max":
        width, height = rw, rh
        if width * height > MAX_AREA:  # max = the largest allowed, aspect kept
            factor = math.sqrt(MAX_AREA / (width * height))
            width, height = max(1, int(width * factor)), max(1, int(height * factor))
    elif body.startswith("pct:") and re.fullmatch(_NUMBER, body[4:]):
        n = float(body[4:])
        width, height = round(rw * n / 100), round(rh * n / 100)
    elif match := re.fullmatch(r"(!?)(\d*),(\d*)", body):
        confined, ws, hs = match.groups()
        if confined:
            if not ws or not hs:
                raise IiifError("!w,h needs both a width and a height")
            factor = min(int(ws) / rw, int(hs) / rh)
            width, height = max(1, round(rw * factor)), max(1, round(rh * factor))
        elif ws and hs:
            width, height = int(ws), int(hs)
        elif ws:
            width, height = int(ws), max(1, round(rh * int(ws) / rw))
        elif hs:
            width, height = max(1, round(rw * int(hs) / rh)), int(hs)
        else:
            raise IiifError("size needs a width or a height")
    else:
        raise IiifError(f"size {text[:40]!r} is not max, w,, ,h, pct:n, w,h or !w,h")
    if width <= 0 or height <= 0:
        raise IiifError("the requested size is empty")
    if not upscale and (width > rw or height > rh):
        raise IiifError("size larger than the region needs the ^ prefix")
    if width * height > MAX_AREA:
        raise IiifError(f"at most {MAX_AREA} output pixels per request", 400)
    return width, height


def parse_rotation(text: str) -> tuple[bool, int]:
    """``[!]degrees``: mirror first, then rotate clockwise; multiples of 90 only (slides are
    turned, not tilted: arbitrary angles would need a background colour and resampling)."""
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    if not re.fullmatch(_NUMBER, body) or float(body) % 90 != 0 or float(body) > 360:
        raise IiifError(f"rotation {text[:20]!r} must be 0, 90, 180 or 270 (optionally with a leading !)")
    return mirror, int(float(body)) % 360


def plan(view: SlideView, region: str, size: str, rotation: str, quality_format: str) -> IiifPlan:
    mirror, degrees = parse_rotation(rotation)
    quality, _, fmt = quality_format.rpartition(".")
    if quality not in ("default", "color"):
        raise IiifError(f"quality {quality[:20]!r} is not supported (default, color)", 400)
    if fmt not in FORMATS:
        raise IiifError(f"format {fmt[:10]!r} is not supported (jpg, png)", 400)
    box = parse_region(region, view)
    width, height = parse_size(size, box)
    # The coarsest level still at least as fine as the output.
    downsample = min(box.width / width, box.height / height)
    steps = max(0, int(math.floor(math.log2(downsample)))) if downsample >= 1 else 0
    return IiifPlan(box, width, height, max(0, view.max_level - steps), FORMATS[fmt], mirror, degrees)


def tiles_of(view: SlideView, plan: IiifPlan) -> tuple[int, int, int, int, int]:
    """(downsample, first col, first row, last col, last row) of the level's tiles under the region."""
    factor = 2 ** (view.max_level - plan.level)
    x0, y0 = plan.region.x // factor, plan.region.y // factor
    x1 = math.ceil((plan.region.x + plan.region.width) / factor) - 1
    y1 = math.ceil((plan.region.y + plan.region.height) / factor) - 1
    return factor, x0 // TILE_SIZE, y0 // TILE_SIZE, x1 // TILE_SIZE, y1 // TILE_SIZE


def info(view: SlideView, base_id: str) -> dict[str, object]:
    return {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": base_id,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level1",
        "width": view.width,
        "height": view.height,
        "maxArea": MAX_AREA,
        "tiles": [{"width": TILE_SIZE, "scaleFactors": [2 ** k for k in range(view.max_level + 1)]}],
        "extraFormats": ["png"],
        "extraFeatures": ["regionByPct", "sizeByPct", "sizeByConfinedWh", "sizeByWh", "sizeUpscaling",
                          "mirroring", "rotationBy90s"],
    }
