"""A changed Secret rolls the pods within seconds, not at the next periodic resync.

The operator runs in-process (kopf, reconcile, the per-runtime configuration check) with a
resync interval far longer than the test, so only the ``get``-based check can notice the change.
"""

from __future__ import annotations

import base64
import time

import pytest
import yaml

from smartflow_operator.names import ANNOTATION_CONFIG_HASH

from ..autoscaling.operator_harness import running_operator
from .conftest import EXAMPLES, Kubectl, children, wait_for

pytestmark = pytest.mark.timeout(180)


def _runtime_without_autoscaling() -> str:
    documents = list(yaml.safe_load_all((EXAMPLES / "runtime-split.yaml").read_text()))
    for document in documents:
        if document["kind"] == "Secret":  # loopback only: the operator reads the schema version
            document["stringData"]["dsn"] = "postgresql://smartflow:smartflow@127.0.0.1:9/smartflow"
        if document["kind"] == "SmartflowRuntime":
            for role in ("relay", "consumer"):
                document["spec"]["roles"][role]["autoscaling"]["enabled"] = False  # no lag to probe here
            # This test is about the config check; the migration Job runs on the node in test_migrations.
            document["spec"]["migrations"] = {"enabled": False}
    return yaml.safe_dump_all(documents)


def test_a_secret_change_reaches_the_pod_templates_within_seconds(
    kubectl: Kubectl, kubeconfig: str, namespace: str
) -> None:
    kubectl.apply(namespace, _runtime_without_autoscaling())

    def hashes() -> dict[str, str]:
        return {
            key: obj["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
            for key, obj in children(kubectl, namespace).items()
            if key.startswith("Deployment/")
        }

    with running_operator(kubeconfig, namespace, resync_seconds=600.0, config_check_seconds=1.0):
        wait_for(lambda: len(hashes()) == 4, what="the four role Deployments", timeout=60)
        before = hashes()
        time.sleep(2)  # the check has looked at the Secret at least once
        rotated = base64.b64encode(b"postgresql://smartflow:rotated@127.0.0.1:9/smartflow").decode()
        changed_at = time.monotonic()
        kubectl(
            "-n", namespace, "patch", "secret", "smartflow-database",
            "-p", f'{{"data":{{"dsn":"{rotated}"}}}}',
        )  # fmt: skip
        wait_for(
            lambda: all(hashes().get(key) != value for key, value in before.items()),
            what="every role's pod-template hash to change",
            timeout=15,
        )
        took = time.monotonic() - changed_at
    # One check interval (1 s) plus a reconcile pass; the periodic resync (600 s) played no part.
    assert took < 10, f"the pods rolled {took:.1f} s after the Secret changed"
