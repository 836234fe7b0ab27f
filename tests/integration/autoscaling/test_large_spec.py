"""A runtime whose spec is larger than the 256 KiB all annotations share (a 300 KB env value) is
reconciled once and settles: kopf keeps its diff base in ``status.kopf``, so no handler re-runs on
every event. The real operator in-process against the real apiserver."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from smartflow_operator.names import GROUP, PLURAL, VERSION

from .operator_harness import Cluster, eventually, running_operator, runtime_body

pytestmark = pytest.mark.timeout(180)

NAME = "big"
BIG = "x" * 300_000


def _reconciles(controller: object) -> float:
    registry = controller.metrics.registry  # type: ignore[attr-defined]
    return sum(
        registry.get_sample_value("smartflow_operator_reconciles_total", {"result": result}) or 0.0
        for result in ("unchanged", "changed", "degraded", "error")
    )


async def test_a_300_kb_spec_is_reconciled_once_and_settles(cluster: Cluster, kubeconfig: str) -> None:
    cluster.create_secret("db", {"dsn": "postgresql://smartflow@127.0.0.1:1/db"})
    body = runtime_body(NAME, bootstrap_servers="127.0.0.1:1", topic="t", group="g")
    body["spec"]["env"] = [{"name": "SMARTFLOW_BIG_SETTING", "value": BIG}]
    assert len(json.dumps(body["spec"])) > 256 * 1024
    cluster.create_runtime(body)
    settings = {"resync_seconds": 600.0, "config_check_seconds": 0.0}
    with running_operator(kubeconfig, cluster.namespace, **settings) as controller:
        eventually(lambda: cluster.deployment(f"{NAME}-api") is not None, timeout=30, what="children applied")
        deployment = cluster.deployment(f"{NAME}-api") or {}
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "SMARTFLOW_BIG_SETTING", "value": BIG} in env
        eventually(
            lambda: (c := cluster.condition(NAME, "Degraded")) is not None and c["status"] == "False",
            timeout=20,
            what="Degraded False",
        )
        # Settled: the last writes' watch events and the Deployment controller's status updates of
        # the new children (each a pass that writes nothing) are over when no pass ran for 8 s
        # (longer than one autoscaling poll, 5 s).
        passes, quiet_since = _reconciles(controller), time.monotonic()
        deadline = time.monotonic() + 40
        while time.monotonic() - quiet_since < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if _reconciles(controller) != passes:
                passes, quiet_since = _reconciles(controller), time.monotonic()
        passes, writes = _reconciles(controller), controller.kube.writes
        # Events of the runtime that change neither spec nor metadata (a status field nobody reads):
        # kopf finds the runtime handled and runs no handler.
        for i in range(3):
            cluster.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, cluster.namespace, PLURAL, NAME, {"status": {"kopf": {"touched": i}}}
            )
            await asyncio.sleep(2)
        await asyncio.sleep(3)
        # No handler loop: no pass at all, and nothing written, while the spec does not change.
        assert (_reconciles(controller) - passes, controller.kube.writes - writes) == (0, 0)
        kopf_status = (cluster.runtime(NAME).get("status") or {}).get("kopf") or {}
        assert "last-handled-configuration" in kopf_status  # kopf's diff base, in the status
    annotations = cluster.runtime(NAME)["metadata"].get("annotations") or {}
    assert not any("last-handled-configuration" in key for key in annotations)
