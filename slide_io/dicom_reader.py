"""Single-file tiled DICOM WSI (VL Whole Slide Microscopy Image) read with pydicom.

OpenSlide only opens DICOM that carries the full WSI attribute set; older converters leave
out e.g. ImageType or DimensionOrganizationType. This reader needs only the total pixel
matrix size and the frame size, and assumes TILED_FULL order (row-major frames) unless
per-frame positions are given. Frames are decoded one at a time, so a region read touches
only the frames it overlaps. One file = one level (multi-file pyramids are not assembled).
Patient attributes are never read into messages.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from slide_io.errors import UnreadableSlide, UnsupportedFormat
from slide_io.limits import PixelLimits
from slide_io.pixels import blank, to_rgb8
from slide_io.source import ReaderPlugin, SlideSource

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
_ENCAPSULATED_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
}


class DicomSlideSource(SlideSource):
    def __init__(self, path: Path, limits: PixelLimits) -> None:
        import pydicom

        self.name, self.format, self.limits = path.name, "dicom", limits
        self._path = path
        try:
            with warnings.catch_warnings():  # over-long VRs are common; they are not our concern
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:
            raise UnreadableSlide(f"not a readable DICOM file ({exc})", name=path) from exc
        if str(ds.get("SOPClassUID", "")) != WSI_SOP_CLASS:
            raise UnsupportedFormat("DICOM file is not a whole-slide microscopy image", name=path)
        try:
            self._width = int(ds.TotalPixelMatrixColumns)
            self._height = int(ds.TotalPixelMatrixRows)
            self._frame_w, self._frame_h = int(ds.Columns), int(ds.Rows)
            self._frames = int(ds.get("NumberOfFrames", 1))
        except (AttributeError, TypeError, ValueError) as exc:
            raise UnreadableSlide(f"DICOM WSI lacks its pixel-matrix geometry ({exc})", name=path) from exc
        limits.check_slide(self._width, self._height, name=self.name)
        limits.check_image(self._frame_w, self._frame_h, name=self.name)
        self._syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        self._samples = int(ds.get("SamplesPerPixel", 1))
        self._pixel_data: bytes | None = None
        self._positions = self._frame_positions(ds)
        self._mpp = _pixel_spacing_um(ds)
        self._mag = _objective_power(ds)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(self._width, self._height)]

    @property
    def mpp(self) -> float | None:
        return self._mpp

    @property
    def magnification(self) -> float | None:
        return self._mag

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        out = blank(height, width)
        for index, (fx, fy) in enumerate(self._positions):
            if fx >= x + width or fy >= y + height or fx + self._frame_w <= x or fy + self._frame_h <= y:
                continue
            frame = self._frame(index)
            sx0, sy0 = max(x, fx), max(y, fy)
            sx1 = min(x + width, fx + frame.shape[1], self._width)
            sy1 = min(y + height, fy + frame.shape[0], self._height)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = frame[sy0 - fy : sy1 - fy, sx0 - fx : sx1 - fx]
        return out

    def _frame(self, index: int) -> np.ndarray:
        from pydicom.encaps import get_frame

        data = self._load_pixel_data()
        if self._syntax in _ENCAPSULATED_SYNTAXES:
            encoded = get_frame(data, index, number_of_frames=self._frames)
            with Image.open(io.BytesIO(encoded)) as image:
                image.load()
                return to_rgb8(np.asarray(image.convert("RGB")), name=self.name)
        if self._syntax in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):  # native little endian
            frame_bytes = self._frame_w * self._frame_h * self._samples
            raw = np.frombuffer(data, dtype=np.uint8, count=frame_bytes, offset=index * frame_bytes)
            return to_rgb8(raw.reshape(self._frame_h, self._frame_w, self._samples), name=self.name)
        raise UnsupportedFormat(f"DICOM transfer syntax {self._syntax} is not supported", name=self.name)

    def _frame_positions(self, ds) -> list[tuple[int, int]]:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and len(per_frame) == self._frames and "PlanePositionSlideSequence" in per_frame[0]:
            positions = []
            for item in per_frame:
                pos = item.PlanePositionSlideSequence[0]
                positions.append((int(pos.ColumnPositionInTotalImagePixelMatrix) - 1,
                                  int(pos.RowPositionInTotalImagePixelMatrix) - 1))
            return positions
        columns = -(-self._width // self._frame_w)
        rows = -(-self._height // self._frame_h)
        if columns * rows != self._frames:
            raise UnsupportedFormat(
                f"{self._frames} frames do not tile a {self._width}x{self._height} matrix and no frame "
                "positions are given", name=self.name)
        row_major = [((i % columns) * self._frame_w, (i // columns) * self._frame_h) for i in range(self._frames)]
        if str(ds.get("DimensionOrganizationType", "")) == "TILED_FULL":
            return row_major
        # Undeclared order: some converters write column-major. Edge frames are padded with a
        # constant; pick the order under which the bottom-row frames' padding is constant.
        column_major = [((i // rows) * self._frame_w, (i % rows) * self._frame_h) for i in range(self._frames)]
        pad = rows * self._frame_h - self._height
        if pad == 0 or rows == 1 or columns == 1:
            return row_major

        def padding_spread(positions: list[tuple[int, int]]) -> float:
            bottom = [i for i, (_, y) in enumerate(positions) if y == (rows - 1) * self._frame_h]
            return float(np.mean([self._frame(i)[self._frame_h - pad :].std() for i in bottom]))

        return column_major if padding_spread(column_major) < padding_spread(row_major) else row_major

    def _load_pixel_data(self) -> bytes:
        if self._pixel_data is None:
            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(self._path, specific_tags=["PixelData"])
            if "PixelData" not in ds:
                raise UnreadableSlide("DICOM file has no pixel data (truncated?)", name=self.name)
            self._pixel_data = ds.PixelData
        return self._pixel_data


def _pixel_spacing_um(ds) -> float | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    try:
        spacing = shared[0].PixelMeasuresSequence[0].PixelSpacing
        value = float(spacing[1]) * 1000.0  # mm -> um; [row, column] spacing
    except (TypeError, AttributeError, IndexError, KeyError, ValueError):
        return None
    return value if value > 0 else None


def _objective_power(ds) -> float | None:
    try:
        power = float(ds.OpticalPathSequence[0].ObjectiveLensPower)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return power if power > 0 else None


# After OpenSlide's strict reader (which yields on failure), or alone when OpenSlide does not
# recognise the file as DICOM at all.
PLUGIN = ReaderPlugin(name="pydicom", priority=30, can_open=lambda f: f.vendor == "dicom" or f.kind == "dicom",
                      open=lambda f, limits: DicomSlideSource(f.path, limits))
