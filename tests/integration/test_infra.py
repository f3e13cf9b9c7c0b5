"""The local servers started by infra/ answer real requests; `up` is idempotent and fails cleanly."""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from minio import Minio
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError, OperationFailure

from catalog.indexes import INDEXES
from core.kafka import new_admin, new_consumer, new_producer
from core.settings import Settings
from infra import stack as local_stack
from infra.bootstrap import ensure_topics, tier_connection
from infra.build import stamp_path
from infra.errors import StackStartError
from infra.ferretdb_server import FerretDBServer
from infra.layout import Layout
from infra.minio_server import MinioServer
from schemas.topics import TOPICS, TopicSpec

pytestmark = pytest.mark.integration


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    # The broker's own principal: these tests delete topics, which the application may not.
    return new_admin(settings, principal="admin", request_timeout_ms=15000)


async def test_kafka_delivers_a_produced_message(stack: Settings) -> None:
    # A topic of this test's own: agents under test in the same session consume the
    # application topics, and a stray message there would reach them.
    topic = f"infra-it-{uuid.uuid4().hex[:8]}"
    admin = _admin(stack)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()

    payload = uuid.uuid4().bytes
    producer = new_producer(stack)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, payload, key=b"k", partition=1)
    finally:
        await producer.stop()

    consumer = new_consumer(stack, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), 60)
    finally:
        await consumer.stop()
    assert (record.partition, record.offset, record.key, record.value) == (1, sent.offset, b"k", payload)


async def test_bootstrap_created_every_topic_with_its_partitions_and_config(stack: Settings) -> None:
    admin = _admin(stack)
    await admin.start()
    try:
        described = await admin.describe_topics([spec.name for spec in TOPICS])
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in TOPICS if spec.config])
    finally:
        await admin.close()

    partitions = {topic["topic"]: len(topic["partitions"]) for topic in described if topic["error_code"] == 0}
    assert partitions == {spec.name: spec.partitions for spec in TOPICS}

    actual = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
              for response in configs for resource in response.resources}
    for spec in TOPICS:
        for key, value in spec.config.items():
            assert actual[spec.name][key] == value, (spec.name, key)


async def test_topic_bootstrap_adds_partitions_to_a_smaller_topic(stack: Settings) -> None:
    name = f"infra-it-grow-{uuid.uuid4().hex[:8]}"
    admin = _admin(stack)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        created, grown = await ensure_topics(stack, [TopicSpec(name, 3)], echo=lambda _: None)
        assert (created, grown) == ([], [name])
        (described,) = await admin.describe_topics([name])
        assert len(described["partitions"]) == 3

        again = await ensure_topics(stack, [TopicSpec(name, 3)], echo=lambda _: None)
        assert again == ([], [])
    finally:
        await admin.delete_topics([name])
        await admin.close()


def test_every_tier_bucket_exists_and_stores_objects(stack: Settings) -> None:
    data = uuid.uuid4().bytes * 1000
    for tier in stack.storage.tiers().values():
        conn = tier_connection(stack.storage, tier)
        client = Minio(conn.endpoint, access_key=conn.access_key, secret_key=conn.secret_key,
                       secure=conn.secure, region=conn.region)
        assert client.bucket_exists(conn.bucket), conn.bucket

    conn = tier_connection(stack.storage, stack.storage.recent)
    client = Minio(conn.endpoint, access_key=conn.access_key, secret_key=conn.secret_key,
                   secure=conn.secure, region=conn.region)
    key = f"infra-it/{uuid.uuid4().hex}.bin"
    client.put_object(conn.bucket, key, io.BytesIO(data), len(data))
    try:
        response = client.get_object(conn.bucket, key)
        try:
            assert response.read() == data
        finally:
            response.close()
            response.release_conn()
    finally:
        client.remove_object(conn.bucket, key)


def catalog_client(stack: Settings) -> MongoClient:
    """A plain PyMongo client signed in as the services are (on the PostgreSQL backend)."""
    credentials = stack.mongo.credentials()
    auth = {} if credentials is None else {
        "username": credentials[0], "password": credentials[1].get_secret_value(), "authMechanism": "PLAIN"}
    return MongoClient(stack.mongo.uri, serverSelectionTimeoutMS=10000, **auth)


def test_mongo_stores_documents_and_enforces_unique_indexes(stack: Settings) -> None:
    client = catalog_client(stack)
    try:
        db = client[stack.mongo.database]
        patient_id = f"IT-{uuid.uuid4().hex[:12]}"
        db.patients.insert_one({"patient_id": patient_id, "admitted": True})
        found = db.patients.find_one({"patient_id": patient_id}, {"_id": 0})
        assert found == {"patient_id": patient_id, "admitted": True}

        with pytest.raises(DuplicateKeyError):
            db.patients.insert_one({"patient_id": patient_id, "admitted": False})
        assert db.patients.count_documents({"patient_id": patient_id}) == 1

        for collection in {spec.collection for spec in INDEXES}:
            names = {index["name"] for index in db[collection].list_indexes()}
            expected = {spec.name for spec in INDEXES if spec.collection == collection}
            assert expected <= names, collection
    finally:
        client.close()


def test_ferretdb_log_does_not_echo_document_values(stack: Settings) -> None:
    # FerretDB logs failed responses in full; our server drops those dumps (patient identity
    # data must never reach a log). A unique-key conflict in findAndModify answers ok: 0.
    client = catalog_client(stack)
    first, second = f"LOGCHECK-{uuid.uuid4().hex}", f"LOGCHECK-{uuid.uuid4().hex}"
    try:
        patients = client[stack.mongo.database].patients
        patients.insert_many([{"patient_id": first}, {"patient_id": second}])
        with pytest.raises(OperationFailure):
            patients.find_one_and_update({"patient_id": first}, {"$set": {"patient_id": second}})
    finally:
        client.close()
    log = Layout.from_settings(stack).log_file("ferretdb").read_text()
    assert "Connection started" in log  # the log is the live one
    assert first not in log and second not in log


def test_up_again_leaves_healthy_servers_alone(stack: Settings) -> None:
    before = {status.name: status for status in local_stack.stack_status(stack)}
    layout = Layout.from_settings(stack)
    stamps = [stamp_path(MinioServer(stack, layout).binary), stamp_path(FerretDBServer(stack, layout).binary)]
    stamp_times = [path.stat().st_mtime_ns for path in stamps]

    result = local_stack.up(stack)

    assert result.started == ()
    after = {status.name: status for status in result.servers}
    assert all(status.healthy for status in after.values())
    assert {name: s.pid for name, s in after.items()} == {name: s.pid for name, s in before.items()}
    assert [path.stat().st_mtime_ns for path in stamps] == stamp_times  # nothing was rebuilt
    assert result.bootstrap is not None
    assert result.bootstrap.topics_created == [] and result.bootstrap.buckets_created == []


def _answers(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_server_that_cannot_start_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    # A second stack of its own (free ports, temp state dir), next to the session's stack.
    kafka, controller, minio, console, mongo, postgres = _free_ports(6)
    settings = Settings(
        state_dir=tmp_path / "state",
        kafka={"port": kafka, "controller_port": controller},
        storage={"port": minio, "console_port": console},
        mongo={"port": mongo, "postgres_port": postgres},
    )
    with socket.socket() as squatter:
        squatter.bind((settings.mongo.host, settings.mongo.port))
        squatter.listen()
        with pytest.raises(StackStartError) as caught:
            local_stack.up(settings, ["minio", "ferretdb"], timeout_s=120)

    error = caught.value
    assert error.servers == ("ferretdb",)
    assert "ferretdb failed to start" in str(error)
    assert f"{settings.mongo.host}:{settings.mongo.port} already in use" in str(error)
    assert error.stopped == ("minio",)  # started by that `up`, and stopped again
    assert not _answers(settings.storage.host, settings.storage.port)
    assert list((tmp_path / "state" / "run").glob("*.pid")) == []
    assert all(status.state is local_stack.State.STOPPED for status in local_stack.stack_status(settings))
