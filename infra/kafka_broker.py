"""Apache Kafka as one combined KRaft broker+controller, assembled from Maven Central jars."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

from core.settings import KafkaSettings
from infra.build import Echo, digest, is_current, mark_current, require_tool, run_logged
from infra.errors import BuildError
from infra.health import kafka_ready
from infra.server import Server

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
NODE_ID = 1

# Kafka's internal topics with one replica and few partitions: a single local broker cannot
# place more replicas, and fewer partitions mean fewer files and a faster start.
_SINGLE_NODE_SETTINGS = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "2",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    # Consumer groups (Faust workers) form at once instead of after the 3 s default delay.
    "group.initial.rebalance.delay.ms": "0",
    # The log cleaner's dedupe buffer defaults to 128 MiB of heap; compacted topics here are tiny.
    "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
    # bootstrap creates every topic with its partitioning; a typo must not create a topic.
    # (Faust creates its own internal topics through the admin API, which still works.)
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "num.network.threads": "2",
    "num.io.threads": "4",
}

LOG4J2_PROPERTIES = """\
# Kafka logs to stdout, which infra redirects to the server's log file.
status = warn
# Kafka logs its own shutdown from a JVM shutdown hook; log4j must not stop before it.
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# Per-request and state-change chatter is not useful on a development broker.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def render_server_properties(kafka: KafkaSettings, log_dir: Path, node_id: int = NODE_ID) -> str:
    """server.properties of a single-node KRaft cluster listening on kafka.host."""
    host = kafka.host
    values = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{host}:{kafka.controller_port}",
        "listeners": f"PLAINTEXT://{host}:{kafka.port},CONTROLLER://{host}:{kafka.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{kafka.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        **_SINGLE_NODE_SETTINGS,
    }
    lines = ["# Written by infra/kafka_broker.py on every start; edit Settings, not this file."]
    lines += [f"{key}={_escape(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    # java.util.Properties treats backslashes as escapes (Windows-style paths, odd dirs).
    return value.replace("\\", "\\\\")


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    while True:
        value = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not value.startswith("-"):  # Kafka avoids ids that look like command-line flags
            return value


def load_or_create_cluster_id(path: Path) -> str:
    """The cluster id of one data directory: generated once, then reused."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    value = new_cluster_id()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return value


class KafkaBroker(Server):
    name = "kafka"
    stop_grace_s = 30.0  # controlled shutdown flushes logs and snapshots the metadata

    @property
    def host(self) -> str:
        return self.settings.kafka.host

    @property
    def port(self) -> int:
        return self.settings.kafka.port

    def bound_ports(self) -> tuple[int, ...]:
        return (self.settings.kafka.port, self.settings.kafka.controller_port)

    @property
    def home(self) -> Path:
        return self.layout.build_cache / f"kafka-{self.settings.kafka.version}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "data"

    def build(self, echo: Echo) -> None:
        version = self.settings.kafka.version
        key = digest([version, POM])
        if is_current(self.libs, key):
            return
        require_tool("java", "kafka", "install a JDK 17 or newer, e.g. apt-get install openjdk-17-jre-headless")
        mvn = require_tool("mvn", "kafka", "install Maven, e.g. apt-get install maven")
        # Copy into a fresh directory and swap it in, so an interrupted build never leaves a
        # half-filled class path behind.
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.parent.mkdir(parents=True, exist_ok=True)
        run_logged(
            [mvn, "-B", "-q", "-f", str(POM), f"-Dkafka.version={version}",
             "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            what=f"kafka {version} (Maven Central jars)", log_path=self.layout.build_log("kafka"), echo=echo,
        )
        if not any(staging.glob(f"kafka_2.13-{version}.jar")):
            raise BuildError("kafka", f"Maven did not deliver kafka_2.13-{version}.jar into {staging}")
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.replace(self.libs)
        mark_current(self.libs, key)

    def _java(self, heap_mb: int) -> list[str]:
        return [
            shutil.which("java") or "java",
            f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp", f"{self.libs}/*",  # the JVM expands the wildcard itself
        ]

    def prepare(self, echo: Echo) -> None:
        super().prepare(echo)
        require_tool("java", "kafka", "install a JDK 17 or newer, e.g. apt-get install openjdk-17-jre-headless")
        self.config_file.write_text(render_server_properties(self.settings.kafka, self.log_dir))
        self.log4j_file.write_text(LOG4J2_PROPERTIES)
        if (self.log_dir / "meta.properties").exists():
            return  # formatted before; StorageTool would only say so, at the cost of a JVM start
        cluster_id = load_or_create_cluster_id(self.data_dir / "cluster.id")
        echo(f"formatting Kafka storage in {self.log_dir} (cluster id {cluster_id})")
        run_logged(
            [*self._java(256), "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.config_file), "--ignore-formatted"],
            what="kafka storage format", log_path=self.layout.build_log("kafka-format"), echo=lambda _: None,
        )

    def argv(self) -> list[str]:
        return [*self._java(self.settings.kafka.heap_mb), "kafka.Kafka", str(self.config_file)]

    async def ready(self) -> bool:
        return await kafka_ready(self.host, self.port)
