"""Organise / export (SPEC 2): a patient's images with a manifest, to a directory or an S3
prefix; traversal and overwrites refused; HR requested at background priority."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from catalog.errors import UnknownPatient
from core.kafka import tail_from_end
from core.settings import Settings
from core.upscale_client import UpscaleClient
from schemas.common import ObjectRef, StorageTier
from schemas.events import UpscaleRequested
from schemas.layout import hr_tile_key
from schemas.topics import Priority, Topic, priority_partitions
from storage.errors import UnsafeExportPath
from storage.export import ExportService
from storage.export_paths import LocalTarget, S3Target, parse_target
from tests.integration.test_tier_services import saved_patient
from tests.integration.tierkit import services, uid

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def _patient_with_hr(svc) -> tuple[str, str, list]:
    patient, exam, images = await saved_patient(svc, slides=2)
    bucket = svc.store.bucket(StorageTier.TEMPORARY)
    await svc.store.put_bytes(ObjectRef(bucket=bucket, key=hr_tile_key(exam, 1, 4, 12, 0, 0)), b"tile-a")
    await svc.store.put_bytes(ObjectRef(bucket=bucket, key=hr_tile_key(exam, 1, 4, 12, 1, 0)), b"tile-b")
    return patient, exam, images


async def test_export_to_a_directory_with_manifest_then_refuse_to_overwrite(stack: Settings, tmp_path: Path) -> None:
    async with services(stack) as svc:
        patient, exam, images = await _patient_with_hr(svc)
        target = tmp_path / "out"
        report = await svc.exporter.export_patient(patient, LocalTarget(target))
        assert report.lr_count == 2 and report.hr_count == 2
        manifest = json.loads((target / "manifest.json").read_text())
        assert manifest["patient_id"] == patient
        for image in images:
            path = target / exam / f"slide-{image.slide_number:04d}.lr.tiff"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256
            entry = next(f for f in manifest["files"] if f["path"] == f"{exam}/slide-{image.slide_number:04d}.lr.tiff")
            assert entry["sha256"] == image.sha256 and entry["state"] == 0 and entry["slide_number"] == image.slide_number
        assert (target / exam / "slide-0001.hr" / "x4" / "12" / "1_0.png").read_bytes() == b"tile-b"
        assert manifest["hr"] == {f"{exam}/1": "cached", f"{exam}/2": "none"}

        before = tree(target)
        with pytest.raises(UnsafeExportPath, match="overwrite"):
            await svc.exporter.export_patient(patient, LocalTarget(target))
        assert tree(target) == before  # nothing touched


async def test_a_symlink_in_the_target_cannot_redirect_files_outside(stack: Settings, tmp_path: Path) -> None:
    async with services(stack) as svc:
        patient, exam, _ = await saved_patient(svc, slides=1)
        target, outside = tmp_path / "out", tmp_path / "elsewhere"
        target.mkdir()
        outside.mkdir()
        os.symlink(outside, target / exam)
        with pytest.raises(UnsafeExportPath, match="leave the target"):
            await svc.exporter.export_patient(patient, LocalTarget(target))
        assert list(outside.iterdir()) == [] and not (target / "manifest.json").exists()


async def test_export_to_an_s3_prefix(stack: Settings) -> None:
    async with services(stack) as svc:
        patient, exam, images = await _patient_with_hr(svc)
        bucket = "slidestream-export-test"
        client = svc.store.client(bucket)
        if not await asyncio.to_thread(client.bucket_exists, bucket):
            await asyncio.to_thread(client.make_bucket, bucket)
        prefix = uid("ward-")
        target = parse_target(f"s3://{bucket}/{prefix}", export_root=Path("unused"))
        assert target == S3Target(bucket, f"{prefix}/")
        report = await svc.exporter.export_patient(patient, target, include_hr=False)
        assert report.lr_count == 2 and report.hr_count == 0
        copied = await svc.store.checksum(ObjectRef(bucket=bucket, key=f"{prefix}/{exam}/slide-0002.lr.tiff"))
        assert copied[0] == images[1].sha256
        assert await svc.store.exists(ObjectRef(bucket=bucket, key=f"{prefix}/manifest.json"))
        with pytest.raises(UnsafeExportPath):
            await svc.exporter.export_patient(patient, target, include_hr=False)


async def test_unknown_patient_is_a_clear_error(stack: Settings, tmp_path: Path) -> None:
    async with services(stack) as svc:
        with pytest.raises(UnknownPatient):
            await svc.exporter.export_patient(uid("P"), LocalTarget(tmp_path / "x"))
        assert not (tmp_path / "x").exists()


async def test_requested_hr_goes_out_at_background_priority_and_times_out_cleanly(stack: Settings,
                                                                                    tmp_path: Path) -> None:
    async with services(stack) as svc, UpscaleClient(stack) as gateway, \
            tail_from_end(stack, Topic.UPSCALE_REQUESTED.value) as requests:
        patient, exam, _ = await saved_patient(svc, slides=1)
        exporter = ExportService(svc.catalog, svc.store, gateway)
        report = await exporter.export_patient(patient, LocalTarget(tmp_path / "hr"), request_hr_scale=2,
                                               hr_timeout_s=2.0)
        assert report.hr_status == {f"{exam}/1": "timeout"} and report.lr_count == 1
        record = await asyncio.wait_for(requests.getone(), 30)
        request = UpscaleRequested.model_validate_json(record.value)
        assert request.exam_id == exam and request.priority is Priority.BACKGROUND
        assert record.partition in priority_partitions(Priority.BACKGROUND)
        assert request.tiles and all(t.level == request.tiles[0].level for t in request.tiles)


def test_cli_export_and_its_refusals(stack: Settings, tmp_path: Path) -> None:
    async def prepare() -> str:
        async with services(stack) as svc:
            patient, _, _ = await saved_patient(svc, slides=1)
            return patient

    patient = asyncio.run(prepare())
    target = tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "slidestream", "export", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SLIDESTREAM_EXPORT_ROOT": str(tmp_path)})

    first = cli("--patient", patient, "--to", str(target))
    assert first.returncode == 0, first.stderr
    assert "exported 1 LR slide(s)" in first.stdout and (target / "manifest.json").exists()
    again = cli("--patient", patient, "--to", str(target))
    assert again.returncode == 2 and "refuses to overwrite" in again.stderr
    traversal = cli("--patient", patient, "--to", "s3://exports-elsewhere/../x")
    assert traversal.returncode == 2 and "'..'" in traversal.stderr
    # Seen in a security review: these wrote outside any export area or into live storage,
    # or ended in a stack trace.
    for outside in ("../../escaped", "/proc/x", str(tmp_path.parent / "sibling")):
        refused = cli("--patient", patient, "--to", outside)
        assert refused.returncode == 2 and "outside the export root" in refused.stderr, refused.stderr
    live = cli("--patient", patient, "--to", "s3://slidestream-recent/exports")
    assert live.returncode == 2 and "holds live slides" in live.stderr
    missing = cli("--patient", patient, "--to", f"s3://{uid('no-such-bucket-')}/x")
    assert missing.returncode == 2 and "cannot write to s3://" in missing.stderr
    assert "Traceback" not in missing.stderr + live.stderr
    assert not (tmp_path.parent / "sibling").exists()
    unknown = cli("--patient", uid("P"), "--to", str(tmp_path / "none"))
    assert unknown.returncode == 2 and "not in the catalog" in unknown.stderr
