"""The ACLs of slidestream's Kafka principals (the broker denies whatever no ACL allows).

* the application's services (``kafka.username``): read, write, describe and create topics
  (event topics and Faust's internal ``<app id>-...`` topics, whose names follow the app id
  that tests and scale-out groups vary), use any consumer group, and describe the cluster
  (the tier sweep lists groups and their lag). Not: write patient events (a DENY: only the HIS
  admits and discharges, so a compromised viewer cannot move a patient's slides), delete
  topics, alter configurations, manage ACLs or users.
* the HIS adapter (``kafka.his_username``): write the patient events it produces, nothing
  else (it cannot read, cannot write ``slide.*``, ``upscale.*`` or the dead-letter topic).
* the scanner ingest (``kafka.scanner_username``; ``slidestream ingest`` / ``watch``, the
  demo's and the bench's ingest): write ``slide.scanned`` and read, without a consumer group,
  the answers it waits for (QC verdicts, ``slide.stored``, dead letters); it cannot forge a
  ``slide.qc_passed`` or an admission.
* the broker's own principal (``kafka.admin_username``) is a super user (server.properties):
  inter-broker traffic and ``infra bootstrap`` (topics, ACLs).

aiokafka's admin client has no ACL call, so CreateAcls (API key 30, version 1) is sent with
its protocol classes. Creating an ACL that exists already changes nothing, so this runs on
every bootstrap. The broker applies new ACLs a moment after the controller accepted them, so
bootstrap waits until DescribeAcls on the broker lists every one (a worker started right
after ``up`` would otherwise be refused).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka.protocol.admin import CreateAclsRequest_v1, DescribeAclsRequest
from aiokafka.protocol.api import Request

from core.kafka import Principal, kafka_credentials, new_admin
from core.settings import Settings
from infra.errors import BootstrapError
from schemas.events import PatientAdmitted, PatientDischarged, SlideScanned
from schemas.topics import Topic

# The HIS adapter's topics: the events it builds from ADT messages.
HIS_TOPICS: tuple[str, ...] = (PatientAdmitted.topic.value, PatientDischarged.topic.value)
# The scanner's: what it publishes, and what it reads back (scanner.verdicts, scanner.outcome).
SCANNER_WRITES: tuple[str, ...] = (SlideScanned.topic.value,)
SCANNER_READS: tuple[str, ...] = (Topic.SLIDE_QC_PASSED.value, Topic.SLIDE_QC_FAILED.value,
                                  Topic.SLIDE_STORED.value, Topic.DEAD_LETTER.value)
CLUSTER = "kafka-cluster"  # the name of Kafka's one cluster resource


class Resource(IntEnum):
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class Pattern(IntEnum):
    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    DESCRIBE_CONFIGS = 10
    IDEMPOTENT_WRITE = 12


_DENY = 2
_ALLOW = 3
_ANY = 1  # in a DescribeAcls filter: any resource type, pattern type, operation, permission
_ANY_HOST = "*"
APPLY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Acl:
    principal: Principal
    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL
    permission: int = _ALLOW


def _grant(principal: Principal, resource: Resource, name: str, *operations: Operation,
           pattern: Pattern = Pattern.LITERAL) -> list[Acl]:
    return [Acl(principal, resource, name, op, pattern) for op in operations]


def _deny(principal: Principal, resource: Resource, name: str, *operations: Operation) -> list[Acl]:
    """A DENY wins over every ALLOW (here: over the application's ``*`` topic grant)."""
    return [Acl(principal, resource, name, op, permission=_DENY) for op in operations]


def planned_acls() -> list[Acl]:
    app_topics = (Operation.READ, Operation.WRITE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS, Operation.CREATE)
    acls = [
        *_grant("app", Resource.TOPIC, "*", *app_topics),
        *_grant("app", Resource.GROUP, "*", Operation.READ, Operation.DESCRIBE),
        *_grant("app", Resource.CLUSTER, CLUSTER, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS,
                Operation.IDEMPOTENT_WRITE),
        *_grant("his", Resource.CLUSTER, CLUSTER, Operation.IDEMPOTENT_WRITE),
    ]
    for topic in HIS_TOPICS:
        acls += _grant("his", Resource.TOPIC, topic, Operation.WRITE, Operation.DESCRIBE)
        acls += _deny("app", Resource.TOPIC, topic, Operation.WRITE)
    acls += _grant("scanner", Resource.CLUSTER, CLUSTER, Operation.IDEMPOTENT_WRITE)
    for topic in SCANNER_WRITES:
        acls += _grant("scanner", Resource.TOPIC, topic, Operation.WRITE, Operation.DESCRIBE)
    for topic in SCANNER_READS:
        acls += _grant("scanner", Resource.TOPIC, topic, Operation.READ, Operation.DESCRIBE)
    return acls


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, creations: list[tuple[int, str, int, str, str, int, int]]) -> None:
        self._creations = creations

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._creations)


async def ensure_acls(settings: Settings, *, timeout_s: float = APPLY_TIMEOUT_S) -> int:
    """Create every planned ACL (as the broker's super user) and wait until the broker applies
    them; returns how many were sent."""
    users = {p: kafka_credentials(settings, p)[0] for p in ("app", "his", "scanner")}
    creations = [(int(acl.resource), acl.name, int(acl.pattern), f"User:{users[acl.principal]}", _ANY_HOST,
                  int(acl.operation), acl.permission) for acl in planned_acls()]
    admin = new_admin(settings, principal="admin", request_timeout_ms=15000)
    await admin.start()
    try:
        client = admin._client  # noqa: SLF001 - aiokafka's admin has no public ACL call (docstring)
        node = client.get_random_node()
        response = await client.send(node, _CreateAcls(creations))
        failures = [(code, message) for code, message in response.creation_responses if code != 0]
        if failures:
            code, message = failures[0]
            raise BootstrapError(f"creating Kafka ACLs failed ({len(failures)} of {len(creations)}): "
                                 f"error {code}: {message}")
        wanted = {(resource, name, pattern, principal, operation, permission)
                  for resource, name, pattern, principal, _, operation, permission in creations}
        deadline = time.monotonic() + timeout_s
        while not wanted <= await _applied(client, node):
            if time.monotonic() > deadline:
                raise BootstrapError(f"the broker did not apply the Kafka ACLs within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return len(creations)


async def _applied(client: Any, node: int) -> set[tuple[int, str, int, str, int, int]]:
    """The ACLs the broker enforces now."""
    response = await client.send(node, DescribeAclsRequest(_ANY, None, _ANY, None, None, _ANY, _ANY))  # type: ignore[arg-type]
    if response.error_code != 0:
        raise BootstrapError(f"listing Kafka ACLs failed: error {response.error_code}: {response.error_message}")
    return {(resource, name, pattern, principal, operation, permission)
            for resource, name, pattern, acls in response.resources
            for principal, _, operation, permission in acls}
