"""How long anything may stay in the ingest bucket: S3 bucket lifecycle expiration rules, one
per prefix the system writes there (``schemas.layout.INGEST_PREFIXES``).

* ``scans/`` and ``lr-staging/``: ``storage.ingest_retention.unsaved_days`` (14). A saved
  slide's upload and LR are deleted by the save at once (``storage.ingest_release``); what
  the rule removes is a refused scan, kept that long for the operator, and the rest of a pass
  whose save or HR cut never finished.
* ``qc/``: ``storage.ingest_retention.qc_report_days`` (30): QC reports and overlays.

Each rule also aborts multipart uploads left unfinished for a day (a scanner that died halfway
through a large scan leaves its parts, patient data too). AWS S3 applies that; MinIO accepts
the rule but drops that element, and removes stale multipart uploads by itself (its
``stale_uploads_expiry``, 24 h by default).

Bootstrap sets the rules (``ensure_ingest_lifecycle``) on whatever S3 endpoint the ingest
tier has: the local MinIO, docker-compose's, production's. Rules of others on the bucket
(ids not starting with ``RULE_ID_PREFIX``) are kept. A backend without lifecycle support is
reported once and bootstrap goes on (nothing then expires by itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import structlog
from minio.commonconfig import ENABLED, Filter
from minio.error import S3Error
from minio.lifecycleconfig import AbortIncompleteMultipartUpload, Expiration, LifecycleConfig, Rule

from core.settings import IngestRetention, StorageSettings
from schemas.layout import LR_STAGING_PREFIX, QC_PREFIX, SCANS_PREFIX
from storage.objects import ObjectStore

log = structlog.get_logger(__name__)

RULE_ID_PREFIX = "slidestream-ingest-"
# What S3 backends answer when they have no lifecycle API.
UNSUPPORTED_CODES = frozenset({"NotImplemented", "XNotImplemented", "MethodNotAllowed"})
# Unfinished multipart uploads are aborted after this many days.
ABORT_UPLOADS_DAYS = 1
# "No configuration yet" on a bucket.
NO_CONFIGURATION_CODES = frozenset({"NoSuchLifecycleConfiguration"})


@dataclass(frozen=True)
class ExpiryRule:
    rule_id: str
    prefix: str
    days: int


def ingest_expiry_rules(retention: IngestRetention) -> tuple[ExpiryRule, ...]:
    """The rules the ingest bucket must carry, from the settings."""
    return (
        ExpiryRule(f"{RULE_ID_PREFIX}scans", SCANS_PREFIX, retention.unsaved_days),
        ExpiryRule(f"{RULE_ID_PREFIX}lr-staging", LR_STAGING_PREFIX, retention.unsaved_days),
        ExpiryRule(f"{RULE_ID_PREFIX}qc", QC_PREFIX, retention.qc_report_days),
    )


def expiry_rules_of(config: LifecycleConfig | None) -> tuple[ExpiryRule, ...]:
    """The enabled prefix expiration rules (in days) of a bucket's configuration, sorted by id."""
    found = []
    for rule in (config.rules if config is not None else []):
        prefix = rule.rule_filter.prefix if rule.rule_filter is not None else None
        days = rule.expiration.days if rule.expiration is not None else None
        if rule.status == ENABLED and rule.rule_id and prefix is not None and days:
            found.append(ExpiryRule(rule.rule_id, prefix, int(days)))
    return tuple(sorted(found, key=lambda r: r.rule_id))


def merged_config(existing: LifecycleConfig | None, wanted: tuple[ExpiryRule, ...]) -> LifecycleConfig | None:
    """``existing`` with our rules replaced by ``wanted`` (others' rules kept); None when the
    bucket already carries exactly ``wanted``."""
    ours = tuple(r for r in expiry_rules_of(existing) if r.rule_id.startswith(RULE_ID_PREFIX))
    stale = [r for r in (existing.rules if existing is not None else [])
             if (r.rule_id or "").startswith(RULE_ID_PREFIX)]
    if ours == tuple(sorted(wanted, key=lambda r: r.rule_id)) and len(stale) == len(ours):
        return None
    foreign = [r for r in (existing.rules if existing is not None else [])
               if not (r.rule_id or "").startswith(RULE_ID_PREFIX)]
    return LifecycleConfig(foreign + [
        Rule(ENABLED, rule_filter=Filter(prefix=r.prefix), rule_id=r.rule_id, expiration=Expiration(days=r.days),
             abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(days_after_initiation=ABORT_UPLOADS_DAYS))
        for r in wanted])


def ensure_ingest_lifecycle(storage: StorageSettings) -> Literal["set", "unchanged", "unsupported"]:
    """Give the ingest bucket (which must exist) its expiry rules; blocking (bootstrap runs it
    in a thread)."""
    store = ObjectStore(storage)
    bucket = store.bucket("ingest")
    client = store.client(bucket)
    try:
        try:
            existing = client.get_bucket_lifecycle(bucket)
        except S3Error as exc:
            if exc.code in UNSUPPORTED_CODES:
                log.warning("ingest.lifecycle_unsupported", bucket=bucket, code=exc.code)
                return "unsupported"
            if exc.code not in NO_CONFIGURATION_CODES:
                raise
            existing = None
        config = merged_config(existing, ingest_expiry_rules(storage.ingest_retention))
        if config is None:
            return "unchanged"
        try:
            client.set_bucket_lifecycle(bucket, config)
        except S3Error as exc:
            if exc.code in UNSUPPORTED_CODES:
                log.warning("ingest.lifecycle_unsupported", bucket=bucket, code=exc.code)
                return "unsupported"
            raise
        log.info("ingest.lifecycle_set", bucket=bucket,
                 rules={r.prefix: r.days for r in ingest_expiry_rules(storage.ingest_retention)})
        return "set"
    finally:
        store.close()


def read_ingest_expiry(storage: StorageSettings) -> tuple[ExpiryRule, ...]:
    """The expiry rules the ingest bucket carries now (read back from the backend)."""
    store = ObjectStore(storage)
    bucket = store.bucket("ingest")
    try:
        try:
            return expiry_rules_of(store.client(bucket).get_bucket_lifecycle(bucket))
        except S3Error as exc:
            if exc.code in NO_CONFIGURATION_CODES | UNSUPPORTED_CODES:
                return ()
            raise
    finally:
        store.close()
