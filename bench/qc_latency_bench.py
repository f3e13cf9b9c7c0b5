"""Latency from ``slide.scanned`` to the QC verdict through the real broker and worker(s).

    python -m bench.qc_latency_bench [--slides 12] [--workers 1] [--mode sampled|full] [--running]

Starts its own stack (ports 37092.., state in a temp dir) and ``--workers`` agent workers,
unless ``--running`` uses the configured stack and the workers already running there.
Latency is measured from the broker's acknowledgement of ``slide.scanned`` (the original is
already in the ingest bucket) to the arrival of ``slide.qc_passed`` / ``slide.qc_failed`` at a
consumer: download from the ingest bucket, QC, LR build, LR + report upload and both Kafka
hops. Two runs: one slide at a time (pure latency), then all slides at once (queueing behind
the workers). A warm-up slide first, so worker start-up and first imports are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import time
import uuid
from collections import defaultdict
from pathlib import Path

from bench.report import machine, percentiles, stack_state_dir, table
from core.logging import configure_logging
from core.settings import Settings, get_settings
from scanner.ids import validate_ids
from scanner.ingest import Ingestor, open_ingestor
from scanner.samples import Sample, real_samples
from scanner.verdicts import VerdictListener, listen_for_verdicts
from schemas.events import DeadLetter, SlideQcPassed

PORTS = {
    "SLIDESTREAM_KAFKA__PORT": "37092",
    "SLIDESTREAM_KAFKA__CONTROLLER_PORT": "37093",
    "SLIDESTREAM_STORAGE__PORT": "37000",
    "SLIDESTREAM_STORAGE__CONSOLE_PORT": "37001",
    "SLIDESTREAM_MONGO__PORT": "37017",
}
VERDICT_TIMEOUT_S = 600.0


class Run:
    def __init__(self, settings: Settings, listener: VerdictListener, ingestor: Ingestor) -> None:
        self.settings, self.listener, self.ingestor = settings, listener, ingestor
        self.run_id = uuid.uuid4().hex[:8]
        self.count = 0

    async def send(self, sample: Sample) -> tuple[str, float, float]:
        """Ingest one slide; (exam ID, upload+publish seconds, time the event was acked).

        One exam per slide: events are keyed by exam, so the slides of one exam stay in order
        on one partition (one worker); different exams spread over the workers."""
        self.count += 1
        exam = f"BENCH-{self.run_id}-{self.count}"
        ids = validate_ids(f"BENCH-P{self.count}", exam, 1, scanner_id="bench")
        started = time.monotonic()
        await self.ingestor.ingest(sample.path, ids, magnification=sample.magnification)
        acked = time.monotonic()
        return exam, acked - started, acked

    async def verdict_ms(self, exam: str, acked: float) -> tuple[float, str]:
        verdict = await self.listener.for_slide(exam, 1, VERDICT_TIMEOUT_S)
        if isinstance(verdict, DeadLetter):
            outcome = "dead-lettered"
        else:
            outcome = "passed" if isinstance(verdict, SlideQcPassed) else f"failed ({verdict.kind.value})"
        return (self.listener.arrival(verdict) - acked) * 1000, outcome


async def _measure(settings: Settings, samples: list[Sample], slides: int) -> dict[str, list]:
    results: dict[str, list] = {"sequential": [], "burst": [], "upload": []}
    async with listen_for_verdicts(settings) as listener, open_ingestor(settings) as ingestor:
        run = Run(settings, listener, ingestor)
        exam, _, acked = await run.send(samples[0])  # warm-up, not counted
        await run.verdict_ms(exam, acked)
        for index in range(slides):
            sample = samples[index % len(samples)]
            exam, upload_s, acked = await run.send(sample)
            ms, outcome = await run.verdict_ms(exam, acked)
            results["sequential"].append((sample.label, outcome, ms))
            results["upload"].append(upload_s * 1000)
        sent = []
        for index in range(slides):
            sample = samples[index % len(samples)]
            exam, _, acked = await run.send(sample)
            sent.append((sample, exam, acked))
        for sample, exam, acked in sent:
            ms, outcome = await run.verdict_ms(exam, acked)
            results["burst"].append((sample.label, outcome, ms))
    return results


def _rows(measured: list[tuple[str, str, float]]) -> list[list[object]]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for label, outcome, ms in measured:
        groups[(label, outcome)].append(ms)
    rows: list[list[object]] = []
    for (label, outcome), values in groups.items():
        p50, p95 = percentiles(values)
        rows.append([label, outcome, len(values), p50, p95, max(values)])
    everything = [ms for _, _, ms in measured]
    p50, p95 = percentiles(everything)
    rows.append(["all", "", len(everything), p50, p95, max(everything)])
    return rows


def _own_stack(state_dir: Path, workers: int, mode: str) -> Settings:
    from infra import stack
    from slidestream.probe import probe_agents
    from slidestream.workers import start_workers

    os.environ.update(PORTS)
    os.environ["SLIDESTREAM_STATE_DIR"] = str(state_dir)
    os.environ["SLIDESTREAM_QC__MODE"] = mode
    get_settings.cache_clear()
    settings = get_settings()
    stack.up(settings, echo=lambda _msg: None)
    start_workers(settings, count=workers)
    asyncio.run(probe_agents(settings, timeout=180))
    return settings


def _verdicts_per_worker(settings: Settings) -> list[int]:
    """How many verdicts each worker published (from its log): the consumer group's split."""
    from slidestream.workers import worker_status

    return [info.log.read_text(errors="replace").count('"qc.verdict"') for info in worker_status(settings)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=12, help="slides per run (sequential, then burst)")
    parser.add_argument("--workers", type=int, default=1, help="agent workers to start (own stack only)")
    parser.add_argument("--mode", choices=["sampled", "full"], default="sampled", help="QC mode of the workers")
    parser.add_argument("--running", action="store_true", help="use the configured stack and its workers")
    args = parser.parse_args(argv)

    state_dir = stack_state_dir("slidestream-qc-bench-")
    settings = get_settings() if args.running else None
    try:
        if settings is None:
            settings = _own_stack(state_dir, args.workers, args.mode)
        configure_logging(settings)
        logging.getLogger().setLevel(logging.WARNING)  # the tables, not a line per slide
        samples = real_samples(settings.shared_data)
        results = asyncio.run(_measure(settings, samples, args.slides))
        shares = [] if args.running else _verdicts_per_worker(settings)
    finally:
        if not args.running:
            from infra import stack
            from slidestream.workers import stop_workers

            if settings is not None:
                stop_workers(settings)
                stack.down(settings, echo=lambda _msg: None)
        shutil.rmtree(state_dir, ignore_errors=True)

    mode = "as configured" if args.running else f"{args.mode} QC, {args.workers} worker(s)"
    headers = ["sample", "verdict", "slides", "p50 (ms)", "p95 (ms)", "max (ms)"]
    print(f"QC latency slide.scanned -> verdict ({machine()}; {mode}; LR target "
          f"{settings.lr_magnification:g}x)\n")
    print("One slide at a time:\n")
    print(table(headers, _rows(results["sequential"])))
    print(f"\nAll {args.slides} slides published at once (latency includes waiting for a worker):\n")
    print(table(headers, _rows(results["burst"])))
    if shares:
        print(f"\nVerdicts per worker (consumer group split over 4 partitions, keyed by exam): {shares}")
    p50, p95 = percentiles(results["upload"])
    print(f"\nScanner side (upload to ingest + publish), one at a time: p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
