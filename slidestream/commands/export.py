"""``slidestream export``: gather a patient's images and a manifest in a directory or S3 prefix;
``slidestream convert-lr``: re-encode one LR file for software other than slidestream."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from core.settings import Settings


async def run_export(settings: Settings, patient_id: str, to: str, *, include_hr: bool,
                     request_hr_scale: int | None, hr_timeout_s: float) -> int:
    from minio.error import S3Error

    from catalog.errors import PermanentError
    from core.upscale_client import UpscaleClient
    from storage import export_paths
    from storage.runtime import open_services

    live = frozenset(tier.bucket for tier in settings.storage.tiers().values())
    try:
        target = export_paths.parse_target(to, export_root=settings.export_root, live_buckets=live)
    except PermanentError as exc:
        print(f"slidestream export: {exc}", file=sys.stderr)
        return 2

    async def no_events(event, *, partition=None) -> None:  # export publishes nothing itself
        raise RuntimeError("export does not publish events")

    async with contextlib.AsyncExitStack() as exits:
        gateway = await exits.enter_async_context(UpscaleClient(settings)) if request_hr_scale else None
        services = await open_services(settings, no_events, gateway=gateway, indexes=False)
        exits.push_async_callback(services.close)
        try:
            report = await services.exporter.export_patient(
                patient_id, target, include_hr=include_hr, request_hr_scale=request_hr_scale,
                hr_timeout_s=hr_timeout_s, actor="cli-export")
        except PermanentError as exc:
            print(f"slidestream export: {exc}", file=sys.stderr)
            return 2
        except (OSError, S3Error) as exc:  # unwritable directory, missing bucket: say so, no traceback
            detail = exc.message if isinstance(exc, S3Error) else str(exc)
            print(f"slidestream export: cannot write to {target}: {detail}", file=sys.stderr)
            return 2
    print(f"exported {report.lr_count} LR slide(s) and {report.hr_count} HR tile(s), "
          f"{report.bytes_written / 1e6:.1f} MB, to {report.target} (manifest.json)")
    for slide, status in sorted(report.hr_status.items()):
        print(f"  HR {slide}: {status}")
    return 0


def run_convert_lr(source: Path, destination: Path, compression: str) -> int:
    """Re-encode one LR file for other software (exports carry the stored bytes as they are)."""
    from slide_io import Compression, SlideError, transcode_pyramid

    if destination.exists():
        print(f"slidestream convert-lr: {destination} exists; nothing written", file=sys.stderr)
        return 2
    partial = destination.with_name(destination.name + ".partial")
    try:
        metadata = transcode_pyramid(source, partial, compression=Compression(compression))
        partial.replace(destination)
    except (SlideError, OSError) as exc:
        partial.unlink(missing_ok=True)
        print(f"slidestream convert-lr: {exc}", file=sys.stderr)
        return 2
    print(f"{source.name} ({metadata.get('compression', 'unknown')}) -> {destination} ({compression})")
    return 0


def add_commands(sub: argparse._SubParsersAction, settings: Callable[[], Settings]) -> None:
    p = sub.add_parser("export", help="copy all images of a patient, with a manifest, to a directory or S3 prefix")
    p.add_argument("--patient", required=True, help="patient ID")
    p.add_argument("--to", required=True, help="directory under the export root (SLIDESTREAM_EXPORT_ROOT), "
                                               "or s3://bucket/prefix outside the live tiers' buckets")
    p.add_argument("--no-hr", action="store_true", help="LR slides only (default: also HR tiles in the cache)")
    p.add_argument("--request-hr", type=int, choices=(2, 4, 8), metavar="SCALE",
                   help="first ask the compute service for each slide's HR pyramid at this scale")
    p.add_argument("--hr-timeout", type=float, default=120.0, help="seconds to wait per slide for HR")

    def run(args: argparse.Namespace) -> int:
        from core.logging import configure_logging

        config = settings()
        configure_logging(config)
        return asyncio.run(run_export(config, args.patient, args.to, include_hr=not args.no_hr,
                                      request_hr_scale=args.request_hr, hr_timeout_s=args.hr_timeout))

    p.set_defaults(func=run)

    p = sub.add_parser("convert-lr", help="re-encode a stored or exported LR slide for other software "
                                          "(the default AVIF tiles are read by slidestream only)")
    p.add_argument("source", type=Path, help="LR TIFF (e.g. slide-0001.lr.tiff from an export)")
    p.add_argument("destination", type=Path, help="new file (must not exist)")
    p.add_argument("--compression", choices=["zstd", "jpeg"], default="zstd",
                   help="zstd: the decoded pixels exactly, read by tifffile and OpenSlide 4; "
                        "jpeg: q90 4:4:4, read by any TIFF viewer (default: zstd)")
    p.set_defaults(func=lambda args: run_convert_lr(args.source, args.destination, args.compression))
