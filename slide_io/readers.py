"""One interface over every slide format we accept (compare large_image's tile sources).

``open_slide(path)`` sniffs the file and returns a ``SlideSource``:

* vendor formats OpenSlide recognises (Aperio SVS, Hamamatsu NDPI/VMS, MIRAX, Leica SCN,
  Philips TIFF, Ventana, Sakura, conformant DICOM WSI...) -> ``OpenSlideSource``;
* DICOM WSI that OpenSlide refuses (older/non-conformant tags) -> ``DicomSlideSource``;
* plain/OME/our own pyramidal TIFF -> ``TiffSlideSource`` (tifffile, chunk-wise reads);
* PNG / JPEG -> ``PillowSlideSource`` (decoded whole, after the size check);
* in-memory arrays -> ``ArraySlideSource``.

Coordinates of ``read_region`` are in the pixel space of the requested level (not level 0,
unlike OpenSlide's own API). Pixels come back as uint8 RGB (H, W, 3); anything outside the
image reads as white glass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from slide_io.errors import SlideError, SlideTooLarge, UnreadableSlide, UnsupportedFormat
from slide_io.limits import DEFAULT_LIMITS, PixelLimits
from slide_io.pixels import blank, to_rgb8
from slide_io.tiles import TiledTiff

PILLOW_FORMATS = ("PNG", "JPEG")
# Magnification of a scan from its pixel size: the usual convention (40x ~ 0.25 um/px).
MICRONS_AT_1X = 10.0


class SlideSource(ABC):
    """Read access to one slide image with a resolution pyramid (possibly of one level)."""

    name: str
    format: str  # e.g. "aperio", "tiff", "dicom", "png"

    @property
    @abstractmethod
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) per level, level 0 first (largest)."""

    @property
    @abstractmethod
    def mpp(self) -> float | None:
        """Microns per pixel at level 0, when the file states it."""

    @property
    @abstractmethod
    def magnification(self) -> float | None:
        """Objective power at level 0, when the file states it."""

    @abstractmethod
    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Region inside the level bounds, uint8 RGB."""

    def close(self) -> None:  # noqa: B027 - optional hook: readers holding no handle need no close
        pass

    # --- shared behaviour ---------------------------------------------------------------

    limits: PixelLimits = DEFAULT_LIMITS

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        w0, h0 = self.dimensions
        return [((w0 / w) + (h0 / h)) / 2 for w, h in self.level_dimensions]

    def effective_magnification(self) -> float | None:
        """Stated magnification, else derived from mpp (10 / mpp), else None."""
        if self.magnification:
            return self.magnification
        return MICRONS_AT_1X / self.mpp if self.mpp else None

    def read_region(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Pixels of ``level`` in [x, x+width) x [y, y+height); outside the image is white."""
        if not 0 <= level < self.level_count:
            raise IndexError(f"level {level} out of range 0..{self.level_count - 1}")
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}x{height}")
        self.limits.check_region(width, height, name=self.name)
        lw, lh = self.level_dimensions[level]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, lw), min(y + height, lh)
        if x0 == x and y0 == y and x1 == x + width and y1 == y + height:
            return self._read_checked(level, x, y, width, height)
        out = blank(height, width)
        if x0 < x1 and y0 < y1:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read_checked(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def read_level(self, level: int) -> np.ndarray:
        """A whole level in memory (checked against ``max_image_pixels``)."""
        w, h = self.level_dimensions[level]
        self.limits.check_image(w, h, name=self.name)
        if w * h <= self.limits.max_region_pixels:
            return self._read_checked(level, 0, 0, w, h)
        return self._read_in_bands(level)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample`` (never upsample)."""
        best = 0
        for index, ds in enumerate(self.level_downsamples):
            if ds <= downsample * 1.001:
                best = index
        return best

    def thumbnail(self, max_side: int) -> np.ndarray:
        """Whole slide scaled so its longer side is at most ``max_side`` (area-averaged)."""
        from slide_io.resample import area_resize

        w0, h0 = self.dimensions
        factor = max(1.0, max(w0, h0) / max_side)
        level = self.best_level_for_downsample(factor)
        pixels = self.read_level(level)
        lw, lh = self.level_dimensions[level]
        out_w, out_h = max(1, round(w0 / factor)), max(1, round(h0 / factor))
        if (out_w, out_h) == (lw, lh):
            return pixels
        return area_resize(pixels, out_w, out_h)

    def _read_in_bands(self, level: int) -> np.ndarray:
        w, h = self.level_dimensions[level]
        out = np.empty((h, w, 3), dtype=np.uint8)
        band = max(1, self.limits.max_region_pixels // w)
        for y in range(0, h, band):
            out[y : y + band] = self._read_checked(level, 0, y, w, min(band, h - y))
        return out

    def _read_checked(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        try:
            region = self._read(level, x, y, width, height)
        except (SlideError, IndexError, ValueError):
            raise
        except Exception as exc:  # codec errors surface with many types
            raise UnreadableSlide(f"cannot decode region of level {level} ({exc})", name=self.name) from exc
        if region.shape != (height, width, 3) or region.dtype != np.uint8:
            raise UnreadableSlide(f"reader returned {region.shape} {region.dtype} for a {width}x{height} region", name=self.name)
        return region

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, format={self.format!r}, dims={self.dimensions}, "
                f"levels={self.level_count}, mpp={self.mpp}, mag={self.magnification})")


class OpenSlideSource(SlideSource):
    def __init__(self, path: Path, vendor: str, limits: PixelLimits) -> None:
        self.name, self.format, self.limits = path.name, vendor, limits
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as exc:
            raise UnreadableSlide(f"OpenSlide cannot open this {vendor} file ({exc})", name=path) from exc
        w, h = self._slide.dimensions
        limits.check_slide(w, h, name=self.name)
        props = self._slide.properties
        self._mpp = _float(props.get(openslide.PROPERTY_NAME_MPP_X))
        self._mag = _float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return list(self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        return list(self._slide.level_downsamples)

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        ds = self._slide.level_downsamples[level]
        rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (width, height)))
        # OpenSlide returns un-premultiplied RGBA with alpha 0 where nothing was scanned.
        alpha = rgba[:, :, 3:4].astype(np.uint16)
        rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


class TiffSlideSource(SlideSource):
    def __init__(self, path: Path, limits: PixelLimits) -> None:
        self.name, self.format, self.limits = path.name, "tiff", limits
        self._tiff = TiledTiff(path, limits=limits)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(lv.width, lv.height) for lv in self._tiff.levels]

    @property
    def mpp(self) -> float | None:
        return self._tiff.mpp

    @property
    def magnification(self) -> float | None:
        return self._tiff.magnification

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._tiff.read_region(level, x, y, width, height)

    def close(self) -> None:
        self._tiff.close()


class PillowSlideSource(SlideSource):
    """PNG/JPEG: size read from the header, pixels decoded once on first access."""

    def __init__(self, path: Path, limits: PixelLimits) -> None:
        self.name, self.limits = path.name, limits
        try:
            with Image.open(path) as image:
                self.format = (image.format or "unknown").lower()
                if image.format not in PILLOW_FORMATS:
                    raise UnsupportedFormat(f"image format {image.format} is not accepted", name=path)
                self._size = image.size
        except Image.DecompressionBombError as exc:
            raise SlideTooLarge(f"refused before decoding: {exc}", name=path) from exc
        except SlideError:
            raise
        except Exception as exc:
            raise UnreadableSlide(f"cannot read image header ({exc})", name=path) from exc
        limits.check_image(*self._size, name=self.name)
        self._path = path
        self._pixels: np.ndarray | None = None

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [self._size]

    @property
    def mpp(self) -> float | None:
        return None

    @property
    def magnification(self) -> float | None:
        return None

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if self._pixels is None:
            try:
                with Image.open(self._path) as image:
                    image.load()
                    self._pixels = _pillow_to_rgb8(image, self.name)
            except SlideError:
                raise
            except Exception as exc:
                raise UnreadableSlide(f"image data does not decode ({exc})", name=self.name) from exc
        return self._pixels[y : y + height, x : x + width]


class ArraySlideSource(SlideSource):
    """An in-memory RGB image (e.g. a freshly built LR slide) behind the same interface."""

    def __init__(self, pixels: np.ndarray, *, mpp: float | None = None, magnification: float | None = None,
                 name: str = "array") -> None:
        self.name, self.format = name, "array"
        self._pixels = to_rgb8(np.asarray(pixels), name=name)
        self._mpp, self._mag = mpp, magnification

    @property
    def pixels(self) -> np.ndarray:
        return self._pixels

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(self._pixels.shape[1], self._pixels.shape[0])]

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._pixels[y : y + height, x : x + width]


def _pillow_to_rgb8(image: Image.Image, name: str) -> np.ndarray:
    if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return to_rgb8(np.asarray(image, dtype=np.uint16), name=name)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        raise UnsupportedFormat(f"image mode {image.mode} is not supported", name=name)
    return to_rgb8(np.asarray(image), name=name)


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number and number > 0 else None


# --- format sniffing ------------------------------------------------------------------------

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_KNOWN_OTHERS = {b"PK\x03\x04": "ZIP archive", b"%PDF": "PDF document", b"GIF8": "GIF image",
                 b"\x1f\x8b": "gzip archive", b"BM": "BMP image"}


def sniff(path: Path) -> str:
    """'tiff', 'dicom', 'png', 'jpeg' or a description of what the file is instead."""
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    for magic, what in _KNOWN_OTHERS.items():
        if head.startswith(magic):
            return what
    return "unknown"


def open_slide(path: str | Path, *, limits: PixelLimits = DEFAULT_LIMITS) -> SlideSource:
    """Open any supported slide file, refusing bad input with a typed ``SlideError``."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableSlide("no such file", name=path)
    if path.stat().st_size == 0:
        raise UnreadableSlide("file is empty", name=path)
    kind = sniff(path)
    try:
        vendor = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        vendor = None
    if vendor == "dicom" or (vendor is None and kind == "dicom"):
        return _open_dicom(path, limits, via_openslide=vendor == "dicom")
    if vendor not in (None, "generic-tiff"):
        return OpenSlideSource(path, vendor, limits)
    if kind == "tiff":
        return TiffSlideSource(path, limits)
    if kind in ("png", "jpeg"):
        return PillowSlideSource(path, limits)
    if kind == "unknown" and path.suffix.lower() in (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff",
                                                      ".dcm", ".png", ".jpg", ".jpeg", ".vms", ".bif"):
        raise UnreadableSlide(f"content does not match its {path.suffix} extension (corrupt file?)", name=path)
    raise UnsupportedFormat(f"not a supported slide format (looks like: {kind})", name=path)


def _open_dicom(path: Path, limits: PixelLimits, *, via_openslide: bool) -> SlideSource:
    if via_openslide:
        try:
            return OpenSlideSource(path, "dicom", limits)
        except UnreadableSlide:
            pass  # OpenSlide wants full WSI conformance; many real files lack some tags
    from slide_io.dicom import DicomSlideSource

    return DicomSlideSource(path, limits)
