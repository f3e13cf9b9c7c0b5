"""Everything a running viewer holds: catalog, users, object store, tiles, live news, the
upscale client and the sign-in machinery; opened inside the event loop, closed with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from catalog.db import connect, database
from catalog.errors import UnknownExam
from catalog.indexes import ensure_indexes
from catalog.repository import Catalog
from catalog.users import Users
from core.retry import with_retries
from core.secrets import install_secret
from core.settings import Settings
from core.tokens import TokenSigner
from core.upscale_client import UpscaleClient
from schemas.catalog import ExamRecord, UserRecord
from storage.objects import ObjectStore
from viewer.consistency import ConsistencyMaps
from viewer.expiring import Expiring
from viewer.live import TileNewsHub
from viewer.login_guard import LoginGuard
from viewer.on_demand import OnDemand
from viewer.tile_service import TileService

USER_CACHE_S = 30.0  # a deactivated user's tokens stop working within this long
EXAM_CACHE_S = 10.0  # a reassigned exam's readers change within this long


@dataclass
class ViewerContext:
    settings: Settings
    catalog: Catalog
    users: Users
    store: ObjectStore
    tiles: TileService
    hub: TileNewsHub
    on_demand: OnDemand | None
    signer: TokenSigner
    guard: LoginGuard
    consistency: ConsistencyMaps
    _users: Expiring[str, UserRecord | None] = field(default_factory=lambda: Expiring(USER_CACHE_S))
    _exams: Expiring[str, ExamRecord | None] = field(default_factory=lambda: Expiring(EXAM_CACHE_S))

    async def exam(self, exam_id: str) -> ExamRecord:
        """The exam (UnknownExam if none)."""
        exam = await self._exams.get(exam_id, lambda: self.catalog.get_exam(exam_id))
        if exam is None:
            self._exams.forget(exam_id)  # an exam stored a moment later is found at once
            raise UnknownExam(exam_id)
        return exam

    def forget_exam(self, exam_id: str) -> None:
        self._exams.forget(exam_id)

    async def active_user(self, username: str) -> UserRecord | None:
        """The user if it exists and is active."""
        user = await self._users.get(username, lambda: self.users.get(username))
        return user if user is not None and user.active else None


def token_signer(settings: Settings) -> TokenSigner:
    key = install_secret(settings.state_dir / "secrets", "viewer-token.key", settings.viewer.token_secret)
    return TokenSigner(key, timedelta(seconds=settings.viewer.token_ttl_s))


@asynccontextmanager
async def open_viewer(settings: Settings, *, compute: bool = True) -> AsyncIterator[ViewerContext]:
    """``compute`` False: no upscale client (tiles above LR stay placeholders)."""
    async with AsyncExitStack() as exits:
        client = connect(settings.mongo)
        exits.push_async_callback(client.close)
        db = database(client, settings.mongo)
        await with_retries(lambda: ensure_indexes(db), what="catalog indexes", attempts=20)
        catalog = Catalog(db, point_queries=settings.mongo.point_queries)
        store = ObjectStore(settings.storage)
        exits.callback(store.close)
        hub = TileNewsHub()
        viewer = settings.viewer
        tiles = TileService(catalog, store, viewer, hub=hub, hr_memory_bytes=viewer.hr_memory_mb << 20,
                        precut_tiles=viewer.precut_tiles)
        exits.push_async_callback(tiles.close)
        on_demand: OnDemand | None = None
        if compute:
            upscale = await exits.enter_async_context(UpscaleClient(settings))

            async def send(request):  # type: ignore[no-untyped-def]
                await upscale.send([(request, None)])

            on_demand = OnDemand(send, hub, deadline_s=viewer.tile_deadline_s, cancel=upscale.cancel)
            exits.push_async_callback(on_demand.close)
            tiles.on_demand = on_demand
            # The tile service first: its read of a new tile starts before the browsers hear of it.
            upscale.listen(tiles.on_answer)
            upscale.listen(on_demand.on_answer)
        yield ViewerContext(
            settings=settings, catalog=catalog, users=Users(db), store=store,
            tiles=tiles, hub=hub, on_demand=on_demand,
            signer=token_signer(settings), guard=LoginGuard(viewer.login_max_failures, viewer.login_window_s),
            consistency=ConsistencyMaps(store))
