"""Worker entry point: ``python -m agents`` runs one Faust worker with every agent.

The worker is built here rather than by Faust's command line so that our redacting log
set-up stays in place (Faust's default replaces the root log handler).
"""

from __future__ import annotations

import faust

from agents.app import create_app
from core.logging import configure_logging
from core.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, override_logging=False,
                          redirect_stdouts=False)
    worker.execute_from_commandline()
