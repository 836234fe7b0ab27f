"""A single-node Apache Kafka 4 broker in KRaft mode, run from Maven Central jars with Java 17."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import pki
from .errors import StackError
from .node import network
from .process import free_ports, run, spawn, tcp_open, wait_until
from .versions import kafka_libs

JAVA_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]

# SASL users of the SASL_SSL listeners. The SCRAM user is written at storage format time (both
# SCRAM mechanisms); PLAIN users live in the listener's JAAS config. Tests that change a password
# make their own user with :func:`set_scram_password` so they never disturb each other.
SCRAM_USER, SCRAM_PASSWORD = "smartflow-scram", "smartflow-scram-secret"
PLAIN_USER, PLAIN_PASSWORD = "smartflow-plain", "smartflow-plain-secret"
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str
    client_cert_file: str
    client_key_file: str


@dataclass(frozen=True)
class KafkaInfo:
    pid: int
    port: int
    controller_port: int
    bootstrap_servers: str
    config: str
    # A second listener whose advertised address is the node's forwarder, for clients in pods.
    pod_port: int = 0
    # SASL_SSL (PLAIN and SCRAM) and SSL with required client certificates (mutual TLS), each
    # once for the host and once for pods. Certificates chain to the stack's CA (pki.py).
    sasl_ssl_port: int = 0
    ssl_port: int = 0
    pod_sasl_ssl_port: int = 0
    pod_ssl_port: int = 0
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""

    @property
    def pod_bootstrap_servers(self) -> str:
        return f"{network.NODE_IP}:{self.pod_port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def pod_sasl_ssl_bootstrap_servers(self) -> str:
        return f"{network.NODE_IP}:{self.pod_sasl_ssl_port}"

    @property
    def pod_ssl_bootstrap_servers(self) -> str:
        return f"{network.NODE_IP}:{self.pod_ssl_port}"

    @property
    def pod_ports(self) -> list[int]:
        """The loopback ports the node's forwarder must expose to pods."""
        return [p for p in (self.pod_port, self.pod_sasl_ssl_port, self.pod_ssl_port) if p]

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.ca_file, self.client_cert_file, self.client_key_file)


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise StackError("java (17) is not on PATH")
    return found


def classpath() -> str:
    libs = kafka_libs()
    if not libs.exists():
        raise StackError(f"Kafka jars missing in {libs}; run `make deps`")
    return f"{libs}/*"


def run_tool(main_class: str, *args: str) -> str:
    """Run one of Kafka's own command-line tools (e.g. the consumer-groups tool) from the jars."""
    return run(
        [java(), "-Xmx256m", "-cp", classpath(), "-Dlog4j2.level=WARN", main_class, *args],
        what=main_class,
    )


CONSUMER_GROUPS_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def _listener_settings(ports: dict[str, int], tls_dir: Path, server: pki.Issued, ca_file: str) -> list[str]:
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{PLAIN_USER}="{PLAIN_PASSWORD}";'
    )
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    # A PEM key store is one file: the unencrypted PKCS#8 key followed by the certificate.
    keystore = tls_dir / "kafka-keystore.pem"
    keystore.write_text(Path(server.key_file).read_text() + Path(server.cert_file).read_text())
    lines = [
        "listeners=" + ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "advertised.listeners="
        + ",".join(
            f"{name}://{network.NODE_IP if name.startswith('POD') else '127.0.0.1'}:{port}"
            for name, port in ports.items()
            if name != "CONTROLLER"
        ),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,POD:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL,POD_SASL_SSL:SASL_SSL,SSL:SSL,POD_SSL:SSL",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={ca_file}",
        "sasl.enabled.mechanisms=PLAIN," + ",".join(SCRAM_MECHANISMS),
    ]
    for listener in ("sasl_ssl", "pod_sasl_ssl"):
        lines.append(f"listener.name.{listener}.plain.sasl.jaas.config={plain_jaas}")
        lines += [
            f"listener.name.{listener}.{m.lower()}.sasl.jaas.config={scram_jaas}" for m in SCRAM_MECHANISMS
        ]
    lines += [f"listener.name.{listener}.ssl.client.auth=required" for listener in ("ssl", "pod_ssl")]
    return lines


def start(state: Path, *, partitions: int = 6) -> KafkaInfo:
    home = state / "kafka"
    if home.exists():
        shutil.rmtree(home)
    (home / "data").mkdir(parents=True)
    log = state / "logs" / "kafka.log"
    listeners = ("PLAINTEXT", "POD", "CONTROLLER", "SASL_SSL", "POD_SASL_SSL", "SSL", "POD_SSL")
    ports = dict(zip(listeners, free_ports(len(listeners)), strict=True))
    tls_dir = home / "tls"
    server = pki.issue(
        state, tls_dir, "broker", subject="/CN=smartflow-kafka", sans=pki.SERVER_SANS, server=True
    )
    client = pki.issue(state, tls_dir, "client", subject="/CN=smartflow-kafka-client", client=True)
    ca_file = str(pki.authority(state) / "ca.crt")
    config = home / "server.properties"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{ports['CONTROLLER']}",
                *_listener_settings(ports, tls_dir, server, ca_file),
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={home / 'data'}",
                f"num.partitions={partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.flush.interval.messages=9223372036854775807",
                "num.network.threads=2",
                "num.io.threads=4",
                "",
            ]
        )
    )
    log4j = home / "log4j2.properties"
    log4j.write_text(
        "rootLogger.level=INFO\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
        "appender.stdout.type=Console\nappender.stdout.name=STDOUT\n"
        "appender.stdout.layout.type=PatternLayout\nappender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
        "logger.kafka.name=kafka\nlogger.kafka.level=INFO\n"
        "logger.state.name=state.change.logger\nlogger.state.level=WARN\n"
    )
    jvm = [java(), *JAVA_OPTS, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath()]
    run(
        [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            _cluster_id(),
            "-c",
            str(config),
            *[f"--add-scram={m}=[name={SCRAM_USER},password={SCRAM_PASSWORD}]" for m in SCRAM_MECHANISMS],
        ],
        what="kafka storage format",
    )
    pid = spawn([*jvm, "kafka.Kafka", str(config)], log=log)
    wait_until(
        lambda: tcp_open(ports["PLAINTEXT"]) and "Kafka Server started" in log.read_text(errors="replace"),
        what="kafka",
        timeout=120,
        pid=pid,
        log=log,
    )
    return KafkaInfo(
        pid=pid,
        port=ports["PLAINTEXT"],
        controller_port=ports["CONTROLLER"],
        bootstrap_servers=f"127.0.0.1:{ports['PLAINTEXT']}",
        config=str(config),
        pod_port=ports["POD"],
        sasl_ssl_port=ports["SASL_SSL"],
        ssl_port=ports["SSL"],
        pod_sasl_ssl_port=ports["POD_SASL_SSL"],
        pod_ssl_port=ports["POD_SSL"],
        ca_file=ca_file,
        client_cert_file=client.cert_file,
        client_key_file=client.key_file,
    )


def set_scram_password(
    info: KafkaInfo, user: str, password: str, *, mechanism: str = "SCRAM-SHA-512"
) -> None:
    """Create ``user`` or change its password (Kafka's own kafka-configs tool, over PLAINTEXT)."""
    run_tool(
        "kafka.admin.ConfigCommand", "--bootstrap-server", info.bootstrap_servers, "--alter",
        "--add-config", f"{mechanism}=[password={password}]", "--entity-type", "users", "--entity-name", user,
    )  # fmt: skip


def _cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, never starting with "-" (as Kafka's
    own ``Uuid.randomUuid`` does), which ``kafka-storage format --cluster-id`` would parse as an
    option (1 start in 64 failed with "expected one argument")."""
    import base64

    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


# --- stopping and starting again on the same ports, keeping the data (fault drills) --------------


def stop_keeping_data(info: KafkaInfo, *, timeout: float = 60.0) -> None:
    """Controlled shutdown (SIGTERM) of a broker :func:`start` began; its log dirs stay."""
    from .process import stop

    stop(info.pid, timeout=timeout)


def start_again(state: Path, info: KafkaInfo) -> KafkaInfo:
    """Start the broker of ``info`` again from its config and data in ``state`` (same ports, same
    topics and committed offsets); returns it with the new pid."""
    import dataclasses

    home = state / "kafka"
    log = state / "logs" / "kafka.log"
    seen = log.stat().st_size if log.exists() else 0

    def started() -> bool:
        with open(log, "rb") as out:
            out.seek(seen)
            return b"Kafka Server started" in out.read()

    jvm = [java(), *JAVA_OPTS, f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}", "-cp", classpath()]
    pid = spawn([*jvm, "kafka.Kafka", info.config], log=log)
    wait_until(lambda: tcp_open(info.port) and started(), what="kafka restart", timeout=120, pid=pid, log=log)
    return dataclasses.replace(info, pid=pid)
