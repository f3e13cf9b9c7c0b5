"""The distribution policy (SPEC 2): which task class an exam needs, by body part, how long a
terminal may stay silent, and whether an exam goes to its own pathologist's terminal first.

Written by an administrator as TOML or YAML (by the file's suffix; see policy.example.toml)
and validated strictly: an unknown key or a wrong value is refused with its location, never
guessed. ``PolicySource`` re-reads the file when it changes; a bad edit is reported once and
the last good policy stays in force, so a typo cannot stop distribution.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

log = structlog.get_logger(__name__)

TaskClass = Annotated[str, StringConstraints(strict=True, pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
RuleName = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
BodyPartName = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=64)]
DEFAULT_RULE = "default"  # the rule name of exams that no rule matched
SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


class PolicyError(ValueError):
    """The policy file cannot be used; the message says where and why, without its content."""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName
    body_parts: Annotated[list[BodyPartName], Field(min_length=1, max_length=256)]
    task_class: TaskClass


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # A terminal silent this long is offline, and its open exams go to another terminal. At
    # least 10 s: the terminal API records a heartbeat at most every 5 s (not one write per
    # tile), so a shorter grace would take busy terminals offline.
    grace_period_s: float = Field(300.0, ge=10, le=7 * 86400)
    rules: list[Rule] = Field(default_factory=list, max_length=1000)  # first match wins
    default_task_class: TaskClass = "general"
    prefer_owner: bool = True

    @model_validator(mode="after")
    def _distinct_names(self) -> Policy:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names) or DEFAULT_RULE in names:
            raise ValueError(f"rule names must be distinct and not {DEFAULT_RULE!r}")
        return self

    def classify(self, body_part: str | None) -> tuple[str, str]:
        """(rule name, task class) of an exam's body part, compared case-insensitively."""
        wanted = body_part.strip().casefold() if body_part else ""
        if wanted:
            for rule in self.rules:
                if any(part.casefold() == wanted for part in rule.body_parts):
                    return rule.name, rule.task_class
        return DEFAULT_RULE, self.default_task_class


DEFAULT_POLICY = Policy()  # no file configured: every exam to "general" terminals


def _describe(exc: ValidationError) -> str:
    """Where and what, never the offending value (``str(exc)`` would echo it)."""
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
    return "; ".join(parts) + more


def _parse(path: Path, text: str) -> Any:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise PolicyError(f"policy file {path}: unknown format {path.suffix!r}; use one of {sorted(SUFFIXES)}")
    if kind == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:  # its message names line and column only
            raise PolicyError(f"policy file {path}: not valid TOML: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:  # str(exc) quotes the line: keep only the problem and position
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PolicyError(f"policy file {path}: not valid YAML{at}: {getattr(exc, 'problem', None) or 'syntax error'}") from None


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path}: cannot read it ({type(exc).__name__})") from None
    data = _parse(path, text)
    if data is None:
        data = {}  # an empty file: the defaults
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {path}: the top level must be a table of settings")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {_describe(exc)}") from None


@dataclass(frozen=True)
class _Seen:
    mtime_ns: int
    size: int


class PolicySource:
    """The policy in force: the configured file's, re-read when its mtime or size changes.

    At start an unusable file is an error (``PolicyError``): better not to start than to
    distribute by a policy nobody wrote. Later a bad edit is logged once per version of the
    file and the last good policy is kept; a fixed file is picked up at the next call."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._policy = DEFAULT_POLICY
        self._seen: _Seen | None = None
        self.last_error: str | None = None
        if path is not None:
            self._policy = load_policy(path)
            self._seen = self._stat()

    @classmethod
    def fixed(cls, policy: Policy) -> PolicySource:
        """A source that always gives ``policy`` (tests, the built-in default)."""
        source = cls(None)
        source._policy = policy
        return source

    def _stat(self) -> _Seen | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return _Seen(st.st_mtime_ns, st.st_size)

    def current(self) -> Policy:
        if self.path is None:
            return self._policy
        seen = self._stat()
        if seen == self._seen:
            return self._policy
        self._seen = seen
        try:
            if seen is None:
                raise PolicyError(f"policy file {self.path}: it is gone")
            self._policy = load_policy(self.path)
        except PolicyError as exc:
            self.last_error = str(exc)
            log.error("distribution.policy_refused", error=str(exc), kept="last good policy")
        else:
            self.last_error = None
            log.info("distribution.policy_loaded", path=str(self.path), rules=len(self._policy.rules))
        return self._policy
