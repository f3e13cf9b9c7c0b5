"""The viewer's side of the consistency map, without servers: the map merged from the
hr-cache's fragments (each read once), and the per-tile values in the live tile news."""

from __future__ import annotations

import json
import uuid

from compute.consistency_map import encode_fragment
from schemas.common import ObjectRef, StorageTier
from schemas.events import ConsistencySummary, TileRef, UpscaleDone, UpscaleTileResult
from schemas.layout import hr_consistency_key, hr_provenance_key
from viewer.consistency import ConsistencyMaps
from viewer.live import news_of

BUCKET = "slidestream-hr-cache"


class MemoryStore:
    """The few ObjectStore calls the map reader makes, over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def bucket(self, tier: StorageTier) -> str:
        return BUCKET

    def ref(self, tier: StorageTier, key: str) -> ObjectRef:
        return ObjectRef(bucket=BUCKET, key=key)

    async def exists(self, ref: ObjectRef) -> bool:
        return ref.key in self.objects

    async def list_prefix(self, bucket: str, prefix: str) -> list[tuple[str, int]]:
        return sorted((k, len(v)) for k, v in self.objects.items() if k.startswith(prefix))

    async def get_object(self, ref: ObjectRef) -> bytes:
        self.reads.append(ref.key)
        return self.objects[ref.key]


def put_fragment(store: MemoryStore, values: dict[str, float], scale: int = 8) -> str:
    key = hr_consistency_key("EX-1", 1, scale, uuid.uuid4().hex)
    store.objects[key] = encode_fragment(values, "sr-cascade-small")
    return key


async def test_the_map_merges_fragments_and_reads_each_once() -> None:
    store = MemoryStore()
    maps = ConsistencyMaps(store)  # type: ignore[arg-type]  # the subset it uses
    put_fragment(store, {"12/0_0": 40.5, "12/1_0": 22.0})
    put_fragment(store, {"12/2_0": 38.0}, scale=4)  # another scale: another map
    assert await maps.read("EX-1", 1, 8) == {"12/0_0": 40.5, "12/1_0": 22.0}
    put_fragment(store, {"12/0_1": 41.0})
    assert await maps.read("EX-1", 1, 8) == {"12/0_0": 40.5, "12/1_0": 22.0, "12/0_1": 41.0}
    assert len(store.reads) == 2  # the first fragment was not read again
    store.objects.clear()  # the slide's HR evicted
    assert await maps.read("EX-1", 1, 8) == {}


async def test_a_scanned_slide_has_no_map() -> None:
    store = MemoryStore()
    put_fragment(store, {"12/0_0": 40.5})  # computed before the scan was cut
    store.objects[hr_provenance_key("EX-1", 1, 8)] = b"{}"
    assert await ConsistencyMaps(store).read("EX-1", 1, 8) is None  # type: ignore[arg-type]


def test_tile_news_pass_each_computed_tiles_value_on() -> None:
    tiles = [TileRef(level=12, col=c, row=0) for c in range(2)]
    done = UpscaleDone(request_id=uuid.uuid4(), exam_id="EX-1", slide_number=1, scale=8, model="m",
                       results=[UpscaleTileResult(tile=tiles[0], object=ObjectRef(bucket=BUCKET, key="a"),
                                                  cached=False, consistency_db=21.5),
                                UpscaleTileResult(tile=tiles[1], object=ObjectRef(bucket=BUCKET, key="b"),
                                                  cached=True)],
                       consistency=ConsistencySummary.of([21.5], 28.0))
    event = news_of(done).sse()
    assert event.startswith("event: tiles\n")
    data = json.loads(event.split("data: ", 1)[1])
    assert data["tiles"] == [{"level": 12, "col": 0, "row": 0, "consistency_db": 21.5},
                             {"level": 12, "col": 1, "row": 0}]
