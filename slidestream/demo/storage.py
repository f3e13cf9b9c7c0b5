"""Demo step after QC: QC-passed slides are saved by the save agent, the HIS admits and then
discharges the patient (HL7 ADT^A01 / ADT^A03 through the HIS adapter), the tier agent moves
the slides recent -> mid, and the catalog and storage use per tier are printed.

Called by ``slidestream demo`` with the ``slide.qc_passed`` events of the QC step; needs the
stack and an agent worker running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.kafka import KafkaSink, producer
from core.settings import Settings
from his.adapter import HisAdapter
from his.hl7_adt import build_adt
from schemas.catalog import ImageRecord
from schemas.common import ImageState, StorageTier
from schemas.events import SlideQcPassed
from storage.runtime import Services, open_services

TIERS = ("recent", "mid", "long", "hr_cache", "mirror")


@dataclass
class DemoOutcome:
    stored: list[ImageRecord]
    moved: list[ImageRecord]
    seconds_to_store: float
    seconds_to_move: float


async def _wait(check: Callable[[], Awaitable[object]], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s (are the agents running?)")


def print_catalog(images: Sequence[ImageRecord], echo: Callable[[str], None] = print) -> None:
    echo(f"  {'exam':<24} {'slide':>5} {'state':>5} {'tier':<7} {'size MB':>8}  {'sha256':<12}  object")
    for image in images:
        size = (image.size_bytes or 0) / 1e6
        sha = (image.sha256 or "-")[:12]
        echo(f"  {image.exam_id:<24} {image.slide_number:>5} {'LR' if image.state is ImageState.LR else 'HR':>5} "
             f"{image.tier.value:<7} {size:>8.2f}  {sha:<12}  {image.object}")


async def print_storage_use(svc: Services, echo: Callable[[str], None] = print) -> None:
    echo(f"  {'tier':<9} {'bucket':<24} {'objects':>8} {'MB':>9}")
    for tier in TIERS:
        bucket = svc.store.bucket(tier)
        objects, size = await svc.store.usage(bucket)
        echo(f"  {tier:<9} {bucket:<24} {objects:>8} {size / 1e6:>9.2f}")


async def demo_store_and_discharge(settings: Settings, passed: Sequence[SlideQcPassed], *, timeout: float = 180.0,
                                   echo: Callable[[str], None] = print) -> DemoOutcome:
    if not passed:
        raise ValueError("no QC-passed slides to store")
    patients = {event.patient_id for event in passed}
    keys = [(event.exam_id, event.slide_number) for event in passed]
    async with producer(settings) as prod:
        svc = await open_services(settings, KafkaSink(prod), indexes=False)
        try:
            async def images() -> list[ImageRecord]:
                found = [await svc.catalog.get_image(exam, slide, ImageState.LR) for exam, slide in keys]
                return [image for image in found if image is not None]

            async def all_stored() -> bool:
                return len(await images()) == len(keys)

            stored_after = await _wait(all_stored, timeout, "saving the QC-passed slides")
            stored = await images()
            echo(f"{len(stored)} slide(s) saved to the recent tier and the mirror in {stored_after:.1f} s:")
            print_catalog(stored, echo)

            now = datetime.now(UTC)
            # As `slidestream his` does: the HIS adapter's own Kafka principal (patient events only).
            async with producer(settings, principal="his") as his_prod:
                his = HisAdapter(KafkaSink(his_prod))
                for number, patient in enumerate(sorted(patients), start=1):
                    for trigger, at in (("A01", now - timedelta(hours=6)), ("A03", now)):
                        reply = await his.handle_hl7(build_adt(trigger, patient, at, f"DEMO{number}{trigger}",
                                                                  ward="PATHOLOGY-WARD", sender="DEMO-HIS").encode())
                        code = reply.split(b"MSA|", 1)[1][:2].decode()
                        echo(f"HIS: ADT^{trigger} ({'admit' if trigger == 'A01' else 'discharge'}) -> {code}")

            async def all_moved() -> bool:
                return all(image.tier is StorageTier.MID and image.pending_move is None for image in await images())

            moved_after = await _wait(all_moved, timeout, "moving the discharged patient's slides to mid")
            moved = await images()
            echo(f"discharge handled: {len(moved)} slide(s) moved recent -> mid in {moved_after:.1f} s:")
            print_catalog(moved, echo)
            echo("storage use per tier:")
            await print_storage_use(svc, echo)
            return DemoOutcome(stored, moved, stored_after, moved_after)
        finally:
            await svc.close()
