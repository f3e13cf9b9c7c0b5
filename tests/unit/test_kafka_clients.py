"""Every Kafka client is built in core/kafka.py (and the Faust app in agents/app.py), so that
none connects without its principal's credentials."""

from __future__ import annotations

import ast
from pathlib import Path

from core.settings import PROJECT_ROOT

CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "App"}
ALLOWED = {
    "core/kafka.py": {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"},
    "agents/app.py": {"App"},  # faust.App, given broker_credentials there
    # The attacker's clients: no credentials on purpose.
    "tests/security/test_kafka_security.py": {"AIOKafkaProducer", "AIOKafkaAdminClient"},
}
SKIP = {".venv", "var", "out", "node_modules", ".git"}


def _sources() -> list[Path]:
    return [path for path in PROJECT_ROOT.rglob("*.py")
            if not SKIP.intersection(path.relative_to(PROJECT_ROOT).parts)]


def _constructed(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in CLIENTS:
                names.add(name)
    return names


def test_kafka_clients_are_built_only_in_core_kafka() -> None:
    offenders = {}
    for path in _sources():
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        found = _constructed(ast.parse(path.read_text(), filename=relative)) - ALLOWED.get(relative, set())
        if relative.startswith("tests/unit/"):
            found.discard("App")  # unit tests build plain web apps named App
        if found:
            offenders[relative] = sorted(found)
    assert not offenders, f"build Kafka clients with core.kafka (new_producer/new_consumer/new_admin): {offenders}"


def test_the_guard_sees_a_raw_client() -> None:
    tree = ast.parse("from aiokafka import AIOKafkaProducer\np = AIOKafkaProducer(bootstrap_servers='x')\n")
    assert _constructed(tree) == {"AIOKafkaProducer"}
