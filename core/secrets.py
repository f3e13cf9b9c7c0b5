"""Per-install secrets: made once with ``secrets.token_bytes``, kept in files only the
owner can read (``<state_dir>/secrets/``, mode 0600 in a 0700 directory). A configured
value always wins; there is no built-in default that two installs could share."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr


def install_secret(directory: Path, name: str, configured: SecretStr | None = None, *, nbytes: int = 32) -> bytes:
    """The configured secret, else the install's own ``name`` (created on first use)."""
    if configured is not None:
        return configured.get_secret_value().encode()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / name
    if not path.exists():
        # Written in full to a private temporary file, then published by a hard link, which
        # fails if another process published first: a reader never sees a half-written key,
        # and two processes starting at once end up with the same one.
        value = secrets.token_bytes(nbytes)
        temporary = directory / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            else:
                return value
        finally:
            temporary.unlink(missing_ok=True)
    value = path.read_bytes()
    if len(value) < nbytes:
        raise ValueError(f"{path} holds a secret shorter than {nbytes} bytes; delete it to make a new one")
    return value


# Bearer keys of machines (HIS senders, reading terminals): 32 random bytes, URL-safe base64.
# A random 256-bit key cannot be guessed, so only its SHA-256 digest is kept and compared (in
# constant time); it needs no slow password hash.
KEY_BYTES = 32


def encode_key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_key() -> str:
    """A fresh random bearer key (43 characters); keep only its ``key_digest``."""
    return encode_key(secrets.token_bytes(KEY_BYTES))


def key_digest(key: str) -> str:
    """The SHA-256 hex digest of a key: what a registry or a setting keeps of it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# The S3 root key pair of an install whose storage credentials are not configured.
STORAGE_KEY_FILE = "storage-root.key"


def storage_key_pair(directory: Path) -> tuple[str, SecretStr]:
    """The install's own S3 key pair (access key, secret key), derived from one random file made
    once in ``directory``: a 20-character access key and a 40-character (160-bit) secret key,
    both hexadecimal so that any S3 server accepts them."""
    raw = install_secret(directory, STORAGE_KEY_FILE)
    return f"slidestream-{raw[:4].hex()}", SecretStr(raw[4:24].hex())
