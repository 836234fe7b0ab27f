"""A single-node Apache Kafka 4 broker in KRaft mode, run from Maven Central jars with Java 17."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .node import network
from .process import free_port, run, spawn, tcp_open, wait_until
from .versions import kafka_libs

JAVA_OPTS = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


@dataclass(frozen=True)
class KafkaInfo:
    pid: int
    port: int
    controller_port: int
    bootstrap_servers: str
    config: str
    # A second listener whose advertised address is the node's forwarder, for clients in pods.
    pod_port: int = 0

    @property
    def pod_bootstrap_servers(self) -> str:
        return f"{network.NODE_IP}:{self.pod_port}"


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


def start(state: Path, *, partitions: int = 6) -> KafkaInfo:
    home = state / "kafka"
    if home.exists():
        shutil.rmtree(home)
    (home / "data").mkdir(parents=True)
    log = state / "logs" / "kafka.log"
    port, controller_port, pod_port = free_port(), free_port(), free_port()
    config = home / "server.properties"
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},POD://127.0.0.1:{pod_port},"
                f"CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},POD://{network.NODE_IP}:{pod_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,POD:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
        [*jvm, "kafka.tools.StorageTool", "format", "--standalone", "-t", _cluster_id(), "-c", str(config)],
        what="kafka storage format",
    )
    pid = spawn([*jvm, "kafka.Kafka", str(config)], log=log)
    wait_until(
        lambda: tcp_open(port) and "Kafka Server started" in log.read_text(errors="replace"),
        what="kafka",
        timeout=120,
        pid=pid,
        log=log,
    )
    return KafkaInfo(
        pid=pid,
        port=port,
        controller_port=controller_port,
        bootstrap_servers=f"127.0.0.1:{port}",
        config=str(config),
        pod_port=pod_port,
    )


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


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
