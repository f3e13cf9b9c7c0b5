"""The QC service: one ``slide.scanned`` event in, one ``slide.qc_passed`` / ``slide.qc_failed``
event out. Fetches the scan from the ingest bucket, runs ``qc.pipeline`` in a worker
thread, stores the LR (only if it passed) and the QC report next to the scan.

Objects it writes to the ingest bucket (the scan itself is never modified or deleted here, so
a refused file stays there for inspection until the bucket's lifecycle rule expires it)::

    lr-staging/<exam>/<slide>.tiff          LR pyramidal TIFF of a slide that passed
    qc/<exam>/<slide>/report.json           QC report (also for refusals)
    qc/<exam>/<slide>/overlay.png           overview with flagged regions, when QC ran

Once the slide is saved, the save (``storage.ingest_release``) deletes the LR and the scan and
leaves ``qc/<exam>/<slide>/released.json``; a ``slide.scanned`` delivered again after that
(at-least-once delivery) is recognised by it and answered with nothing, not a refusal.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from core.settings import Settings
from qc.pipeline import PipelineOptions, ScanVerdict, process_scan, refused
from quality import QcConfig
from quality.lab_standard import LabStandard
from quality.standard import SHIPPED
from schemas.common import ObjectRef, QcFailureKind
from schemas.events import SlideQcFailed, SlideQcPassed, SlideScanned
from schemas.ids import ExamId, PatientId, SlideNumber
from schemas.layout import ingest_released_key, lr_staging_key, qc_report_prefix
from slide_io import AvifSettings, Compression
from storage.errors import MissingObject
from storage.ingest_bucket import IngestBucket

log = structlog.get_logger(__name__)

ID_FIELDS = ("patient_id", "exam_id", "slide_number")
_ID_ADAPTERS = {"patient_id": TypeAdapter(PatientId), "exam_id": TypeAdapter(ExamId),
                "slide_number": TypeAdapter(SlideNumber)}
MAX_REASON = 4096


def load_qc_config(path: Path | None) -> QcConfig:
    """``QcConfig`` from a JSON or YAML file (unknown keys are refused), or the defaults."""
    if path is None:
        return QcConfig()
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        document = yaml.safe_load(text) or {}
    else:
        document = json.loads(text)
    return QcConfig.model_validate(document)


def pipeline_options(settings: Settings) -> PipelineOptions:
    """What the QC agent does, from ``settings.qc`` and ``settings.lr_magnification``."""
    agent = settings.qc
    config = load_qc_config(agent.config_file)
    updates: dict[str, Any] = {"sampling": config.sampling.model_copy(update={"mode": agent.mode})}
    if agent.reference_image is not None:
        updates["colour"] = config.colour.model_copy(update={"reference_path": agent.reference_image})
    config = config.model_copy(update=updates)
    lab_standard = None
    if agent.lab_colour_standard is not None:  # always set by Settings; None only for a bare QcAgentSettings
        lab_standard = LabStandard(agent.lab_colour_standard, config.colour.standard_path or SHIPPED,
                                   learn=agent.learn_colour_standard)
    return PipelineOptions(
        lr_magnification=settings.lr_magnification,
        qc=config,
        judge=agent.judge,
        normalise=agent.normalise or config.normalise.enabled,
        compression=Compression(agent.lr_compression),
        avif=AvifSettings(quality=agent.lr_avif_quality),
        lab_standard=lab_standard,
    )


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def invalid_ids_failure(raw: bytes, fields: tuple[str, ...], reason: str) -> SlideQcFailed | None:
    """A ``slide.qc_failed`` (kind invalid_ids) for a scan event whose only problem is its
    identifiers, so the scan in the ingest bucket is reported, not silently parked. None when
    anything else is wrong (the dead letter alone then tells the story)."""
    if not fields or any(f.split(".")[0] not in ID_FIELDS for f in fields):
        return None
    try:
        document = json.loads(raw)
        ingest = ObjectRef.model_validate(document["ingest"])
    except (ValueError, KeyError, TypeError, ValidationError):
        return None
    ids: dict[str, Any] = {}
    for name, adapter in _ID_ADAPTERS.items():
        try:
            ids[name] = adapter.validate_python(document.get(name))
        except ValidationError:
            ids[name] = None
    return SlideQcFailed(**ids, ingest=ingest, kind=QcFailureKind.INVALID_IDS,
                         reason=_truncate(f"scan event has missing or malformed identifiers: {reason}"))


class QcService:
    """Judges scans; one instance per worker (it holds the S3 client and the QC options)."""

    def __init__(self, options: PipelineOptions, bucket: IngestBucket, *, work_dir: Path | None = None) -> None:
        self.options = options
        self.bucket = bucket
        self._work_dir = work_dir

    async def handle(self, scanned: SlideScanned) -> SlideQcPassed | SlideQcFailed | None:
        """The verdict; None for a scan judged before whose slide is saved and released."""
        with tempfile.TemporaryDirectory(prefix="slidestream-qc-", dir=self._work_dir) as tmp:
            work = Path(tmp)
            verdict = await self._judge(scanned, work)
            if verdict is None:
                return None
            report_ref = await self._store_report(scanned, verdict)
            if verdict.passed:
                assert verdict.lr_path is not None
                stored = await self.bucket.upload_file(lr_staging_key(scanned.exam_id, scanned.slide_number),
                                                       verdict.lr_path)
                return self._passed(scanned, verdict, stored)
        return self._failed(scanned, verdict, report_ref)

    async def _judge(self, scanned: SlideScanned, work: Path) -> ScanVerdict | None:
        # The local copy is named like the object (scans/<exam>/<slide>/scan.svs -> scan.svs):
        # readers may look at the extension, and messages then name no patient.
        local = work / scanned.ingest.key.rsplit("/", 1)[-1]
        try:
            sha256, size = await self.bucket.download(scanned.ingest, local)
        except MissingObject:
            if await self._released(scanned):
                log.info("qc.already_saved", exam_id=scanned.exam_id, slide_number=scanned.slide_number)
                return None
            return refused(QcFailureKind.MISSING_OBJECT,
                           f"the scan {scanned.ingest} is not in the ingest bucket (deleted, or never uploaded)",
                           readable_check=False)
        if (sha256, size) != (scanned.sha256, scanned.size_bytes):
            return refused(QcFailureKind.UNREADABLE,
                           f"the ingest object does not match the scan event: {size} bytes with sha256 "
                           f"{sha256[:12]}..., expected {scanned.size_bytes} bytes with {scanned.sha256[:12]}... "
                           "(overwritten or damaged in transit)")
        try:
            return await asyncio.to_thread(process_scan, local, self.options, work / "lr.tiff",
                                           magnification=scanned.magnification, mpp=scanned.mpp)
        except Exception as exc:  # noqa: BLE001 - a file that breaks a reader or a check is refused
            log.exception("qc.processing_error", exam_id=scanned.exam_id, slide_number=scanned.slide_number)
            return refused(QcFailureKind.UNREADABLE,
                           f"QC could not process the scan ({type(exc).__name__}: {str(exc)[:300]})")

    async def _released(self, scanned: SlideScanned) -> bool:
        """The save released this very upload (its slide is stored): the event is a repeat."""
        marker = self.bucket.ref(ingest_released_key(scanned.exam_id, scanned.slide_number))
        try:
            body = json.loads(await self.bucket.store.get_bytes(marker, max_bytes=1 << 16))
        except (FileNotFoundError, ValueError):
            return False
        return isinstance(body, dict) and body.get("scan") == scanned.ingest.key

    async def _store_report(self, scanned: SlideScanned, verdict: ScanVerdict) -> ObjectRef:
        prefix = qc_report_prefix(scanned.exam_id, scanned.slide_number)
        report_ref = await self.bucket.put_bytes(prefix + "report.json", verdict.report_json().encode("utf-8"),
                                                 content_type="application/json")
        if verdict.report is not None and verdict.report.overview is not None:
            png = await asyncio.to_thread(verdict.report.overlay_png)
            await self.bucket.put_bytes(prefix + "overlay.png", png, content_type="image/png")
        return report_ref

    def _passed(self, scanned: SlideScanned, verdict: ScanVerdict, stored: Any) -> SlideQcPassed:
        return SlideQcPassed(
            patient_id=scanned.patient_id,
            exam_id=scanned.exam_id,
            slide_number=scanned.slide_number,
            lr=stored.ref,
            hr_candidate=scanned.ingest if verdict.hr_candidate else None,
            scan=scanned.ingest,
            width=verdict.width,
            height=verdict.height,
            magnification=float(verdict.magnification or self.options.lr_magnification),
            mpp=verdict.mpp,
            sha256=stored.sha256,
            size_bytes=stored.size,
            acquired_at=scanned.acquired_at,
            checks=verdict.checks,
            corrected=verdict.corrected,
            body_part=scanned.body_part,
        )

    def _failed(self, scanned: SlideScanned, verdict: ScanVerdict, report_ref: ObjectRef) -> SlideQcFailed:
        assert verdict.failure is not None
        return SlideQcFailed(
            patient_id=scanned.patient_id,
            exam_id=scanned.exam_id,
            slide_number=scanned.slide_number,
            ingest=scanned.ingest,
            kind=verdict.failure,
            reason=_truncate(f"{verdict.reason} [report: {report_ref}]"),
            checks=verdict.checks,
        )
