"""Answers probes so operators (and the bench) can see the agents are alive end to end."""

from __future__ import annotations

import os
import socket

import faust
from pydantic import ValidationError

from agents.messaging import dead_letter, publish, raw_topic
from core.settings import Settings
from schemas.probe import Probe, ProbeReply
from schemas.registry import describe_validation_error
from schemas.topics import PROBE_REPLY_TOPIC, PROBE_TOPIC

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


def register(app: faust.App, settings: Settings) -> None:
    @app.agent(raw_topic(app, PROBE_TOPIC), name="probe")
    async def answer_probes(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                probe = Probe.model_validate_json(event.message.value)
            except ValidationError as exc:
                reason, _ = describe_validation_error(exc)
                await dead_letter(app, event.message, f"invalid probe: {reason}")
                continue
            reply = ProbeReply(probe_id=probe.probe_id, sent_at=probe.sent_at, worker=WORKER_NAME)
            await publish(app, PROBE_REPLY_TOPIC, reply, key=str(probe.probe_id))
