"""Run the benchmarks: `python -m bench [name ...]` (default: all). Each prints its own tables."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "stack": "bench.stack_bench",
    "sr": "model_zoo.bench",
    "qc": "quality.bench",
    "qc-latency": "bench.qc_latency_bench",
    "tier": "bench.tier_bench",
    "catalog": "bench.catalog_bench",
    "compute": "bench.compute_bench",
    "viewer": "bench.viewer_bench",
    "rate-distortion": "bench.rate_distortion",
    "consistency": "bench.consistency_bench",
    "distribution": "bench.distribution_bench",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown bench {unknown}; choose from {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"\n## bench: {name}\n", flush=True)
        rc = importlib.import_module(BENCHES[name]).main([])
        if rc:
            return int(rc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
