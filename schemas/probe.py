"""Probe events: a round trip through the agents, used by `slidestream status` and the bench."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(UTC)


class Probe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_type: Literal["slidestream.probe"] = "slidestream.probe"
    probe_id: UUID = Field(default_factory=uuid4)
    sent_at: AwareDatetime = Field(default_factory=_now)


class ProbeReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_type: Literal["slidestream.probe_reply"] = "slidestream.probe_reply"
    probe_id: UUID
    sent_at: AwareDatetime
    answered_at: AwareDatetime = Field(default_factory=_now)
    worker: str
