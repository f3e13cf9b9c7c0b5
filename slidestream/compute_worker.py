"""A dedicated compute worker: ``python -m slidestream.compute_worker`` runs only the upscale agent.

GPU nodes run these (one process per GPU, ``SLIDESTREAM_COMPUTE__DEVICE=cuda:N``); all of
them join one consumer group and share the partitions of ``upscale.requested``.

Unlike the all-agents worker, it does not make a rebalance wait until every fetched
request is finished (Faust's ``stream_wait_empty``): a new worker joining, or one leaving,
must not stall interactive requests behind a local background backlog. Requests of revoked
partitions are handed over unacknowledged (``ComputeEngine.drop_sources``) and tiles in
flight are protected by their leases, so nothing is computed twice or lost.
"""

from __future__ import annotations

import warnings

import faust

from agents.app import create_app
from agents.upscale import UpscaleService
from compute.upscaler import Upscaler
from core.logging import configure_logging
from core.settings import Settings, get_settings


def create_compute_app(settings: Settings, *, upscaler: Upscaler | None = None) -> tuple[faust.App, UpscaleService]:
    """The app of a compute worker and its upscale service (``upscaler`` overrides the
    configured model: tests and the bench)."""
    from agents.upscale import register

    app = create_app(settings, agent_modules=())
    service = register(app, settings, upscaler=upscaler)
    with warnings.catch_warnings():
        # Read by Faust only when a rebalance or shutdown starts, so setting it after the
        # app was built (create_app is shared by every worker kind) is effective.
        warnings.simplefilter("ignore")
        app.conf.stream_wait_empty = False
    return app, service


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    app, _ = create_compute_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
