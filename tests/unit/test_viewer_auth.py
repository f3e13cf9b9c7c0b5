"""Sign-in machinery without servers: tokens, the per-install key, password hashes, the
failed-login limit, and who may see which exam."""

from __future__ import annotations

import base64
import json
import stat
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import SecretStr

from catalog.exam_search import ExamScope
from core.secrets import install_secret
from core.tokens import InvalidToken, Principal, TokenSigner
from schemas.catalog import ExamRecord
from viewer.login_guard import LoginGuard
from viewer.passwords import WeakPassword, hash_password, needs_rehash, verify_password

KEY = b"k" * 32
DR = Principal("dr.a", "pathologist", "GI")


def test_token_round_trip_and_expiry() -> None:
    signer = TokenSigner(KEY, timedelta(minutes=15))
    token, expires = signer.issue(DR)
    assert signer.verify(token) == DR
    assert expires - datetime.now(UTC) <= timedelta(minutes=15)
    old, _ = signer.issue(DR, now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(old)


def test_a_verified_token_is_kept_only_until_its_own_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.tokens

    signer = TokenSigner(KEY, timedelta(minutes=15))
    token, expires = signer.issue(DR)
    calls = []
    real_decode = jwt.decode
    monkeypatch.setattr(core.tokens.jwt, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    assert signer.verify(token) == DR and signer.verify(token) == DR
    assert len(calls) == 1  # the second request did not decode the token again
    later = expires.timestamp() + 1
    monkeypatch.setattr(core.tokens.time, "time", lambda: later)
    signer.verify(token)  # past its expiry the token is judged by PyJWT again (which refuses it then)
    assert len(calls) == 2


def test_forged_tokens_are_refused() -> None:
    signer = TokenSigner(KEY, timedelta(minutes=15))
    other, _ = TokenSigner(b"x" * 32, timedelta(minutes=15)).issue(DR)
    with pytest.raises(InvalidToken):
        signer.verify(other)
    # alg "none" with our claims: must not be accepted
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
    good, _ = signer.issue(DR)
    payload = good.split(".")[1].encode()
    with pytest.raises(InvalidToken):
        signer.verify(f"{header.decode()}.{payload.decode()}.")
    # a role raised by editing the payload breaks the signature
    claims = jwt.decode(good, KEY, algorithms=["HS256"], audience="viewer")
    claims["role"] = "administrator"
    tampered_payload = base64.urlsafe_b64encode(json.dumps(claims, default=str).encode()).rstrip(b"=").decode()
    head, _, sig = good.split(".")
    with pytest.raises(InvalidToken):
        signer.verify(f"{head}.{tampered_payload}.{sig}")
    with pytest.raises(InvalidToken):
        signer.verify("not-a-token")
    # another audience's token (e.g. a terminal's) is not a viewer token
    terminal, _ = TokenSigner(KEY, timedelta(minutes=15), audience="terminal").issue(DR)
    with pytest.raises(InvalidToken):
        signer.verify(terminal)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        TokenSigner(b"short", timedelta(minutes=1))


def test_install_secret_is_private_stable_and_unique(tmp_path) -> None:
    first = install_secret(tmp_path / "a", "viewer.key")
    assert install_secret(tmp_path / "a", "viewer.key") == first
    assert install_secret(tmp_path / "b", "viewer.key") != first  # no shared default between installs
    assert stat.S_IMODE((tmp_path / "a" / "viewer.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert install_secret(tmp_path / "c", "viewer.key", SecretStr("c" * 40)) == b"c" * 40
    assert not (tmp_path / "c").exists()  # a configured secret writes nothing


def test_passwords_are_hashed_with_argon2id_and_verified() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and "correct" not in stored
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong horse battery")
    assert not verify_password(None, "correct horse battery")  # unknown user
    assert not verify_password("garbage", "x")
    assert not needs_rehash(stored)
    with pytest.raises(WeakPassword):
        hash_password("short")


def test_login_guard_limits_failures_per_key_in_a_window() -> None:
    now = [0.0]
    guard = LoginGuard(3, 60.0, clock=lambda: now[0])
    for _ in range(3):
        assert guard.retry_after("user:a", "addr:1") == 0
        guard.failed("user:a", "addr:1")
    assert guard.retry_after("user:a") == pytest.approx(60.0)
    assert guard.retry_after("user:b", "addr:1") > 0  # the address is limited too
    assert guard.retry_after("user:b", "addr:2") == 0
    now[0] = 61.0
    assert guard.retry_after("user:a", "addr:1") == 0
    guard.failed("user:a")
    guard.succeeded("user:a")
    assert guard.retry_after("user:a") == 0


def _exam(pathologist: str | None, department: str | None) -> ExamRecord:
    return ExamRecord(exam_id="E1", patient_id="P1", exam_date=datetime(2026, 1, 1, tzinfo=UTC),
                      pathologist=pathologist, department=department)


def test_exam_scope_allows_own_and_department_exams() -> None:
    mine = ExamScope(pathologist="dr.a", department="GI")
    assert mine.allows(_exam("dr.a", None))
    assert mine.allows(_exam(None, "GI"))
    assert not mine.allows(_exam("dr.b", "Derm"))
    assert not mine.allows(_exam(None, None))
    assert ExamScope(everything=True).allows(_exam(None, None))
    assert mine.filter() == {"$or": [{"pathologist": "dr.a"}, {"department": "GI"}]}
    assert ExamScope().filter() == {"_id": {"$in": []}}
    assert ExamScope(everything=True).filter() == {}
