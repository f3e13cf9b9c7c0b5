"""Create what the application expects to exist: topics, tier buckets, catalog indexes.

Idempotent: existing topics, buckets and indexes are kept; a topic with fewer partitions than
declared is given more (Kafka cannot take partitions away, so a larger one only warns).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core.settings import MongoSettings, Settings, StorageSettings, TierEndpoint
from infra.build import Echo
from infra.errors import BootstrapError
from schemas.topics import TOPICS, TopicSpec

PARTS = ("kafka", "minio", "ferretdb")
# Replicas per partition: as many brokers as there are, up to 3 (one on the local stack).
MAX_REPLICATION = 3
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


@dataclass(frozen=True)
class TopicPlan:
    create: tuple[TopicSpec, ...]
    grow: Mapping[str, int]  # topic -> declared partition count (more than it has)
    oversized: Mapping[str, tuple[int, int]]  # topic -> (existing, declared), existing larger


def plan_topics(specs: Sequence[TopicSpec], existing: Mapping[str, int]) -> TopicPlan:
    """What to do to make the cluster's topics (name -> partition count) match `specs`."""
    create = tuple(spec for spec in specs if spec.name not in existing)
    grow = {s.name: s.partitions for s in specs if s.name in existing and existing[s.name] < s.partitions}
    oversized = {s.name: (existing[s.name], s.partitions)
                 for s in specs if s.name in existing and existing[s.name] > s.partitions}
    return TopicPlan(create, grow, oversized)


# S3 error codes of a key pair the server does not know, a wrong secret, or (a HEAD request has
# no error body, so MinIO's answer to an unknown key there is a bare 403) access denied.
REFUSED_CREDENTIALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"})


@dataclass(frozen=True)
class TierConnection:
    endpoint: str
    access_key: str
    secret_key: str
    secure: bool
    region: str
    bucket: str


def tier_connection(storage: StorageSettings, tier: TierEndpoint) -> TierConnection:
    """Where a tier's bucket lives; a tier without its own endpoint uses the default MinIO."""
    own = tier.endpoint is not None
    access, secret = storage.credentials(tier)
    return TierConnection(
        endpoint=tier.endpoint if own else storage.endpoint,
        access_key=access,
        secret_key=secret.get_secret_value(),
        secure=tier.secure if own else storage.secure,
        region=storage.region,
        bucket=tier.bucket,
    )


@dataclass
class BootstrapReport:
    topics_created: list[str] = field(default_factory=list)
    topics_grown: list[str] = field(default_factory=list)
    buckets_created: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    kafka_acls: int = 0  # ACLs ensured for the client principals


async def ensure_topics(settings: Settings, specs: Sequence[TopicSpec], echo: Echo) -> tuple[list[str], list[str]]:
    from aiokafka.admin import NewPartitions, NewTopic
    from aiokafka.errors import for_code

    from core.kafka import new_admin

    admin = new_admin(settings, principal="admin", request_timeout_ms=15000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        replication = max(1, min(MAX_REPLICATION, len(cluster["brokers"])))
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
                    if t["error_code"] == 0}
        plan = plan_topics(specs, existing)
        for name, (has, declared) in plan.oversized.items():
            echo(f"warning: topic {name} has {has} partitions, declared {declared}; "
                 "Kafka cannot remove partitions (delete and re-create the topic to match)")
        if plan.create:
            response = await admin.create_topics(
                [NewTopic(s.name, s.partitions, replication, topic_configs=dict(s.config)) for s in plan.create])
            for name, code, message in response.topic_errors:
                if code not in (0, _TOPIC_EXISTS):
                    raise BootstrapError(f"creating topic {name} failed: {for_code(code).__name__}: {message}")
        if plan.grow:
            await admin.create_partitions({name: NewPartitions(total) for name, total in plan.grow.items()})
        return [s.name for s in plan.create], sorted(plan.grow)
    finally:
        await admin.close()


def ensure_buckets(storage: StorageSettings) -> list[str]:
    """Create each tier's bucket where it is missing; returns the buckets created."""
    from minio import Minio
    from minio.error import S3Error

    created = []
    for tier_name, tier in storage.tiers().items():
        conn = tier_connection(storage, tier)
        client = Minio(conn.endpoint, access_key=conn.access_key, secret_key=conn.secret_key,
                       secure=conn.secure, region=conn.region)
        try:
            if client.bucket_exists(conn.bucket):
                continue
            client.make_bucket(conn.bucket, location=conn.region)
            created.append(conn.bucket)
        except S3Error as exc:
            if exc.code in ("BucketAlreadyOwnedByYou",):
                continue
            hint = ""
            if exc.code in REFUSED_CREDENTIALS:
                hint = ("; check the storage credentials (storage.access_key / secret_key, else the install's "
                        "own pair in <state_dir>/secrets) and their permissions. A local MinIO started before "
                        "per-install credentials still runs with the old pair: `slidestream down`, then `up`")
            raise BootstrapError(f"bucket {conn.bucket} of tier {tier_name} at {conn.endpoint}: {exc.code}: "
                                 f"{exc.message}{hint}") from exc
    return created


async def ensure_catalog_indexes(mongo: MongoSettings) -> list[str]:
    from pymongo.errors import CollectionInvalid, OperationFailure

    from catalog.db import connect
    from catalog.indexes import EQUALITY_FIELDS, ensure_indexes
    from infra.postgres_server import push_down_indexes

    client = connect(mongo, timeout_s=15.0)  # signs in on the PostgreSQL backend
    try:
        db = client[mongo.database]
        names = await ensure_indexes(db)
        if mongo.backend == "postgresql" and mongo.url is None:
            # The equality filters' GIN indexes (catalog.indexes.EQUALITY_FIELDS); FerretDB
            # makes a collection's table on first use, so make them all first.
            existing = set(await db.list_collection_names())
            for name in EQUALITY_FIELDS:
                if name not in existing:
                    with contextlib.suppress(CollectionInvalid, OperationFailure):  # made meanwhile
                        await db.create_collection(name)
            await asyncio.to_thread(push_down_indexes, mongo, EQUALITY_FIELDS)
        return names
    finally:
        await client.close()


async def bootstrap(settings: Settings, parts: Iterable[str] = PARTS, echo: Echo = lambda _: None) -> BootstrapReport:
    """Bring topics (kafka), buckets (minio) and indexes (ferretdb) to their declared state."""
    wanted = set(parts)
    report = BootstrapReport()
    if "kafka" in wanted:
        report.topics_created, report.topics_grown = await ensure_topics(settings, TOPICS, echo)
        from infra.kafka_acls import ensure_acls

        report.kafka_acls = await ensure_acls(settings)
    if "minio" in wanted:
        report.buckets_created = await asyncio.to_thread(ensure_buckets, settings.storage)
        from storage.ingest_lifecycle import ensure_ingest_lifecycle  # expiry of what ingest holds

        if await asyncio.to_thread(ensure_ingest_lifecycle, settings.storage) == "unsupported":
            echo("warning: the ingest bucket's endpoint has no lifecycle API; refused scans and QC "
                 "reports will not expire by themselves (docs/storage-tiering.md)")
    if "ferretdb" in wanted:
        report.indexes = await ensure_catalog_indexes(settings.mongo)
    echo(f"bootstrap: {len(report.topics_created)} topic(s) created, {len(report.topics_grown)} grown, "
         f"{len(report.buckets_created)} bucket(s) created, {len(report.indexes)} index(es) ensured")
    return report
