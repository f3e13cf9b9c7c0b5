"""Who may post to the HIS JSON endpoint: senders holding an API key.

A key is 32 random bytes (43 characters, URL-safe base64), presented as
``Authorization: Bearer <key>``. The adapter keeps only its SHA-256 digest and compares the
digest of what it is shown with every known digest (``hmac.compare_digest``). A random 256-bit
key cannot be guessed, so it needs no slow password hash (argon2 on every request would cost
tens of milliseconds for nothing). Keys come from ``settings.his.api_keys`` (sender -> digest,
for production); when none is configured the install's own key is made once with
``core.secrets.install_secret`` and ``slidestream his key`` shows it to the operator.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from core.secrets import encode_key, install_secret, key_digest, new_key
from core.settings import Settings

# The key helpers live in core.secrets (terminal keys use them too); re-exported for callers.
__all__ = ["KEY_FILE", "LOCAL_SENDER", "ApiKeys", "install_key", "key_digest", "key_file", "new_key"]

KEY_FILE = "his-api.key"
LOCAL_SENDER = "local"  # the sender name of the install's own key
SCHEME = "bearer"


def key_file(settings: Settings) -> Path:
    return settings.state_dir / "secrets" / KEY_FILE


def install_key(settings: Settings) -> str:
    """The install's own key (made on first use), accepted when no key is configured."""
    path = key_file(settings)
    return encode_key(install_secret(path.parent, path.name))


class ApiKeys:
    """The senders allowed to post, each known only by the digest of its key."""

    def __init__(self, digests: Mapping[str, str]) -> None:
        if not digests:
            raise ValueError("the HIS endpoint needs at least one sender key")
        self._senders = tuple((sender, bytes.fromhex(digest)) for sender, digest in digests.items())

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        if settings.his.api_keys:
            return cls(settings.his.api_keys)
        return cls({LOCAL_SENDER: key_digest(install_key(settings))})

    @property
    def senders(self) -> tuple[str, ...]:
        return tuple(sender for sender, _ in self._senders)

    def sender(self, authorization: str | None) -> str | None:
        """The sender whose key an ``Authorization`` header carries; None when it carries no
        bearer key or an unknown one. Every digest is compared, in constant time each."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != SCHEME or not token:
            return None
        shown = hashlib.sha256(token.encode("utf-8")).digest()
        found = None
        for sender, digest in self._senders:
            if hmac.compare_digest(shown, digest) and found is None:
                found = sender
        return found
