"""The organise function of SPEC 2: gather all of a patient's images in one place, for
management and migration, with a manifest.

``slidestream export --patient ID --to DIR`` (or ``--to s3://bucket/prefix``) writes

    <target>/<exam_id>/slide-<nnnn>.lr.tiff            every LR slide (checksum verified)
    <target>/<exam_id>/slide-<nnnn>.hr/x<s>/<L>/<c>_<r>.png   HR tiles found in the hr-cache
    <target>/manifest.json                             IDs, slide numbers, state, checksums

HR tiles are included where available; ``request_hr_scale`` first asks the compute service
(background priority) for each slide's HR pyramid and waits up to ``hr_timeout_s``.
Every destination is checked before anything is written: a path that would leave the
target, or an existing file or object, stops the export with nothing written.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import structlog

from catalog.errors import UnknownPatient
from catalog.repository import Catalog
from core.upscale_client import UpscaleGateway
from schemas.catalog import AuditEntry, ImageRecord, db_now
from schemas.common import ImageState, ObjectRef, StorageTier
from schemas.events import Region, UpscaleFailed, UpscaleRequested
from schemas.layout import hr_prefix
from schemas.topics import Priority
from storage import export_paths as paths
from storage.errors import ChecksumMismatch, UnsafeExportPath
from storage.objects import ObjectStore
from storage.retrieval import tiles_for_region

log = structlog.get_logger(__name__)

MANIFEST_FORMAT = "slidestream-export/1"
HR_REQUEST_TILES = 256  # below the compute service's per-request limit (1024 by default)


@dataclass(frozen=True)
class ExportItem:
    exam_id: str
    slide_number: int
    state: ImageState
    source: ObjectRef
    rel: PurePosixPath
    sha256: str | None  # None for HR tiles (their checksum is computed while copying)
    tier: str


@dataclass
class ExportReport:
    target: str
    files: list[dict] = field(default_factory=list)
    hr_status: dict[str, str] = field(default_factory=dict)
    bytes_written: int = 0

    @property
    def lr_count(self) -> int:
        return sum(1 for f in self.files if f["state"] == 0)

    @property
    def hr_count(self) -> int:
        return sum(1 for f in self.files if f["state"] == 1)


class ExportService:
    def __init__(self, catalog: Catalog, store: ObjectStore, gateway: UpscaleGateway | None = None) -> None:
        self.catalog = catalog
        self.store = store
        self.gateway = gateway

    async def export_patient(self, patient_id: str, target: paths.ExportTarget, *, include_hr: bool = True,
                             request_hr_scale: int | None = None, hr_timeout_s: float = 60.0,
                             actor: str = "export") -> ExportReport:
        if await self.catalog.get_patient(patient_id) is None:
            raise UnknownPatient()
        lr_images = await self.catalog.find_images(patient_id=patient_id, state=ImageState.LR)
        report = ExportReport(target=str(target))
        if request_hr_scale is not None:
            await self._request_hr(lr_images, request_hr_scale, hr_timeout_s, report)
        items = [ExportItem(i.exam_id, i.slide_number, ImageState.LR, i.object,
                            paths.lr_relpath(i.exam_id, i.slide_number), i.sha256, i.tier.value) for i in lr_images]
        if include_hr:
            items += await self._hr_items(lr_images, report)
        await self._preflight(target, items)
        for item in items:
            report.files.append(await self._write(target, item))
            report.bytes_written += report.files[-1]["size_bytes"]
        manifest = {
            "format": MANIFEST_FORMAT,
            "patient_id": patient_id,
            "exported_at": db_now().isoformat(),
            "files": report.files,
            "hr": report.hr_status,
        }
        await self._write_manifest(target, json.dumps(manifest, indent=2, sort_keys=True).encode())
        await self.catalog.audit(AuditEntry(actor=actor, action="export", outcome="ok",
                                            target={"patient_id": patient_id},
                                            detail={"files": len(report.files), "bytes": report.bytes_written}))
        log.info("export.done", files=len(report.files), bytes=report.bytes_written)
        return report

    async def _request_hr(self, lr_images: list[ImageRecord], scale: int, timeout_s: float,
                          report: ExportReport) -> None:
        """Ask for each slide's full-resolution HR level (background priority), in requests of
        at most ``HR_REQUEST_TILES`` tiles sent together, and wait for all answers."""
        if self.gateway is None:
            raise RuntimeError("HR was requested but no compute gateway is configured")
        for image in lr_images:
            name = f"{image.exam_id}/{image.slide_number}"
            if image.width is None or image.height is None:
                report.hr_status[name] = "no LR size recorded"
                continue
            whole = Region(x=0, y=0, width=image.width * scale, height=image.height * scale)
            tiles = tiles_for_region(image, scale, whole)
            requests = [UpscaleRequested(exam_id=image.exam_id, slide_number=image.slide_number, scale=scale,
                                         priority=Priority.BACKGROUND, tiles=tiles[i:i + HR_REQUEST_TILES])
                        for i in range(0, len(tiles), HR_REQUEST_TILES)]
            answers = await asyncio.gather(*(self.gateway.request(r, timeout_s) for r in requests))
            failed = [a.reason for a in answers if isinstance(a, UpscaleFailed)]
            if failed:
                report.hr_status[name] = f"failed: {failed[0]}"
            elif any(a is None for a in answers):
                report.hr_status[name] = "timeout"
            else:
                report.hr_status[name] = "computed"

    async def _hr_items(self, lr_images: list[ImageRecord], report: ExportReport) -> list[ExportItem]:
        bucket = self.store.bucket(StorageTier.TEMPORARY)
        items = []
        for image in lr_images:
            prefix = hr_prefix(image.exam_id, image.slide_number)
            listing = await self.store.list_prefix(bucket, prefix)
            name = f"{image.exam_id}/{image.slide_number}"
            report.hr_status.setdefault(name, "cached" if listing else "none")
            for key, _ in listing:
                items.append(ExportItem(image.exam_id, image.slide_number, ImageState.HR,
                                        ObjectRef(bucket=bucket, key=key),
                                        paths.hr_relpath(image.exam_id, image.slide_number, key), None,
                                        StorageTier.TEMPORARY.value))
        return items

    async def _preflight(self, target: paths.ExportTarget, items: list[ExportItem]) -> None:
        rels = [item.rel for item in items] + [PurePosixPath(paths.MANIFEST_NAME)]
        if len(set(rels)) != len(rels):
            raise UnsafeExportPath("two exported files would share one path")
        clashes = []
        for rel in rels:
            if isinstance(target, paths.LocalTarget):
                path = paths.local_path(target, rel)
                if path.exists() or path.is_symlink():
                    clashes.append(str(path))
            else:
                if await self.store.exists(ObjectRef(bucket=target.bucket, key=paths.s3_key(target, rel))):
                    clashes.append(f"s3://{target.bucket}/{paths.s3_key(target, rel)}")
        if clashes:
            more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
            raise UnsafeExportPath(f"export refuses to overwrite {', '.join(clashes[:3])}{more}")

    async def _write(self, target: paths.ExportTarget, item: ExportItem) -> dict:
        if isinstance(target, paths.LocalTarget):
            path = paths.local_path(target, item.rel)
            fd = paths.open_exclusive(path)
            try:
                sha, size = await self.store.download_to_fd(item.source, fd)
            except BaseException:
                path.unlink(missing_ok=True)  # our own partial file
                raise
            if item.sha256 is not None and sha != item.sha256:
                path.unlink(missing_ok=True)
                raise ChecksumMismatch(item.source, item.sha256, sha)
        else:
            dest = ObjectRef(bucket=target.bucket, key=paths.s3_key(target, item.rel))
            if await self.store.exists(dest):
                raise UnsafeExportPath(f"export refuses to overwrite s3://{dest}")
            await self.store.copy(item.source, dest, sha256=item.sha256)
            found = await self.store.checksum(dest)
            if found is None or (item.sha256 is not None and found[0] != item.sha256):
                await self.store.delete(dest)
                raise ChecksumMismatch(item.source, item.sha256 or "?", found[0] if found else "missing")
            sha, size = found
        return {"exam_id": item.exam_id, "slide_number": item.slide_number, "state": int(item.state),
                "tier": item.tier, "path": str(item.rel), "sha256": sha, "size_bytes": size}

    async def _write_manifest(self, target: paths.ExportTarget, data: bytes) -> None:
        rel = PurePosixPath(paths.MANIFEST_NAME)
        if isinstance(target, paths.LocalTarget):
            fd = paths.open_exclusive(paths.local_path(target, rel))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        else:
            dest = ObjectRef(bucket=target.bucket, key=paths.s3_key(target, rel))
            if await self.store.exists(dest):
                raise UnsafeExportPath(f"export refuses to overwrite s3://{dest}")
            await self.store.put_bytes(dest, data, content_type="application/json")
