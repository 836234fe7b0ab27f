"""The chart's monitoring objects against the real apiserver, with prometheus-operator's published
CRDs (fetched by devstack/build/fetch-monitoring-crds.sh) applied: everything ``helm template``
renders with the options on is accepted by ``kubectl apply --dry-run=server``."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from smartflow_devstack.versions import monitoring_crds
from tests.unit.chart import monitoring as mon
from tests.unit.chart.helm import one

from .conftest import Namespaces, kubectl

KINDS = ("servicemonitors", "podmonitors", "prometheusrules")


@pytest.fixture(scope="module")
def monitoring_crds_applied(kubeconfig: str) -> None:
    folder = monitoring_crds()
    files = [folder / f"monitoring.coreos.com_{kind}.yaml" for kind in KINDS]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        pytest.fail(f"{missing} missing; run `make deps` (fetch-monitoring-crds.sh)", pytrace=False)
    for path in files:
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(path))
    for kind in KINDS:
        kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            f"crd/{kind}.monitoring.coreos.com",
            "--timeout=60s",
        )


def dry_run(kubeconfig: str, manifests: list[dict[str, object]], *, check: bool = True) -> str:
    result = kubectl(
        kubeconfig,
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin="\n".join(json.dumps(manifest) for manifest in manifests),
        check=check,
    )
    return result.stdout + result.stderr


def test_everything_rendered_with_monitoring_on_is_accepted_by_the_apiserver(
    kubeconfig: str, monitoring_crds_applied: None, namespaces: Namespaces
) -> None:
    namespace = namespaces.create(f"mon-{uuid.uuid4().hex[:6]}")
    watched = namespaces.create(f"mon-w-{uuid.uuid4().hex[:6]}")
    values = {**mon.ALL_ON, "watch": {"namespaces": [namespace, watched]}}
    manifests = mon.rendered(values, namespace=namespace)
    kinds = {manifest["kind"] for manifest in manifests}
    assert {"PrometheusRule", "PodMonitor", "ServiceMonitor", "ConfigMap"} <= kinds
    out = dry_run(kubeconfig, manifests)
    for kind in ("prometheusrule", "podmonitor", "servicemonitor", "configmap"):
        assert f"{kind}.monitoring.coreos.com/" in out or f"{kind}/" in out, out
    assert "(server dry run)" in out


def test_the_crd_schemas_are_enforced_so_the_check_above_means_something(
    kubeconfig: str, monitoring_crds_applied: None, namespaces: Namespaces
) -> None:
    namespace = namespaces.create(f"mon-{uuid.uuid4().hex[:6]}")
    manifests = mon.rendered(namespace=namespace)
    broken_rule = copy.deepcopy(one(manifests, "PrometheusRule"))
    broken_rule["spec"]["groups"][0]["rules"][0]["for"] = 5  # a duration string, not a number
    broken_monitor = copy.deepcopy(one(manifests, "PodMonitor"))
    broken_monitor["spec"]["podMetricsEndpoints"][0]["scrapeEvery"] = "30s"  # no such field
    for broken in (broken_rule, broken_monitor):
        out = dry_run(kubeconfig, [broken], check=False)
        assert "(server dry run)" not in out, f"{broken['kind']} was accepted: {out}"
        assert "Invalid" in out or "unknown field" in out, out
