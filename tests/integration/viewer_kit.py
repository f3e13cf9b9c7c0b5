"""The viewer on the test stack: a stored slide, its exam assigned to a pathologist, users of
each role, and the real viewer app served by uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from core.settings import Settings
from tests.integration.tierkit import services, stage_slide, uid
from viewer.context import ViewerContext
from viewer.serve import running_viewer
from viewer.users_admin import add_user, assign


@dataclass
class Seeded:
    exam_id: str
    patient_id: str
    slide_number: int
    passwords: dict[str, str] = field(default_factory=dict)
    department: str = "GI pathology"

    def user(self, role: str) -> str:
        return next(name for name in self.passwords if name.startswith(role[:4]))


async def seed(settings: Settings, size: int = 600, data: bytes | None = None) -> Seeded:
    """One exam with one stored ``size`` px square 5x slide (``data``: its TIFF; default a
    repeated H&E tile), assigned to ``path-...`` (GI pathology); users: that pathologist,
    another pathologist of another department, a technician and an administrator, each with a
    random password."""
    suffix = uid("")[:6]
    seeded = Seeded(exam_id=uid("EV"), patient_id=uid("PV"), slide_number=1)
    async with services(settings) as svc:
        await svc.saver.save(await stage_slide(svc, patient_id=seeded.patient_id, exam_id=seeded.exam_id,
                                               size=size, data=data))
    for name, role, dept in ((f"path-{suffix}", "pathologist", seeded.department),
                             (f"other-{suffix}", "pathologist", "Dermatopathology"),
                             (f"tech-{suffix}", "technician", None),
                             (f"admin-{suffix}", "administrator", None)):
        password = secrets.token_urlsafe(16)
        await add_user(settings, name, role, password, department=dept)
        seeded.passwords[name] = password
    await assign(settings, seeded.exam_id, pathologist=f"path-{suffix}", department=None)
    return seeded


@contextlib.asynccontextmanager
async def viewer_on(settings: Settings, *, compute: bool = True) -> AsyncIterator[tuple[ViewerContext, str]]:
    async with running_viewer(settings, compute=compute) as (context, url):
        yield context, url


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    reply = await client.post("/api/auth/login", json={"username": username, "password": password})
    reply.raise_for_status()
    return {"Authorization": f"Bearer {reply.json()['token']}"}
