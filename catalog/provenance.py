"""Events are obeyed only within what their producer may do (the save and tier agents'
side of it; anyone who can write to a topic can forge an event).

* a ``slide.qc_passed`` may only point at QC's own output for that very slide (the ingest
  bucket's ``lr-staging/<exam>/<slide>.tiff``): never at another patient's stored slide;
* its HR candidate may only be the scanner's upload of that slide (``scans/<exam>/<slide>/``);
* event times (admission, discharge, acquisition) may not lie in the future beyond a small
  clock skew: a discharge dated 2099 would otherwise leave the patient "discharged" and
  every later admission ignored.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from catalog.errors import PermanentError
from schemas.common import ObjectRef
from schemas.layout import lr_staging_key, scan_prefix

# Clocks of the HIS, scanners and our hosts disagree a little; more than this is refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


class ForgedEvent(PermanentError):
    """The event asks for something its producer may not do."""


def check_qc_output(lr: ObjectRef, ingest_bucket: str, exam_id: str, slide_number: int) -> None:
    expected = ObjectRef(bucket=ingest_bucket, key=lr_staging_key(exam_id, slide_number))
    if lr != expected:
        raise ForgedEvent(f"slide.qc_passed for exam {exam_id} slide {slide_number} names {lr} as its LR; "
                          f"only QC's output {expected} is accepted")


def check_scan_upload(scan: ObjectRef, ingest_bucket: str, exam_id: str, slide_number: int) -> None:
    """An HR candidate must be the scanner's own upload of that very slide."""
    prefix = scan_prefix(exam_id, slide_number)
    if scan.bucket != ingest_bucket or not scan.key.startswith(prefix) or ".." in scan.key:
        raise ForgedEvent(f"slide.qc_passed for exam {exam_id} slide {slide_number} names {scan} as its HR scan; "
                          f"only uploads under {ingest_bucket}/{prefix} are accepted")


def check_not_future(what: str, at: datetime, now: datetime) -> None:
    if at > now + MAX_CLOCK_SKEW:
        raise ForgedEvent(f"{what} {at.isoformat()} is in the future (now {now.isoformat(timespec='seconds')}, "
                          f"allowed skew {MAX_CLOCK_SKEW.total_seconds():.0f} s)")
