"""The demo's last step: the viewer running, with its own demo accounts (fresh random
passwords every run, never a shared default) and the demo exam on the pathologist's worklist."""

from __future__ import annotations

import asyncio

from catalog.db import connect, database
from catalog.users import Users
from core.settings import Settings
from viewer.passwords import hash_password, random_password
from viewer.users_admin import add_user, assign

DEMO_PATHOLOGIST = "demo.pathologist"
DEMO_ADMIN = "demo.admin"
DEMO_DEPARTMENT = "Demo pathology"


async def demo_account(settings: Settings, username: str, role: str, department: str | None = None) -> str:
    """Create the account, or give the existing one a new password; the password."""
    password = random_password()
    client = connect(settings.mongo)
    try:
        users = Users(database(client, settings.mongo))
        existing = await users.get(username)
        if existing is not None:
            new_hash = await asyncio.to_thread(hash_password, password)
            if not await users.set_password_hash(username, existing.password_hash, new_hash):
                raise RuntimeError(f"the password of {username} changed meanwhile; run the demo again")
            return password
    finally:
        await client.close()
    await add_user(settings, username, role, password, department=department, actor="demo")
    return password


async def prepare_viewer(settings: Settings, exam_id: str) -> dict[str, str]:
    passwords = {DEMO_PATHOLOGIST: await demo_account(settings, DEMO_PATHOLOGIST, "pathologist", DEMO_DEPARTMENT),
                 DEMO_ADMIN: await demo_account(settings, DEMO_ADMIN, "administrator")}
    await assign(settings, exam_id, pathologist=DEMO_PATHOLOGIST, department=DEMO_DEPARTMENT, actor="demo")
    return passwords


def start_demo_viewer(settings: Settings, exam_id: str) -> dict[str, str]:
    """Start the viewer for the demo exam; the demo accounts' passwords."""
    from slidestream.viewer_process import start_viewer, viewer_url

    passwords = asyncio.run(prepare_viewer(settings, exam_id))
    start_viewer(settings)
    url = viewer_url(settings)
    print(f"viewer running: {url}")
    print(f"  sign in as {DEMO_PATHOLOGIST} / {passwords[DEMO_PATHOLOGIST]}  (exam {exam_id} is on the worklist)")
    print(f"  administrator: {DEMO_ADMIN} / {passwords[DEMO_ADMIN]}")
    print("  (demo passwords are new on every run)")
    return passwords
