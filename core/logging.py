"""Structured JSON logging with patient-identity redaction.

Every log line, from structlog or from stdlib loggers (faust, aiokafka, uvicorn), passes
one redaction step before it is rendered:

- values of keys in ``schemas.SENSITIVE_FIELDS`` (name, birth_date, national_id, identity,
  clinical_info, ...) and of file-name keys (``original_filename``...: the watch-folder
  convention puts the patient ID in a scan's name) become ``"[redacted]"``, at any depth, in
  dicts, lists and pydantic models;
- a ``patient_id`` (possibly a national ID number) is replaced by ``patient_ref``, a keyed
  hash (HMAC-SHA256 under the install's log salt, 64 bits) that is stable across processes
  sharing the salt, so operators can follow one patient through the logs without seeing the
  ID, and that cannot be reversed by hashing every possible ID without the salt;
- the patient IDs and identity values found in the line are also scrubbed from every
  other string in it (an object key, the message, a traceback), as a second line of
  defence.

Call ``configure_logging(settings)`` once at start-up. A faust ``Worker`` must then be
created with ``override_logging=False`` or it replaces the root handler with its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import IO, Any

import structlog
from pydantic import BaseModel

from core.log_throttle import RepeatThrottle
from schemas.common import SENSITIVE_FIELDS

# What the redactor blanks: identity, clinical text, and file names.
REDACTED_FIELDS: tuple[str, ...] = (*SENSITIVE_FIELDS, "original_filename", "filename", "file_name")

REDACTED = "[redacted]"
PATIENT_REF_HEX = 16  # 64 bits of HMAC-SHA256
# The install's own salt when log_salt is not configured (``<state_dir>/secrets/``).
LOG_SALT_FILE = "log-salt.key"
# Identity strings shorter than this are not scrubbed from free text: "F" or "12" would
# mangle unrelated words and numbers, and carry no identity on their own.
_MIN_SCRUB_LENGTH = 4

# Until configure_logging sets the install's salt, a random one per process: never a value
# anybody else knows.
_salt: bytes = secrets.token_bytes(32)


def patient_ref(patient_id: str, salt: bytes | None = None) -> str:
    """Stable pseudonym of a patient ID for logs (HMAC-SHA256, first 16 hex digits: 64 bits)."""
    key = _salt if salt is None else salt
    return hmac.new(key, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()[:PATIENT_REF_HEX]


def keyed_digest(data: bytes, salt: bytes | None = None) -> str:
    """HMAC-SHA256 of ``data`` under the log salt (hex): identifies a payload without letting
    anyone who guesses its content confirm it."""
    return hmac.new(_salt if salt is None else salt, data, hashlib.sha256).hexdigest()


def log_salt(settings: Any) -> bytes:
    """The salt of ``settings``: the configured ``log_salt``, else the install's own random one
    (made once in ``<state_dir>/secrets/``, mode 0600), shared by every process of the install."""
    from core.secrets import install_secret

    configured = getattr(settings, "log_salt", None)
    return install_secret(settings.state_dir / "secrets", LOG_SALT_FILE, configured)


def redact(value: Any, salt: bytes | None = None) -> Any:
    """``value`` (models, dataclasses, dicts, lists) as plain data with identity removed, as
    every log line is: sensitive fields redacted, patient IDs replaced by ``patient_ref``, and
    the values found scrubbed from every other string."""
    return IdentityRedactor(salt).redact(value)


def _is_patient_id_key(key: str) -> bool:
    return key in ("patient_id", "patient_ids")


def _ref_key(key: str) -> str:
    return "patient_refs" if key == "patient_ids" else "patient_ref"


class IdentityRedactor:
    """structlog processor removing patient identity data from an event dict."""

    def __init__(self, salt: bytes | None = None, fields: Iterable[str] = REDACTED_FIELDS) -> None:
        self._salt = salt
        self._fields = frozenset(fields)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.redact(event_dict)
        return result

    def redact(self, value: Any) -> Any:
        found: set[str] = set()
        redacted = self._redact(_plain(value), found)
        if found:
            ordered = sorted((s for s in found if len(s) >= _MIN_SCRUB_LENGTH), key=len, reverse=True)
            redacted = _scrub_strings(redacted, ordered)
        return redacted

    def _redact(self, value: Any, secrets: set[str]) -> Any:
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                if name in self._fields:
                    _collect_strings(item, secrets)
                    out[name] = REDACTED if item is not None else None
                elif _is_patient_id_key(name):
                    _collect_strings(item, secrets)
                    out[_ref_key(name)] = self._pseudonymise(item)
                else:
                    out[name] = self._redact(item, secrets)
            return out
        if isinstance(value, list):
            return [self._redact(item, secrets) for item in value]
        return value

    def _pseudonymise(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, list):
            return [self._pseudonymise(item) for item in value]
        return patient_ref(str(value), self._salt)


def _plain(value: Any) -> Any:
    """Models, dataclasses and containers as plain dicts and lists, so nested identity
    fields are visible to the redactor."""
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


def _collect_strings(value: Any, into: set[str]) -> None:
    if isinstance(value, str):
        into.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, into)
    elif isinstance(value, list):
        for item in value:
            _collect_strings(item, into)
    elif value is not None and not isinstance(value, bool):
        into.add(str(value))


def _scrub_strings(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: _scrub_strings(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_strings(item, secrets) for item in value]
    return value


# File names in third-party log lines (tifffile names the file in every warning, an OSError
# quotes its path): the watch-folder convention puts the patient ID in a scan's name.
_SCAN_SUFFIXES = r"svs|tiff?|ndpi|mrxs|scn|vms|vmu|bif|svslide|dcm|dicom|jpe?g|png|jxl|jp2|j2k|bmp|gif|hl7|json|csv|part"
_FILE_NAME_PATTERNS = (
    (re.compile(r"<tifffile\.(\w+) '[^']*'"), r"<tifffile.\1 [file]"),
    (re.compile(r"""(['"])[^'"\n]*?(?:/|\\|\.(?:""" + _SCAN_SUFFIXES + r"""))[^'"\n]*\1""", re.IGNORECASE), "'[file]'"),
    (re.compile(r"(?<![\w:/])(?:/[^\s'\",;:)]+)+"), "[file]"),
    (re.compile(r"[\w.+~-]+\.(?:" + _SCAN_SUFFIXES + r")\b", re.IGNORECASE), "[file]"),
)
FILE_NAME = "[file]"


def scrub_file_names(text: str) -> str:
    """``text`` with file names and paths replaced by ``[file]``."""
    for pattern, replacement in _FILE_NAME_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub_foreign_file_names(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For stdlib records only (tifffile, uvicorn, aiokafka, faust...): our own events name
    no files, and their fields go through ``IdentityRedactor``."""
    event = event_dict.get("event")
    if isinstance(event, str):
        event_dict["event"] = scrub_file_names(event)
    return event_dict


def _level_number(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]


def build_handler(*, salt: bytes | None = None, json: bool = True, stream: IO[str] | None = None) -> logging.Handler:
    """A stdlib handler rendering both structlog and plain stdlib records, redacted."""
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    foreign_pre_chain: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        timestamper,
        _scrub_foreign_file_names,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_pre_chain,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            # Last before rendering, so tracebacks and extras are redacted too.
            IdentityRedactor(salt),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatThrottle())  # an outage is logged with backoff, not as a storm
    return handler


def configure_logging(settings: Any = None, *, stream: IO[str] | None = None) -> logging.Handler:
    """Set up structlog and the stdlib root logger from ``settings`` (log_level,
    log_format, log_salt). Idempotent: calling it again replaces the previous setup.
    Returns the installed handler."""
    global _salt
    if settings is None:
        from core.settings import get_settings

        settings = get_settings()
    level = _level_number(getattr(settings, "log_level", "info"))
    json = getattr(settings, "log_format", "json") != "console"
    if hasattr(settings, "state_dir"):
        _salt = log_salt(settings)

    handler = build_handler(salt=_salt, json=json, stream=stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so a later configure_logging (tests, CLI flags) takes effect everywhere.
        cache_logger_on_first_use=False,
    )
    return handler
