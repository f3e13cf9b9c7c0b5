"""Apache Kafka as one combined KRaft broker+controller, assembled from Maven Central jars.

Secure by default: the client listener is SASL_PLAINTEXT on loopback with SCRAM-SHA-512 only,
the controller listener SASL_PLAINTEXT with PLAIN (a KRaft controller cannot check SCRAM
before it has read its metadata), and ACLs are enforced by the StandardAuthorizer with no
access where no ACL grants it. The broker's own principal (``kafka.admin_username``) is the
only super user; it and the client principals get their SCRAM credentials when the storage
is formatted (KIP-900), and ``infra.kafka_acls`` grants the client principals their ACLs.
Passwords are the install's own (``core.kafka.kafka_credentials``) unless configured.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import time
from pathlib import Path

from core.kafka import SASL_MECHANISM, Principal, kafka_credentials
from core.settings import KafkaSettings, Settings
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


def render_server_properties(kafka: KafkaSettings, log_dir: Path, node_id: int = NODE_ID, *,
                             admin_password: str) -> str:
    """server.properties of a single-node KRaft cluster listening on kafka.host, every listener
    authenticated (it holds the broker's password: written with mode 0600)."""
    host = kafka.host
    admin = kafka.admin_username
    scram_login = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                   f'username="{admin}" password="{admin_password}";')
    # The broker is the controller's only client: its own user is the controller's only user.
    plain_login = (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
                   f'username="{admin}" password="{admin_password}" user_{admin}="{admin_password}";')
    values = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": f"{node_id}@{host}:{kafka.controller_port}",
        "listeners": f"SASL_PLAINTEXT://{host}:{kafka.port},CONTROLLER://{host}:{kafka.controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{host}:{kafka.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": SASL_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        f"listener.name.sasl_plaintext.{SASL_MECHANISM.lower()}.sasl.jaas.config": scram_login,
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain_login,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{admin}",
        "allow.everyone.if.no.acl.found": "false",
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


# Principals whose SCRAM credentials are written when the storage is formatted.
FORMAT_PRINCIPALS: tuple[Principal, ...] = ("admin", "app", "his", "scanner")


def scram_arguments(settings: Settings) -> list[str]:
    """``--add-scram`` arguments of StorageTool format for every principal."""
    args = []
    for principal in FORMAT_PRINCIPALS:
        user, password = kafka_credentials(settings, principal)
        args += ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={password}]"]
    return args


def credentials_fingerprint(settings: Settings) -> str:
    """Changes when a principal's name or password changes (the storage holds the old ones)."""
    material = "\n".join(":".join(kafka_credentials(settings, p)) for p in FORMAT_PRINCIPALS)
    return hashlib.sha256(material.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (it may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


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

    @property
    def credentials_marker(self) -> Path:
        return self.data_dir / "scram-credentials.sha256"

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
        os.chmod(self.data_dir, 0o700)
        _, admin_password = kafka_credentials(self.settings, "admin")
        write_private(self.config_file,
                      render_server_properties(self.settings.kafka, self.log_dir, admin_password=admin_password))
        self.log4j_file.write_text(LOG4J2_PROPERTIES)
        fingerprint = credentials_fingerprint(self.settings)
        if (self.log_dir / "meta.properties").exists():
            marker = self.credentials_marker.read_text().strip() if self.credentials_marker.exists() else ""
            if marker == fingerprint:
                return  # formatted before; StorageTool would only say so, at the cost of a JVM start
            # Formatted without these SCRAM credentials (before authentication, or the passwords
            # changed): KRaft takes them only at format time, so keep the old log aside and start anew.
            aside = self.data_dir / f"data.before-credentials-{time.strftime('%Y%m%dT%H%M%S')}"
            echo(f"Kafka storage in {self.log_dir} lacks the current SCRAM credentials; "
                 f"moved it to {aside} and formatting a new one (topics are bootstrapped again)")
            self.log_dir.replace(aside)
        cluster_id = load_or_create_cluster_id(self.data_dir / "cluster.id")
        echo(f"formatting Kafka storage in {self.log_dir} (cluster id {cluster_id})")
        run_logged(
            [*self._java(256), "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.config_file), "--ignore-formatted", *scram_arguments(self.settings)],
            what="kafka storage format", log_path=self.layout.build_log("kafka-format"), echo=lambda _: None,
        )
        write_private(self.credentials_marker, fingerprint + "\n")

    def argv(self) -> list[str]:
        return [*self._java(self.settings.kafka.heap_mb), "kafka.Kafka", str(self.config_file)]

    async def ready(self) -> bool:
        return await kafka_ready(self.settings)
