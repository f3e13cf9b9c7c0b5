"""The ingest bucket's expiry rules: one per prefix written there, days from the settings,
others' rules kept, nothing rewritten when the bucket already carries them."""

from __future__ import annotations

from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule, Transition
from minio.xml import marshal, unmarshal

from core.settings import IngestRetention, Settings
from schemas.layout import INGEST_PREFIXES, ingest_key, ingest_released_key, lr_staging_key, qc_report_prefix
from storage.ingest_lifecycle import ExpiryRule, expiry_rules_of, ingest_expiry_rules, merged_config


def test_every_prefix_written_to_ingest_has_a_rule_with_the_configured_days() -> None:
    rules = ingest_expiry_rules(IngestRetention(unsaved_days=9, qc_report_days=40))
    assert {r.prefix: r.days for r in rules} == {"scans/": 9, "lr-staging/": 9, "qc/": 40}
    assert {r.prefix for r in rules} == set(INGEST_PREFIXES)
    # Every key the system writes to the ingest bucket falls under one of the rules.
    for key in (ingest_key("E1", 1, "scan.svs"), lr_staging_key("E1", 1), qc_report_prefix("E1", 1) + "report.json",
                qc_report_prefix("E1", 1) + "overlay.png", ingest_released_key("E1", 1)):
        assert sum(key.startswith(r.prefix) for r in rules) == 1, key


def test_defaults_are_two_weeks_for_unsaved_scans_and_a_month_for_qc_reports() -> None:
    retention = Settings().storage.ingest_retention
    assert (retention.unsaved_days, retention.qc_report_days) == (14, 30)


def test_an_empty_bucket_gets_our_rules_and_they_read_back() -> None:
    wanted = ingest_expiry_rules(IngestRetention())
    config = merged_config(None, wanted)
    assert config is not None
    # Through the XML the S3 API carries, as a backend would store and return it.
    round_trip = unmarshal(LifecycleConfig, marshal(config).decode())
    assert expiry_rules_of(round_trip) == tuple(sorted(wanted, key=lambda r: r.rule_id))
    assert merged_config(round_trip, wanted) is None  # already there: nothing to write
    # Unfinished multipart uploads (parts of a scan) go too, where the backend supports it.
    assert all(r.abort_incomplete_multipart_upload.days_after_initiation == 1 for r in round_trip.rules)


def test_changed_days_replace_our_rules_and_keep_foreign_ones() -> None:
    foreign = Rule(ENABLED, rule_filter=Filter(prefix="archive/"), rule_id="ops-archive",
                   transition=Transition(days=30, storage_class="GLACIER"))
    existing = LifecycleConfig([foreign, *merged_config(None, ingest_expiry_rules(IngestRetention())).rules])
    wanted = ingest_expiry_rules(IngestRetention(unsaved_days=3))
    config = merged_config(existing, wanted)
    assert config is not None
    assert [r.rule_id for r in config.rules].count("ops-archive") == 1
    ours = [r for r in expiry_rules_of(config) if r.rule_id != "ops-archive"]
    assert {r.prefix: r.days for r in ours} == {"scans/": 3, "lr-staging/": 3, "qc/": 30}


def test_a_disabled_or_extra_rule_of_ours_is_rewritten() -> None:
    wanted = ingest_expiry_rules(IngestRetention())
    disabled = LifecycleConfig([Rule("Disabled", rule_filter=Filter(prefix=r.prefix), rule_id=r.rule_id,
                                     expiration=Expiration(days=r.days)) for r in wanted])
    assert merged_config(disabled, wanted) is not None
    extra = LifecycleConfig([*merged_config(None, wanted).rules,
                             Rule(ENABLED, rule_filter=Filter(prefix="old/"), rule_id="slidestream-ingest-old",
                                  expiration=Expiration(days=1))])
    rewritten = merged_config(extra, wanted)
    assert rewritten is not None and ExpiryRule("slidestream-ingest-old", "old/", 1) not in expiry_rules_of(rewritten)


def test_slide_command_says_a_report_expired_only_once_the_retention_is_over() -> None:
    from datetime import UTC, datetime, timedelta

    from slidestream.commands.operator import missing_report_line

    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    expired = missing_report_line(30, now - timedelta(days=31), now)
    assert "report expired" in expired and "kept 30 days" in expired and "2026-10-27" in expired
    assert "expired (" not in missing_report_line(30, now - timedelta(days=29), now)
    assert "kept 30 days" in missing_report_line(30, None, now)
    naive = (now - timedelta(days=40)).replace(tzinfo=None)  # as a catalog without tz-awareness returns it
    assert "report expired" in missing_report_line(30, naive, now)
