"""Decompression-bomb guard: declared sizes are checked against limits BEFORE decoding.

Three limits because three things differ in cost:

* ``max_slide_pixels`` - level 0 of a tiled, pyramidal whole-slide image. Such images are only
  ever read region by region, so a real 40x scan (a few Gpx) is fine; the limit only refuses
  absurd headers (default 40 Gpx, e.g. 200 000 x 200 000 px - larger than a 25 x 75 mm slide
  at 0.25 um/px).
* ``max_image_pixels`` - anything decoded into memory in one piece: a PNG/JPEG, a stripped TIFF
  page, the LR slide we build (default 2 Gpx, 6 GB as RGB).
* ``max_region_pixels`` - one ``read_region`` call (default 256 Mpx).

``max_side`` refuses a single absurd dimension regardless of the other (default 1 000 000 px).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from slide_io.errors import SlideTooLarge


class PixelLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_slide_pixels: int = Field(40_000_000_000, gt=0)
    max_image_pixels: int = Field(2_000_000_000, gt=0)
    max_region_pixels: int = Field(256_000_000, gt=0)
    max_side: int = Field(1_000_000, gt=0)

    def check_slide(self, width: int, height: int, *, name: str | None = None) -> None:
        """Level 0 of a tiled slide that will be read region by region."""
        self._check(width, height, self.max_slide_pixels, "slide level 0", name)

    def check_image(self, width: int, height: int, *, name: str | None = None) -> None:
        """An image that will be decoded into memory whole."""
        self._check(width, height, self.max_image_pixels, "image", name)

    def check_region(self, width: int, height: int, *, name: str | None = None) -> None:
        self._check(width, height, self.max_region_pixels, "region", name)

    def _check(self, width: int, height: int, max_pixels: int, what: str, name: str | None) -> None:
        if width <= 0 or height <= 0:
            raise SlideTooLarge(f"{what} has invalid declared size {width}x{height}", name=name)
        if max(width, height) > self.max_side:
            raise SlideTooLarge(
                f"{what} declares {width}x{height} px; a side above {self.max_side} px is refused "
                "before decoding (decompression-bomb guard)",
                name=name,
            )
        if width * height > max_pixels:
            raise SlideTooLarge(
                f"{what} declares {width}x{height} = {width * height / 1e6:.0f} Mpx, above the "
                f"limit of {max_pixels / 1e6:.0f} Mpx; refused before decoding",
                name=name,
            )


DEFAULT_LIMITS = PixelLimits()
