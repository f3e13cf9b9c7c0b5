"""Retrying calls to the catalog database and object storage while they are unavailable.

Transient failures (a server restarting, a connection refused, a 503) are retried with
capped exponential backoff and full jitter; everything else propagates at once. Agents
retry without a limit, so a Kafka offset is not committed until the work is done: an
outage delays events, it never loses them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import structlog
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

T = TypeVar("T")
log = structlog.get_logger(__name__)

# S3 error codes that mean "try again later" (AWS, MinIO, Ceph RGW use these).
_TRANSIENT_S3_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "XMinioServerNotInitialized", "XMinioStorageFull", "OperationTimedOut",
})


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same call later may succeed."""
    if isinstance(exc, (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    try:
        import urllib3.exceptions as u3
        from minio.error import S3Error, ServerError
    except ImportError:  # pragma: no cover - both are dependencies
        return False
    if isinstance(exc, (u3.MaxRetryError, u3.ProtocolError, u3.NewConnectionError, u3.TimeoutError,
                        u3.ProxyError)):
        return True
    if isinstance(exc, ServerError):  # a non-XML 5xx answer
        return True
    if isinstance(exc, S3Error):
        return exc.code in _TRANSIENT_S3_CODES
    return False


def backoff_delays(base: float = 0.5, cap: float = 30.0, *, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays: full jitter over an exponentially growing, capped window."""
    if base <= 0 or cap < base:
        raise ValueError("need 0 < base <= cap")
    rng = rng or random.Random()
    window = base
    while True:
        yield rng.uniform(0, window)
        window = min(cap, window * 2)


async def with_retries(call: Callable[[], Awaitable[T]], *, what: str, attempts: int | None = None,
                       base: float = 0.5, cap: float = 30.0,
                       transient: Callable[[BaseException], bool] = is_transient) -> T:
    """Run ``call`` until it succeeds or fails permanently; ``attempts`` None = no limit."""
    delays = backoff_delays(base, cap)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except Exception as exc:
            if not transient(exc) or (attempts is not None and attempt >= attempts):
                raise
            delay = next(delays)
            # Only the exception type and a short message: no event payloads in logs.
            log.warning("retrying.transient_failure", what=what, attempt=attempt,
                        error=type(exc).__name__, delay_s=round(delay, 2))
            await asyncio.sleep(delay)
