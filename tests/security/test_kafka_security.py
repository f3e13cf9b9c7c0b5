"""Kafka on the real broker is secure by default: every listener authenticates (SASL/SCRAM on
the client port, SASL/PLAIN on the controller port), the ACLs confine each principal, and the
passwords are the install's own, in private files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from core.kafka import kafka_credentials, new_admin, new_consumer, new_producer, tail_from_end
from core.settings import PROJECT_ROOT, Settings
from infra.kafka_broker import KafkaBroker
from infra.layout import Layout
from schemas.topics import Topic

pytestmark = pytest.mark.integration

TIMEOUT_S = 20


@pytest.fixture
async def own_topic(stack: Settings) -> AsyncIterator[str]:
    """A topic of this test's own (agents of other modules consume the application topics)."""
    name = f"security-it-{uuid.uuid4().hex[:8]}"
    admin = new_admin(stack, principal="admin", request_timeout_ms=15000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
        yield name
    finally:
        await admin.delete_topics([name])
        await admin.close()


async def _produce(prod: AIOKafkaProducer, topic: str) -> None:
    try:
        await asyncio.wait_for(prod.start(), TIMEOUT_S)
        await asyncio.wait_for(prod.send_and_wait(topic, b"probe"), TIMEOUT_S)
    finally:
        await prod.stop()


async def test_a_client_without_credentials_is_refused(stack: Settings) -> None:
    # Plain aiokafka with no SASL settings, as any program on the host could connect.
    with pytest.raises(KafkaConnectionError):
        await _produce(AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap, request_timeout_ms=5000),
                       Topic.SLIDE_QC_PASSED.value)


async def test_the_controller_port_refuses_a_client_without_credentials(stack: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{stack.kafka.host}:{stack.kafka.controller_port}",
                                request_timeout_ms=5000)
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(admin.start(), TIMEOUT_S)
    finally:
        await admin.close()


@pytest.mark.parametrize("principal", ["app", "his", "scanner", "admin"])
async def test_a_wrong_password_is_refused(stack: Settings, principal: str) -> None:
    field = {"app": "password", "his": "his_password", "scanner": "scanner_password",
             "admin": "admin_password"}[principal]
    wrong = stack.model_copy(update={"kafka": stack.kafka.model_copy(
        update={field: SecretStr("not-the-password-" + uuid.uuid4().hex)})})
    with pytest.raises(KafkaConnectionError):
        await _produce(new_producer(wrong, principal=principal, request_timeout_ms=5000),  # type: ignore[arg-type]
                       Topic.SLIDE_QC_PASSED.value)


async def test_the_application_principal_produces_and_consumes(stack: Settings, own_topic: str) -> None:
    payload = uuid.uuid4().bytes
    prod = new_producer(stack)
    await prod.start()
    try:
        sent = await prod.send_and_wait(own_topic, payload, key=b"k")
    finally:
        await prod.stop()
    consumer = new_consumer(stack, group_id=f"security-it-{uuid.uuid4().hex[:8]}", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(own_topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), TIMEOUT_S)
        await consumer.commit()  # consumer groups are allowed
    finally:
        await consumer.stop()
    assert record.value == payload


@pytest.mark.parametrize("topic", [Topic.SLIDE_QC_PASSED.value, Topic.SLIDE_SCANNED.value,
                                   Topic.DEAD_LETTER.value, Topic.UPSCALE_REQUESTED.value])
async def test_the_his_principal_cannot_write_other_topics(stack: Settings, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(new_producer(stack, principal="his", request_timeout_ms=5000), topic)


@pytest.mark.parametrize("topic", [Topic.SLIDE_QC_PASSED.value, Topic.SLIDE_STORED.value,
                                   Topic.PATIENT_ADMITTED.value, Topic.DEAD_LETTER.value])
async def test_the_scanner_principal_cannot_forge_verdicts_or_admissions(stack: Settings, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(new_producer(stack, principal="scanner", request_timeout_ms=5000), topic)


async def test_the_scanner_principal_reads_its_answers_but_not_patient_events(stack: Settings) -> None:
    async with tail_from_end(stack, Topic.SLIDE_QC_PASSED.value, Topic.SLIDE_STORED.value, principal="scanner"):
        pass  # assigned and positioned at the end: describe and read allowed
    with pytest.raises(RuntimeError, match="do not exist"):  # not even visible to it
        async with tail_from_end(stack, Topic.PATIENT_ADMITTED.value, principal="scanner"):
            pass


async def test_the_his_principal_cannot_read_patient_events(stack: Settings) -> None:
    consumer = new_consumer(stack, principal="his", enable_auto_commit=False, request_timeout_ms=5000)
    await consumer.start()
    try:
        tp = TopicPartition(Topic.PATIENT_ADMITTED.value, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(consumer.getone(), TIMEOUT_S)
    finally:
        await consumer.stop()


@pytest.mark.parametrize("topic", [Topic.PATIENT_ADMITTED.value, Topic.PATIENT_DISCHARGED.value])
async def test_only_the_his_principal_writes_patient_events(stack: Settings, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):  # a DENY over the application's topic grant
        await _produce(new_producer(stack, request_timeout_ms=5000), topic)


async def test_the_application_principal_cannot_delete_topics(stack: Settings, own_topic: str) -> None:
    admin = new_admin(stack, request_timeout_ms=5000)
    await admin.start()
    try:
        response = await admin.delete_topics([own_topic])
    finally:
        await admin.close()
    assert [code for _, code, *_ in response.topic_error_codes] == [TopicAuthorizationFailedError.errno]


def _tracked_files_containing(needle: str) -> list[Path]:
    roots = [PROJECT_ROOT / name for name in ("core", "infra", "agents", "his", "slidestream", "tests")]
    files = [path for root in roots for path in root.rglob("*.py")] + [PROJECT_ROOT / "docker-compose.yml"]
    return [path for path in files if needle in path.read_text(errors="ignore")]


def test_passwords_are_this_installs_own_in_private_files(stack: Settings) -> None:
    secrets_dir = stack.state_dir / "secrets"
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    passwords = set()
    for principal in ("app", "his", "scanner", "admin"):
        user, password = kafka_credentials(stack, principal)  # type: ignore[arg-type]
        path = secrets_dir / f"kafka-{user}.password"
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert len(path.read_bytes()) == 32 and password == path.read_bytes().hex()
        assert not _tracked_files_containing(password)  # not a built-in value
        passwords.add(password)
    assert len(passwords) == 4
    broker = KafkaBroker(stack, Layout.from_settings(stack))
    assert broker.config_file.stat().st_mode & 0o777 == 0o600  # it holds the broker's password
