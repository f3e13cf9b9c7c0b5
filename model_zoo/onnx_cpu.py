"""ONNX Runtime as a CPU inference engine, measured side by side with PyTorch.

Issue 16 asks whether ONNX Runtime (or OpenVINO) runs the default model faster on CPU.
``python -m model_zoo.bench --onnx`` exports the generator's one-scale forward to ONNX
(opset 17, dynamic batch, height and width), checks that it computes the same image, and
times both engines on the same float input with the same threads, alternating, so that the
load of a shared machine hits both alike. Optional: ``pip install -e '.[onnx]'``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .architecture import CascadeGenerator


@dataclass(frozen=True)
class EngineTiming:
    torch_best: float  # output Mpx/s
    torch_median: float
    onnx_best: float
    onnx_median: float
    max_abs_diff: float  # between the two engines' float outputs in [0, 1]


class _OneScale(torch.nn.Module):
    """The cascade's output at one scale as a plain tensor (what ONNX export needs)."""

    def __init__(self, model: CascadeGenerator, scale: int) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.scale)[self.scale]


def export(model: CascadeGenerator, scale: int, path: Path) -> Path:
    """The float32 generator at ``scale`` as an ONNX file."""
    wrapped = _OneScale(model.float().eval(), scale).eval()
    example = torch.rand(1, 3, 64, 64)
    torch.onnx.export(wrapped, (example,), str(path), input_names=["lr"], output_names=["hr"], opset_version=17,
                      dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "hr": {0: "n", 2: "sh", 3: "sw"}},
                      dynamo=False)
    return path


def session(path: Path, threads: int):  # type: ignore[no-untyped-def]  # onnxruntime is optional
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise SystemExit("ONNX Runtime is not installed: pip install -e '.[onnx]'") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(model: CascadeGenerator, scale: int, lr_size: int, repeats: int, threads: int) -> EngineTiming:
    """Both engines on one random (1, 3, lr_size, lr_size) input."""
    torch.set_num_threads(threads)
    model = model.float().eval()
    x = np.random.default_rng(0).random((1, 3, lr_size, lr_size), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="sr-onnx-") as tmp:
        runner = session(export(model, scale, Path(tmp) / f"x{scale}.onnx"), threads)

        def run_torch() -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last), scale)[scale].numpy()

        def run_onnx() -> np.ndarray:
            return runner.run(None, {"lr": x})[0]

        diff = float(np.abs(run_torch() - run_onnx()).max())  # also the warm-up of both
        times: dict[str, list[float]] = {"torch": [], "onnx": []}
        for _ in range(repeats):
            for name, run in (("torch", run_torch), ("onnx", run_onnx)):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    mpx = (lr_size * scale) ** 2 / 1e6
    return EngineTiming(mpx / min(times["torch"]), mpx / statistics.median(times["torch"]),
                        mpx / min(times["onnx"]), mpx / statistics.median(times["onnx"]), diff)
