"""The operator puts no finalizer on a runtime, so a stopped or uninstalled operator never leaves a
runtime (or its namespace) stuck in Terminating: deletion is immediate and the garbage collector
removes the children through their owner references.

Runs the real operator in-process (kopf, reconcile, the per-runtime resync, configuration check and
autoscaler loops) against the real kube-apiserver.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from ..autoscaling.operator_harness import running_operator
from .conftest import EXAMPLES, Kubectl, children, wait_for

pytestmark = pytest.mark.timeout(180)

# The name kopf (default settings) gives its finalizer; an older operator version added it.
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def _finalizers(kubectl: Kubectl, namespace: str) -> list[str]:
    runtime = kubectl.json("-n", namespace, "get", "sfr", "demo")
    return list(runtime["metadata"].get("finalizers") or [])


def test_a_runtime_deleted_while_the_operator_is_stopped_goes_at_once(
    kubectl: Kubectl, namespace: str, kubeconfig: str
) -> None:
    # The example as users apply it: autoscaling on (its probes fail here; the loop runs anyway),
    # with the DSN and brokers on loopback so that nothing is resolved or dialled off the machine.
    documents = list(yaml.safe_load_all((EXAMPLES / "runtime-split.yaml").read_text()))
    for document in documents:
        if document["kind"] == "Secret":
            document["stringData"]["dsn"] = "postgresql://smartflow:smartflow@127.0.0.1:9/smartflow"
        if document["kind"] == "SmartflowRuntime":
            document["spec"]["kafka"]["bootstrapServers"] = "127.0.0.1:9"
            # This test is about deletion; the migration Job runs on the node in test_migrations.
            document["spec"]["migrations"]["enabled"] = False
    kubectl.apply(namespace, yaml.safe_dump_all(documents))
    # A finalizer left behind by an operator version that had kopf daemons/timers.
    patch = json.dumps({"metadata": {"finalizers": [KOPF_FINALIZER]}})
    kubectl("-n", namespace, "patch", "sfr", "demo", "--type=merge", "-p", patch)

    with running_operator(kubeconfig, namespace, resync_seconds=1.0, config_check_seconds=1.0):
        wait_for(
            lambda: sum(key.startswith("Deployment/") for key in children(kubectl, namespace)) == 4,
            what="the four role Deployments",
            timeout=30,
        )
        wait_for(lambda: _finalizers(kubectl, namespace) == [], what="the old finalizer removed", timeout=15)
        time.sleep(3)  # several resyncs, configuration checks and autoscaler polls
        assert _finalizers(kubectl, namespace) == []

    kubectl("-n", namespace, "delete", "sfr", "demo", "--wait=false")
    started = time.monotonic()
    wait_for(
        lambda: kubectl("-n", namespace, "get", "sfr", "demo", check=False).returncode != 0,
        what="the runtime gone with no operator running",
        timeout=5,
    )
    assert time.monotonic() - started < 5
    wait_for(
        lambda: not children(kubectl, namespace),
        what="the garbage collector to remove the children",
        timeout=90,
    )
