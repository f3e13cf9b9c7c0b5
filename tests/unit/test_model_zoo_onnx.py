"""The ONNX Runtime comparison computes the same image as PyTorch (when the optional extra is
installed: ``pip install -e '.[onnx]'``)."""

from __future__ import annotations

import pytest
import torch

from model_zoo.architecture import CascadeGenerator
from model_zoo.registry import ARCHITECTURES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize("scale", [4, 8])
def test_the_exported_model_matches_pytorch_and_both_are_timed(scale: int) -> None:
    from model_zoo.onnx_cpu import compare

    torch.manual_seed(0)
    model = CascadeGenerator(ARCHITECTURES["tiny"])
    for p in model.parameters():  # the RGB heads start at zero: give every stage something to do
        torch.nn.init.normal_(p, std=0.05)
    timing = compare(model, scale, lr_size=24, repeats=2, threads=1)
    assert timing.max_abs_diff < 1e-4
    assert timing.torch_best > 0 and timing.onnx_best > 0
    assert timing.torch_best >= timing.torch_median and timing.onnx_best >= timing.onnx_median
