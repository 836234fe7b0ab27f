"""End to end: the real `smartflow-operator run` process against the real apiserver.

One good runtime and one whose Secret is missing live in the same namespace: the good one runs its
migration Job and its role pods on the node and becomes Ready when they are, the bad one is
Degraded, the process keeps serving, a steady state makes no writes, and creating the Secret heals
the bad one on the next resync. The operator runs as a ServiceAccount granted
exactly the permissions ``smartflow_operator.rbac`` declares.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartflow_devstack.kafka import KafkaInfo
from smartflow_devstack.kube import KubeInfo, write_kubeconfig
from smartflow_devstack.process import free_port
from smartflow_operator.rbac import as_policy_rules, leader_election_permissions
from tests.integration.realpods import pod_dsn, runnable

from .conftest import EXAMPLES, Kubectl, children, condition, wait_for

pytestmark = pytest.mark.timeout(480)

BAD_RUNTIME = """
apiVersion: smartflow.io/v1alpha1
kind: SmartflowRuntime
metadata:
  name: broken
spec:
  image: ghcr.io/smartflow/runtime:0.1.0
  database:
    dsnSecretRef: {name: not-yet, key: dsn}
  kafka:
    bootstrapServers: kafka:9092
  migrations: {enabled: false}  # about the missing Secret; its pods never run (placeholder image)
"""


def _runnable_without_autoscaling(
    example: Path, *, image: str, dsn: str, bootstrap_servers: str, topic: str
) -> str:
    """The example on the node (runtime image, the test's database and Kafka), with lag autoscaling
    off: the steady state below counts the reconciler's writes; the autoscaler's have their own tests."""
    documents = list(yaml.safe_load_all(example.read_text()))
    for document in documents:
        if document["kind"] == "SmartflowRuntime":
            for role in ("relay", "consumer"):
                document["spec"]["roles"][role]["autoscaling"]["enabled"] = False
    return runnable(documents, image=image, host_dsn=dsn, bootstrap_servers=bootstrap_servers, topic=topic)


class OperatorProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, health: int, metrics: int) -> None:
        self.process, self.log, self.health_port, self.metrics_port = process, log, health, metrics

    def get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` carrying ``labels`` (other labels summed over)."""
        text = self.get(self.metrics_port, "/metrics")
        total = 0.0
        for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if all(found.get(key) == value for key, value in labels.items()):
                total += float(match.group(2))
        return total

    def writes(self) -> float:
        return sum(
            self.metric("smartflow_operator_kube_requests_total", method=m)
            for m in ("PATCH", "POST", "DELETE", "PUT")
        )


@pytest.fixture
def operator_kubeconfig(kubectl: Kubectl, kube_server: KubeInfo, namespace: str, tmp_path: Path) -> str:
    """A ServiceAccount holding exactly ``rbac.PERMISSIONS`` and the leader-election rules (its Lease
    lives in the same namespace here) in the namespace: the operator runs as it, so the declared
    permission lists are proven sufficient."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "smartflow-operator"},
        "rules": as_policy_rules() + as_policy_rules(leader_election_permissions()),
    }
    kubectl.apply(namespace, json.dumps(role))
    kubectl("-n", namespace, "create", "serviceaccount", "smartflow-operator")
    kubectl(
        "-n", namespace, "create", "rolebinding", "smartflow-operator",
        "--role=smartflow-operator", f"--serviceaccount={namespace}:smartflow-operator",
    )  # fmt: skip
    token = kubectl("-n", namespace, "create", "token", "smartflow-operator", "--duration=1h").stdout.strip()
    path = tmp_path / "operator.kubeconfig"
    write_kubeconfig(
        path, server=kube_server.server, ca_file=kube_server.ca_file, token=token, user="operator"
    )
    return str(path)


@pytest.fixture
def operator(operator_kubeconfig: str, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    kubeconfig = operator_kubeconfig
    health, metrics = free_port(), free_port()
    log = tmp_path / "operator.log"
    command = [
        str(Path(sys.executable).parent / "smartflow-operator"),
        "run",
        "--namespace",
        namespace,
        "--kubeconfig",
        kubeconfig,
        "--health-address",
        "127.0.0.1",
        "--health-port",
        str(health),
        "--metrics-port",
        str(metrics),
        "--resync-seconds",
        "2",
    ]
    # Neither $KUBECONFIG nor ~/.kube/config: only --kubeconfig can lead the operator (its client
    # and kopf's watches alike) to the cluster, as the ServiceAccount it names.
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    env["HOME"] = str(tmp_path / "home")
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    running = OperatorProcess(process, log, health, metrics)
    try:
        yield running
    finally:
        print(log.read_text(errors="replace")[-6000:])  # shown when the test fails
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_operator_process_end_to_end(
    kubectl: Kubectl,
    namespace: str,
    operator: OperatorProcess,
    node_images: dict[str, str],
    database_dsn: str,
    kafka_server: KafkaInfo,
    unique_name: str,
) -> None:
    kubectl.apply(namespace, BAD_RUNTIME)
    good = _runnable_without_autoscaling(
        EXAMPLES / "runtime-split.yaml",
        image=node_images["runtime"],
        dsn=database_dsn,
        bootstrap_servers=kafka_server.pod_bootstrap_servers,
        topic=f"process.{unique_name}",
    )
    kubectl.apply(namespace, good)

    def deployments() -> dict[str, dict[str, Any]]:
        return {k: v for k, v in children(kubectl, namespace).items() if k.startswith("Deployment/")}

    # The migration Job runs on the node first; the roles follow once it succeeded.
    wait_for(lambda: len(deployments()) == 4, what="the good runtime's four Deployments", timeout=180)
    assert all(key.startswith("Deployment/demo-") for key in deployments())
    (job,) = kubectl.json("-n", namespace, "get", "jobs")["items"]
    assert job["status"]["succeeded"] == 1

    def degraded_reason() -> str | None:
        found = condition(kubectl.json("-n", namespace, "get", "sfr", "broken"), "Degraded")
        return found["reason"] if found else None

    wait_for(lambda: degraded_reason() == "SecretNotFound", what="the broken runtime to be Degraded")

    # The role pods get ready on the node; the operator sees the Deployment events and reports Ready.
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "sfr/demo", "--timeout=240s", timeout=260)

    assert operator.process.poll() is None, operator.log.read_text()
    assert operator.get(operator.health_port, "/healthz") is not None
    assert operator.metric("smartflow_operator_reconciles_total", result="changed") >= 1
    assert operator.metric("smartflow_operator_reconcile_errors_total", reason="SecretNotFound") >= 1

    # Steady state: several resyncs of both runtimes, not one write.
    time.sleep(3)  # let the Ready status write and its echo settle
    writes = operator.writes()
    reads = operator.metric(
        "smartflow_operator_kube_requests_total", method="GET", resource="smartflowruntimes"
    )
    time.sleep(7)
    # Each resync (every 2 s) reads its runtime: 2 runtimes, at least 2 resyncs each in 7 s.
    resyncs = operator.metric(
        "smartflow_operator_kube_requests_total", method="GET", resource="smartflowruntimes"
    )
    assert resyncs >= reads + 4
    assert operator.writes() == writes

    # The broken runtime heals once its Secret exists (the resync picks it up).
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "not-yet"},
        "data": {"dsn": base64.b64encode(pod_dsn(database_dsn).encode()).decode()},
    }
    kubectl.apply(namespace, json.dumps(secret))
    wait_for(lambda: degraded_reason() == "AsExpected", what="the broken runtime to recover", timeout=30)
    assert "Deployment/broken-api" in deployments()

    # Logs are JSON lines with the runtime's namespace/name.
    lines = [json.loads(line) for line in operator.log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("name") == "demo" and line.get("namespace") == namespace for line in lines)
    assert not any(line["level"] == "ERROR" and "Traceback" in line.get("error", "") for line in lines)
    # The declared permissions were enough: nothing was refused.
    assert not [line for line in lines if "forbidden" in json.dumps(line).lower()]
