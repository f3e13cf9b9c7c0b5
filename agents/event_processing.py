"""One way for storage agents to process an event: retry outages, dead-letter bad input.

The agent does not return to Faust (and so does not let it commit the offset) until the
work is done: transient failures of the database or object store are retried with backoff
for as long as they last; a ``PermanentError`` (unknown exam, conflicting slide, missing
object...) sends the message to the dead-letter topic with the reason and moves on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
import structlog

from agents.messaging import dead_letter
from catalog.errors import PermanentError
from core.retry import with_retries

T = TypeVar("T")
log = structlog.get_logger(__name__)


async def process(app: faust.App, message: Any, work: Callable[[], Awaitable[T]], *, what: str) -> T | None:
    try:
        return await with_retries(work, what=what)
    except PermanentError as exc:
        await dead_letter(app, message, f"{what}: {exc}")
        return None
