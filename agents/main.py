"""Worker entry point: ``python -m agents worker`` (Faust's own command line)."""

from agents.app import create_app
from slidestream.logging import configure_logging
from slidestream.settings import get_settings

settings = get_settings()
configure_logging(settings)
app = create_app(settings)
