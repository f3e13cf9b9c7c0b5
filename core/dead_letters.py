"""Dead letters without identity data: the one place a rejected message becomes a
``DeadLetter``.

The dead-letter topic is kept 30 days and read by operators, so a rejected message is never
copied into it as it came: a ``patient.admitted`` that failed validation may still carry a
name, a birth date and a national ID, and its Kafka key is often the patient ID. What is kept:

- the reason and the message's coordinates (topic, partition, offset);
- the payload's size and its keyed digest (HMAC-SHA256 under the log salt), always;
- when the payload is JSON, small enough and not nested too deeply, a redacted copy: the log
  redactor's rules (identity fields redacted, patient IDs replaced by ``patient_ref``, the
  values found scrubbed from every other string), file names redacted too, and every object
  key that is not a field name of our schemas replaced, with its value (a key is the sender's
  text too, and what it holds is unvalidated: "nom": "Ada Lovelace");
- the original key only as its ``patient_ref``.

Nothing here raises on hostile input: a payload nested 100 000 levels deep, over a mebibyte,
not UTF-8 or not JSON becomes a dead letter with its size and digest and no copy.
"""

from __future__ import annotations

import json
from typing import Any

from core.logging import REDACTED, IdentityRedactor, keyed_digest, patient_ref
from schemas.events import DeadLetter
from schemas.registry import field_names

# Larger payloads keep only size and digest: the dead letter must stay far below the 1 MiB
# an event may have, and a redacted copy of something that large helps nobody.
MAX_COPIED_BYTES = 64 << 10
MAX_COPIED_DEPTH = 32
UNKNOWN_KEY = "[unknown field {}]"


def dead_letter(
    raw: bytes | str | None,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    error: str,
    key: bytes | str | None = None,
    salt: bytes | None = None,
) -> DeadLetter:
    """The dead letter of a rejected message (``salt``: the log salt; None, the one
    ``core.logging.configure_logging`` installed)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
    key_text = key.decode("utf-8", errors="backslashreplace") if isinstance(key, bytes) else key
    copy, reason = redacted_copy(data, error or "unknown error", salt)
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key_ref=patient_ref(key_text, salt) if key_text else None,
        payload_size=len(data),
        payload_digest=keyed_digest(data, salt),
        redacted=copy,
        error=reason,
    )


def redacted_copy(data: bytes, reason: str = "", salt: bytes | None = None) -> tuple[Any, str]:
    """``data`` parsed as JSON and redacted (None when it is not JSON, too large or too deeply
    nested to copy safely), and ``reason`` with the identity values found in it scrubbed too
    (a second line of defence: reasons are written never to quote the input)."""
    if len(data) > MAX_COPIED_BYTES:
        return None, reason
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=str)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, "[" * 100_000, huge integers
        return None, reason
    if _deeper_than(document, MAX_COPIED_DEPTH):
        return None, reason
    both = IdentityRedactor(salt).redact(
        {"payload": _known_keys(document), "reason": reason})
    copy, reason = both["payload"], both["reason"]
    if len(json.dumps(copy)) > 4 * MAX_COPIED_BYTES:  # renamed keys can make it grow
        return None, reason
    return copy, reason


def _deeper_than(document: Any, limit: int) -> bool:
    """Iterative, so that measuring a deep document cannot overflow the stack."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def _known_keys(value: Any) -> Any:
    """Object keys that name no schema field replaced by a numbered placeholder, and their
    values by ``[redacted]``."""
    if isinstance(value, dict):
        known = field_names()
        out: dict[str, Any] = {}
        for index, (name, item) in enumerate(value.items(), start=1):
            if name in known:
                out[name] = _known_keys(item)
            else:
                out[UNKNOWN_KEY.format(index)] = None if item is None else REDACTED
        return out
    if isinstance(value, list):
        return [_known_keys(item) for item in value]
    return value
