"""The Faust application: one app, several thin agents, each registered by its own module."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

import faust

from core.kafka import SASL_MECHANISM, kafka_credentials, ssl_context
from core.settings import Settings, get_settings

# Each module exposes ``register(app, settings)`` and owns one concern.
DEFAULT_AGENT_MODULES: tuple[str, ...] = (
    "agents.probe",
    "agents.save",
    "agents.hr_scan",
    "agents.tiering",
    "agents.qc",
    "agents.upscale",
    "agents.distribution",
)


def broker_credentials(settings: Settings) -> faust.SASLCredentials:
    """The application principal's SASL/SCRAM credentials (core.kafka is their one source)."""
    user, password = kafka_credentials(settings, "app")
    return faust.SASLCredentials(username=user, password=password, mechanism=SASL_MECHANISM,
                                 ssl_context=ssl_context(settings))


def create_app(settings: Settings | None = None,
               agent_modules: Iterable[str] = DEFAULT_AGENT_MODULES) -> faust.App:
    settings = settings or get_settings()
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        broker_credentials=broker_credentials(settings),
        store="memory://",
        # Under the state directory, not the working directory (Faust's default), so that no
        # process or test leaves ``<app id>-data`` folders wherever it was started.
        datadir=str(settings.state_dir / "faust" / "{conf.name}-data"),
        web_enabled=False,
        autodiscover=False,
        topic_replication_factor=1,
        # Event topics are created with their partitioning by infra.bootstrap; Faust may still
        # declare its own internal topics (leader, changelogs), which the broker will not auto-create.
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka.session_timeout_s / 3),
        broker_commit_every=100,
        broker_commit_interval=1.0,
    )
    for name in agent_modules:
        importlib.import_module(name).register(app, settings)
    return app
