"""Per-install secrets: made once with ``secrets.token_bytes``, kept in files only the
owner can read (``<state_dir>/secrets/``, mode 0600 in a 0700 directory). A configured
value always wins; there is no built-in default that two installs could share."""

from __future__ import annotations

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
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes()
        if len(value) < nbytes:
            raise ValueError(f"{path} holds a secret shorter than {nbytes} bytes; delete it to make a new one") from None
        return value
    with os.fdopen(fd, "wb") as handle:
        value = secrets.token_bytes(nbytes)
        handle.write(value)
    return value
