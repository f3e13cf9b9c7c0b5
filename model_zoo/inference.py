"""Tiled, batched, bounded-memory super-resolution of uint8 RGB arrays.

``SuperResolver`` is the interface the compute service calls. It validates input,
cuts it into equal overlap-tiles (see ``tiling``), runs the generator on batches of
windows whose size is bounded by a memory budget, and writes each tile's core into the
output. Results are deterministic and, because the overlap covers the receptive field,
equal to a whole-image pass within float rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice

import numpy as np
import torch

from .architecture import CascadeGenerator
from .baselines import interpolate
from .images import as_rgb_uint8
from .registry import DEFAULT_MODEL, X2_PATHS, X2Path, get_spec, load_generator
from .tiling import Tile, plan_tiles

MIN_TILE = 32  # LR pixels; below this the context margin would dominate the work
# Pillow's Lanczos kernel reaches 3 input pixels each side when enlarging.
LANCZOS_MARGIN = 3


class SuperResolver:
    def __init__(self, model: CascadeGenerator, *, name: str = "custom",
                 device: str | torch.device = "cpu", tile: int | None = None,
                 max_batch_bytes: int | None = None, max_output_bytes: int = 8 << 30,
                 compile: bool = False, x2_path: X2Path = "model", margin_cap: int | None = None) -> None:
        """``x2_path``: how x2 is answered - the cascade's own x2 stage ("model"), its x4
        output area-averaged by 2 ("x4"), or Lanczos ("lanczos") where neither beats it
        (see MODEL_CARD.md, "x2"). ``margin_cap``: the registry's measured context cap for
        these weights, for callers that cut windows themselves (the compute service); this
        class's own tiling keeps the full margin."""
        if x2_path not in X2_PATHS:
            raise ValueError(f"x2_path must be one of {X2_PATHS}, got {x2_path!r}")
        self.name = name
        self.margin_cap = margin_cap
        self.x2_path: X2Path = "model" if x2_path == "x4" and 4 not in model.scales else x2_path
        self.device = torch.device(device)
        self.tile = tile
        # Activation budget per forward pass: 1 GiB of host RAM, 4 GiB on a GPU.
        self.max_batch_bytes = max_batch_bytes or ((4 << 30) if self.device.type == "cuda" else (1 << 30))
        self.max_output_bytes = max_output_bytes
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        self._autocast = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self._forward = torch.compile(self.model) if compile and self.device.type == "cuda" else self.model

    # -- geometry ---------------------------------------------------------------------
    @property
    def scales(self) -> tuple[int, ...]:
        return self.model.scales

    def model_scale(self, scale: int) -> int:
        """The cascade output that answers ``scale`` (x4 for x2 when ``x2_path`` is "x4")."""
        return 4 if scale == 2 and self.x2_path == "x4" else scale

    def method_for(self, scale: int) -> str:
        """What answers ``scale``, as reported to users: the model, or Lanczos at x2."""
        if self._lanczos(scale):
            return "lanczos"
        return f"{self.name} (x4/2)" if self.model_scale(scale) != scale else self.name

    def _lanczos(self, scale: int) -> bool:
        return scale == 2 and self.x2_path == "lanczos"

    def margin_for(self, scale: int) -> int:
        """LR context pixels a tile needs at ``scale`` to match a whole-image pass."""
        if self._lanczos(scale):
            return LANCZOS_MARGIN
        return self.model.context_margin(self.model_scale(scale))

    @property
    def context_margin(self) -> int:
        """LR context pixels that make tiles seamless at every supported scale."""
        return max(self.margin_for(s) for s in self.scales)

    def tile_for(self, scale: int, height: int, width: int) -> int:
        """LR core size: the whole image when it fits the memory budget (no margin
        overhead), else the largest square window that does."""
        if self.tile:
            return self.tile
        if self.window_bytes(height, width, scale) <= self.max_batch_bytes:
            return max(height, width)
        side = int(np.sqrt(self.max_batch_bytes / self.window_bytes(1, 1, scale)))
        return max(MIN_TILE, side - 2 * self.margin_for(scale))

    def window_bytes(self, height: int, width: int, scale: int) -> int:
        """Rough peak activation bytes for one window (float32)."""
        scale = self.model_scale(scale)
        cfg = self.model.cfg
        per_lr_px = cfg.channels * 3
        n = int(np.log2(scale))
        for k in range(1, n + 1):
            per_lr_px = max(per_lr_px, 3 * cfg.stage_channels[k - 1] * 4 ** k)
        return height * width * 4 * (per_lr_px + 12 * scale * scale)

    # -- public API -------------------------------------------------------------------
    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        """Super-resolve one (H, W, 3|4) uint8 image by ``scale``; returns (sH, sW, 3) uint8."""
        return self.upscale_batch([image], scale)[0]

    def upscale_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        """Super-resolve same-shape images together (dynamic batching of tiles)."""
        arrays = self._validate_batch(images, scale)
        if not arrays:
            return []
        h, w = arrays[0].shape[:2]
        total = len(arrays) * h * w * scale * scale * 3
        if total > self.max_output_bytes:
            raise ValueError(f"output of {total / 2**30:.1f} GiB exceeds max_output_bytes "
                             f"({self.max_output_bytes / 2**30:.1f} GiB); stream it with iter_upscale()")
        outputs = [np.empty((h * scale, w * scale, 3), np.uint8) for _ in arrays]
        for index, y, x, tile in self._run(arrays, scale):
            outputs[index][y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        return outputs

    def iter_upscale(self, image: np.ndarray, scale: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Stream ``(y, x, tile)`` output tiles (output pixel offsets) for images of any size."""
        arrays = self._validate_batch([image], scale)
        for _, y, x, tile in self._run(arrays, scale):
            yield y, x, tile

    def upscale_float(self, image: np.ndarray, scale: int) -> np.ndarray:
        """Like ``upscale`` but returns the unrounded float32 output in [0, 1] (for tests/metrics)."""
        arrays = self._validate_batch([image], scale)
        h, w = arrays[0].shape[:2]
        out = np.empty((h * scale, w * scale, 3), np.float32)
        for _, y, x, tile in self._run(arrays, scale, as_float=True):
            out[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        return out

    # -- machinery --------------------------------------------------------------------
    def _validate_batch(self, images: Sequence[np.ndarray], scale: int) -> list[np.ndarray]:
        if scale not in self.scales:
            raise ValueError(f"scale must be one of {self.scales}, got {scale!r}")
        arrays = [as_rgb_uint8(im, what=f"image {i}") for i, im in enumerate(images)]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"upscale_batch needs same-shape images, got {sorted({a.shape for a in arrays})}")
        return arrays

    def _run(self, arrays: list[np.ndarray], scale: int, as_float: bool = False
             ) -> Iterator[tuple[int, int, int, np.ndarray]]:
        h, w = arrays[0].shape[:2]
        tiles = plan_tiles(h, w, self.tile_for(scale, h, w), self.margin_for(scale))
        win_h, win_w = tiles[0].rows.window_size, tiles[0].cols.window_size
        batch = max(1, self.max_batch_bytes // self.window_bytes(win_h, win_w, scale))
        jobs = ((i, t) for i in range(len(arrays)) for t in tiles)
        while chunk := list(islice(jobs, batch)):
            windows = np.stack([_window(arrays[i], t) for i, t in chunk])
            result = self._infer(windows, scale, as_uint8=not as_float)
            for (i, t), out in zip(chunk, result):
                yield i, t.rows.core_start * scale, t.cols.core_start * scale, _core(out, t, scale)

    @torch.inference_mode()
    def _infer(self, windows: np.ndarray, scale: int, as_uint8: bool = False) -> np.ndarray:
        """(N, h, w, 3) uint8 -> (N, s*h, s*w, 3) float32 in [0, 1], or uint8 (rounded on the
        device: a GPU then sends a quarter of the bytes back and the host does no rounding)."""
        if self._lanczos(scale):
            out = np.stack([interpolate(w, scale, "lanczos") for w in windows])
            return out if as_uint8 else out.astype(np.float32) / 255.0
        # NHWC numpy permuted to NCHW is already channels_last in memory: no copy.
        x = torch.from_numpy(windows).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        run_scale = self.model_scale(scale)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self._autocast):
            y = self._forward(x, run_scale)[run_scale]
        if run_scale != scale:  # average the displayable x4 image, as a camera would
            y = torch.nn.functional.avg_pool2d(y.float().clamp(0.0, 1.0), run_scale // scale)
        y = y.float().clamp_(0.0, 1.0)
        if as_uint8:
            y = y.mul_(255.0).round_().to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()


def _window(image: np.ndarray, tile: Tile) -> np.ndarray:
    r, c = tile.rows, tile.cols
    return image[r.window_start:r.window_start + r.window_size, c.window_start:c.window_start + c.window_size]


def _core(output: np.ndarray, tile: Tile, scale: int) -> np.ndarray:
    r, c = tile.rows, tile.cols
    return output[r.core_offset * scale:(r.core_offset + r.core_end - r.core_start) * scale,
                  c.core_offset * scale:(c.core_offset + c.core_end - c.core_start) * scale]


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device = "cpu", *,
               threads: int | None = None, **options) -> SuperResolver:
    """Load a registered model (checksum-verified) wrapped for tiled inference.

    ``threads`` sets torch's intra-op CPU threads (process-wide); leave it None to keep
    the current setting. Other options go to ``SuperResolver``.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    spec = get_spec(name)
    options.setdefault("x2_path", spec.x2_path)
    options.setdefault("margin_cap", spec.margin_cap)
    return SuperResolver(load_generator(spec, device), name=spec.name, device=device, **options)
