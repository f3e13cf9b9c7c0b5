"""Signed bearer tokens (JWT, HS256, via PyJWT): who is calling, in what role, until when.

Issued by the viewer at sign-in; verified by every authenticated entry point. Short-lived;
the signing key comes from settings or the install's own key file (``core.secrets``), never
from a built-in default.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
ISSUER = "slidestream"
MIN_KEY_BYTES = 32
MAX_VERIFIED = 4096  # verified tokens kept (about one per signed-in browser)


class InvalidToken(Exception):
    """Missing, malformed, forged or expired token; the message says which, never the token."""


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    department: str | None = None


class TokenSigner:
    def __init__(self, key: bytes, ttl: timedelta, *, audience: str = "viewer") -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self.ttl = ttl
        self.audience = audience
        self._verified: dict[str, tuple[float, Principal]] = {}  # token -> (expiry, epoch s; principal)

    def issue(self, principal: Principal, *, now: datetime | None = None) -> tuple[str, datetime]:
        issued = now or datetime.now(UTC)
        expires = issued + self.ttl
        claims = {"sub": principal.username, "role": principal.role, "dept": principal.department,
                  "iss": ISSUER, "aud": self.audience, "iat": issued, "exp": expires, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Principal:
        """The token's principal; InvalidToken if it is not one this signer issued and still valid.

        A browser sends the same token with every tile, so tokens already verified are kept
        until their own expiry (a token cannot change; bounded, cleared when full)."""
        known = self._verified.get(token)
        if known is not None and known[0] > time.time():
            return known[1]
        principal, expires = self._verify(token)
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()
        self._verified[token] = (expires, principal)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], audience=self.audience, issuer=ISSUER,
                                options={"require": ["exp", "iat", "sub", "role"]})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired; sign in again") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token ({type(exc).__name__})") from None
        sub, role, dept = claims.get("sub"), claims.get("role"), claims.get("dept")
        if not isinstance(sub, str) or not isinstance(role, str) or not (dept is None or isinstance(dept, str)):
            raise InvalidToken("invalid token (claims of the wrong type)")
        return Principal(sub, role, dept), float(claims["exp"])
