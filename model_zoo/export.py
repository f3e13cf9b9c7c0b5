"""Export a training checkpoint's generator as registry weights.

``python -m model_zoo.export out/train/small/phase1.pt model_zoo/weights/sr-cascade-small-psnr.pt``
writes the fp16 ``state_dict`` and prints its sha256 for ``registry.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .architecture import CascadeGenerator
from .registry import ARCHITECTURES, save_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="model_zoo.export", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="a training checkpoint (last.pt, phase1.pt)")
    p.add_argument("output", type=Path, help="weights file to write")
    args = p.parse_args(argv)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = CascadeGenerator(ARCHITECTURES[state["config"]["arch"]])
    model.load_state_dict(state["generator"])
    digest = save_weights(model, args.output)
    print(f"{args.output}: arch={state['config']['arch']} step={state['step']} sha256={digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
