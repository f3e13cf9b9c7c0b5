"""A saved slide leaves the ingest bucket: its LR staging object and the scanner's original
upload are deleted once nothing needs them any more.

* The LR staging object (``lr-staging/<exam>/<slide>.tiff``) is needed until the save has
  stored it in the recent tier and the mirror and catalogued it.
* The original upload (``scans/<exam>/<slide>/scan.*``) is needed until then too, and, when QC
  kept it as an HR candidate, until the HR-scan agent has cut it into hr-cache tiles (its
  provenance marker says ``complete``).

Both agents that consume ``slide.qc_passed`` call ``release`` when their part is done: the save
agent after the catalog row, the HR-scan agent after the marker. Each writes its own result
before looking at the other's, so whichever finishes second sees both and deletes (both may:
deleting is idempotent). A crash between the save (or the cut) and the deletion leaves the
event uncommitted; its redelivery finds the slide saved (the cut complete) and deletes.
Anything that never gets here (a refused scan, a save or cut that was dead-lettered) is
removed by the bucket's lifecycle rules (``storage.ingest_lifecycle``).

Before deleting, ``qc/<exam>/<slide>/released.json`` is written (naming the upload), so QC
recognises a redelivered ``slide.scanned`` of a slide already saved instead of refusing it as
missing; it expires with the QC report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import structlog
from minio.error import S3Error

from catalog.provenance import check_qc_output, check_scan_upload
from catalog.repository import Catalog
from schemas.catalog import db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import SlideQcPassed
from schemas.layout import ALLOWED_SCALES, hr_provenance_key, ingest_released_key
from storage.errors import is_missing
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)

ScanFate = Literal["deleted", "waiting_for_hr_cut", "unknown"]


@dataclass(frozen=True)
class Release:
    """What ``release`` did: nothing before the save; then the LR is gone and the scan is
    deleted, waits for the HR cut, or is unknown (an event that names no upload)."""

    saved: bool
    lr_deleted: bool = False
    scan: ScanFate | None = None


def scan_of(event: SlideQcPassed) -> ObjectRef | None:
    """The scanner's upload a pass came from (events before ``scan`` existed name it only
    when it is the HR candidate)."""
    return event.scan or event.hr_candidate


def check_ingest_refs(event: SlideQcPassed, ingest_bucket: str) -> None:
    """``ForgedEvent`` unless every ingest object the event names is QC's or the scanner's own
    of that very slide (the release deletes them)."""
    check_qc_output(event.lr, ingest_bucket, event.exam_id, event.slide_number)
    for scan in (event.scan, event.hr_candidate):
        if scan is not None:
            check_scan_upload(scan, ingest_bucket, event.exam_id, event.slide_number)


def released_body(event: SlideQcPassed, scan: ObjectRef | None) -> bytes:
    return json.dumps({"scan": scan.key if scan is not None else None, "lr_sha256": event.sha256,
                       "at": db_now().isoformat()}).encode()


class IngestRelease:
    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store

    async def is_saved(self, event: SlideQcPassed) -> bool:
        """The catalog holds this very LR (same checksum) of this slide and patient."""
        image = await self.catalog.get_image(event.exam_id, event.slide_number, ImageState.LR)
        return image is not None and image.sha256 == event.sha256 and image.patient_id == event.patient_id

    async def hr_cut_complete(self, event: SlideQcPassed) -> bool:
        """Some scale's provenance marker says this scan was cut completely."""
        if event.hr_candidate is None:
            return True
        scan = f"{event.hr_candidate.bucket}/{event.hr_candidate.key}"
        for scale in ALLOWED_SCALES:
            marker = self.store.ref(StorageTier.TEMPORARY, hr_provenance_key(event.exam_id, event.slide_number, scale))
            try:
                body = json.loads(await self.store.get_object(marker))
            except S3Error as exc:
                if not is_missing(exc):
                    raise
                continue
            except ValueError:
                continue
            if body.get("status") == "complete" and body.get("scan") == scan:
                return True
        return False

    async def release(self, event: SlideQcPassed, *, saved: bool | None = None) -> Release:
        """Delete what the saved slide left in the ingest bucket, as far as nothing needs it.
        ``saved``: the caller has just established that the save is done."""
        check_ingest_refs(event, self.store.bucket("ingest"))
        scan = scan_of(event)
        if saved is None:
            saved = await self.is_saved(event)
        if not saved:
            return Release(saved=False)
        marker = self.store.ref("ingest", ingest_released_key(event.exam_id, event.slide_number))
        await self.store.put_bytes(marker, released_body(event, scan), content_type="application/json")
        lr_deleted = await self._delete_lr(event)
        fate: ScanFate
        if scan is None:
            fate = "unknown"
        elif await self.hr_cut_complete(event):
            await self.store.delete(scan)
            fate = "deleted"
        else:
            fate = "waiting_for_hr_cut"
        log.info("ingest.released", exam_id=event.exam_id, slide=event.slide_number, lr_deleted=lr_deleted,
                 scan=fate)
        return Release(saved=True, lr_deleted=lr_deleted, scan=fate)

    async def _delete_lr(self, event: SlideQcPassed) -> bool:
        """Delete the LR staging object unless it is another LR than the one saved (a later
        QC pass of the same slide, which its own save will judge)."""
        info = await self.store.stat(event.lr)
        if info is not None and info.sha256 is not None and info.sha256 != event.sha256:
            return False
        await self.store.delete(event.lr)
        return True
