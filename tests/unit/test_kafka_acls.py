"""The ACL plan of infra.kafka_acls, without a broker (tests/integration/test_kafka_security.py
checks that the broker enforces it)."""

from __future__ import annotations

from infra.kafka_acls import HIS_TOPICS, SCANNER_READS, SCANNER_WRITES, Operation, Resource, planned_acls
from schemas.topics import Topic

_DENY, _ALLOW = 2, 3


def _allowed(principal: str, resource: Resource, operation: Operation) -> set[str]:
    return {acl.name for acl in planned_acls() if acl.principal == principal and acl.resource == resource
            and acl.operation == operation and acl.permission == _ALLOW}


def test_the_his_principal_only_writes_patient_events() -> None:
    assert set(HIS_TOPICS) == {Topic.PATIENT_ADMITTED.value, Topic.PATIENT_DISCHARGED.value}
    assert _allowed("his", Resource.TOPIC, Operation.WRITE) == set(HIS_TOPICS)
    assert not _allowed("his", Resource.TOPIC, Operation.READ)
    assert not _allowed("his", Resource.GROUP, Operation.READ)
    assert not [acl for acl in planned_acls() if acl.principal == "his" and acl.name == "*"]


def test_the_scanner_writes_only_slide_scanned_and_reads_only_its_answers() -> None:
    assert _allowed("scanner", Resource.TOPIC, Operation.WRITE) == {Topic.SLIDE_SCANNED.value} == set(SCANNER_WRITES)
    assert _allowed("scanner", Resource.TOPIC, Operation.READ) == set(SCANNER_READS)
    assert not set(SCANNER_READS) & {Topic.PATIENT_ADMITTED.value, Topic.PATIENT_DISCHARGED.value}
    assert not _allowed("scanner", Resource.GROUP, Operation.READ)


def test_the_application_may_not_write_patient_events() -> None:
    denied = {acl.name for acl in planned_acls() if acl.principal == "app" and acl.permission == _DENY
              and acl.operation == Operation.WRITE}
    assert denied == set(HIS_TOPICS)
    # ... and holds no operation that deletes, alters or manages ACLs.
    assert {acl.operation for acl in planned_acls()} <= set(Operation)
    assert not {int(acl.operation) for acl in planned_acls()} & {2, 6, 7, 11}  # ALL, DELETE, ALTER, ALTER_CONFIGS
