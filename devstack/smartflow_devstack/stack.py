"""The whole local stack as one unit: start, reuse, describe (``.local/env``) and stop.

``make up`` starts every server detached (PostgreSQL, Kafka, the control plane and the real
node with the project's images imported) and records them in ``<state>/stack.json``; the pytest
fixtures reuse such a stack when it is alive, or start their own servers one by one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import kafka, kube, postgres
from .node import start as node
from .process import alive, stop
from .versions import REPO_ROOT, helm_bin, kube_bin

# SMARTFLOW_STACK_STATE points several checkouts (or worktrees) at one running stack: there is one
# node per machine, so they share it.
DEFAULT_STATE = Path(os.environ.get("SMARTFLOW_STACK_STATE") or REPO_ROOT / ".local" / "stack")
ENV_FILE = REPO_ROOT / ".local" / "env"


@dataclass(frozen=True)
class Stack:
    state: str
    postgres: postgres.PostgresInfo | None = None
    kafka: kafka.KafkaInfo | None = None
    kube: kube.KubeInfo | None = None
    node: node.NodeInfo | None = None

    def pids(self) -> list[int]:
        """Every server process, in the order they are stopped."""
        pids: list[int] = []
        if self.node is not None:
            pids += self.node.daemon_pids()
        if self.kube is not None:
            pids += self.kube.pids()
        if self.kafka is not None:
            pids.append(self.kafka.pid)
        if self.postgres is not None:
            pids.append(self.postgres.pid)
        return pids

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        if self.postgres is not None:
            values["SMARTFLOW_DATABASE_DSN"] = self.postgres.dsn
        if self.kafka is not None:
            values["SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.bootstrap_servers
        if self.kube is not None:
            values["KUBECONFIG"] = self.kube.kubeconfig
        if self.node is not None and self.postgres is not None and self.kafka is not None:
            # What a SmartflowRuntime's pods use to reach the same servers (through the node).
            values["SMARTFLOW_POD_DATABASE_DSN"] = self.postgres.pod_dsn()
            values["SMARTFLOW_POD_KAFKA_BOOTSTRAP_SERVERS"] = self.kafka.pod_bootstrap_servers
        return values


def tool_path() -> str:
    """PATH entries that put the cached kubectl/helm and the project's virtualenv first."""
    return os.pathsep.join(
        [str(kube_bin("kubectl").parent), str(helm_bin().parent), str(REPO_ROOT / ".venv" / "bin")]
    )


def save(stack: Stack, env_file: Path | None = ENV_FILE) -> None:
    Path(stack.state).mkdir(parents=True, exist_ok=True)
    (Path(stack.state) / "stack.json").write_text(json.dumps(asdict(stack), indent=2))
    if env_file is None:
        return
    lines = [f"export {key}={value!s}" for key, value in stack.env().items()]
    lines.append(f'export PATH="{tool_path()}:$PATH"')
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("# written by `make up`; source it: . .local/env\n" + "\n".join(lines) + "\n")


def _read(state: Path) -> Stack | None:
    path = state / "stack.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Stack(
        state=raw["state"],
        postgres=postgres.PostgresInfo(**raw["postgres"]) if raw.get("postgres") else None,
        kafka=kafka.KafkaInfo(**raw["kafka"]) if raw.get("kafka") else None,
        kube=kube.KubeInfo(**raw["kube"]) if raw.get("kube") else None,
        node=node.NodeInfo(**raw["node"]) if raw.get("node") else None,
    )


def load(state: Path = DEFAULT_STATE) -> Stack | None:
    """The recorded stack if every one of its servers is still running, else None."""
    stack = _read(state)
    if stack is None or not stack.pids() or not all(alive(pid) for pid in stack.pids()):
        return None
    return stack


def up(state: Path = DEFAULT_STATE, *, env_file: Path | None = ENV_FILE) -> Stack:
    """Start every server and the node (or return the running stack); ``env_file`` None: write none."""
    running = load(state)
    if running is not None:
        return running
    down(state, env_file=env_file)
    state.mkdir(parents=True, exist_ok=True)
    started = Stack(state=str(state))
    try:
        started = Stack(state=str(state), postgres=postgres.start(state))
        started = Stack(state=str(state), postgres=started.postgres, kafka=kafka.start(state))
        started = Stack(
            state=str(state), postgres=started.postgres, kafka=started.kafka, kube=kube.start(state)
        )
        assert started.postgres is not None and started.kafka is not None and started.kube is not None
        started = Stack(
            state=str(state),
            postgres=started.postgres,
            kafka=started.kafka,
            kube=started.kube,
            node=node.start(
                state,
                control_plane=started.kube,
                forward_ports=[started.postgres.port, *started.kafka.pod_ports],
            ),
        )
        assert started.node is not None
        node.ensure_images(started.node)
    except BaseException:
        _stop(started)
        raise
    save(started, env_file)
    return started


def _stop(stack: Stack) -> None:
    if stack.node is not None:
        node.stop_node(stack.node)
    for pid in stack.pids()[len(stack.node.daemon_pids()) if stack.node else 0 :]:
        stop(pid)


def down(state: Path = DEFAULT_STATE, *, env_file: Path | None = ENV_FILE) -> None:
    recorded = _read(state)
    if recorded is None:
        return
    _stop(recorded)
    (state / "stack.json").unlink()
    if env_file is not None and env_file.exists():
        env_file.unlink()


TEST_STATE = REPO_ROOT / ".local" / "test-stack"


def run_with_stack(command: list[str]) -> int:
    """Run ``command`` against one shared stack: the running ``make up`` stack if there is one, else
    a stack started for the command and stopped after it. Parallel test workers all reuse it (one
    node per machine; every test isolates itself by namespace, database, topic and group)."""
    import subprocess

    running = load(DEFAULT_STATE)
    state = DEFAULT_STATE if running is not None else TEST_STATE
    if running is None:
        up(TEST_STATE, env_file=None)
    try:
        return subprocess.run(
            command, env={**os.environ, "SMARTFLOW_STACK_STATE": str(state)}, check=False
        ).returncode
    finally:
        if running is None:
            down(TEST_STATE, env_file=None)
