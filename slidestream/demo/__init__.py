"""`slidestream demo`: the local stack, then sample slides through every stage of the system."""

from __future__ import annotations

import asyncio

from core.settings import Settings


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def start_stack(settings: Settings, workers: int = 1) -> None:
    from infra.stack import up
    from slidestream.probe import probe_agents
    from slidestream.workers import start_workers

    _banner("local stack: Kafka (KRaft), MinIO, FerretDB on loopback")
    up(settings)
    start_workers(settings, count=workers)
    answer = asyncio.run(probe_agents(settings, timeout=180))
    print(f"agents running: worker {answer.worker} answered a probe in {answer.round_trip_ms:.0f} ms")


async def _flow(settings: Settings) -> tuple[int, str | None]:
    from slidestream.demo.ingest import demo_ingest_and_qc
    from slidestream.demo.storage import demo_store_and_discharge

    _banner("scanner -> slide.scanned -> QC agent")
    verdicts = await demo_ingest_and_qc(settings)
    passed = [v for v in verdicts if v.event_type == "slide.qc_passed"]
    print(f"{len(passed)} of {len(verdicts)} slides passed QC")
    if not passed:
        print("no slide passed QC: nothing to store")
        return 1, None

    _banner("save agent -> catalog + recent tier; HIS discharge -> tier agent moves recent -> mid")
    await demo_store_and_discharge(settings, passed)

    # Retrospective reading of the largest stored slide: a 40x region computed on demand from
    # its 5x LR (interactive priority), saved next to plain bicubic upsampling.
    from slidestream.demo.upscale import demo_upscale_region

    largest = max(passed, key=lambda v: v.width * v.height)
    _banner(f"viewer asks for 40x of slide {largest.slide_number} -> upscale.requested -> SR -> upscale.done")
    png = await demo_upscale_region(settings, largest.exam_id, largest.slide_number, scale=8)
    print(f"side-by-side LR upsampled | SR saved to {png}")
    return 0, largest.exam_id


def run_demo(settings: Settings, stop_after: bool = False) -> int:
    start_stack(settings)
    try:
        status, exam_id = asyncio.run(_flow(settings))
        if status == 0 and exam_id is not None:
            from slidestream.demo.terminal import start_demo_terminal
            from slidestream.demo.viewer import DEMO_DEPARTMENT, DEMO_PATHOLOGIST, start_demo_viewer

            _banner("diagnosis viewer: sign in, open the demo slide, zoom to 40x (computed on demand)")
            passwords = start_demo_viewer(settings, exam_id)
            _banner("distribution: a reading terminal receives the demo exam, its 40x pre-computed and copied")
            start_demo_terminal(settings, exam_id, DEMO_DEPARTMENT, DEMO_PATHOLOGIST, passwords[DEMO_PATHOLOGIST])
        return status
    finally:
        if stop_after:
            from infra.stack import down
            from slidestream.terminal_process import stop_terminal
            from slidestream.viewer_process import stop_viewer
            from slidestream.workers import stop_workers

            stop_terminal(settings)
            stop_viewer(settings)
            stop_workers(settings)
            down(settings)
        else:
            print("\nThe stack keeps running: `slidestream status`, `slidestream down` to stop.")
