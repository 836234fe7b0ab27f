"""The chart's monitoring objects as the tests need them: the rendered PrometheusRule as a rules
file, the dashboard's queries, promtool and the PromQL parser (``promql-names``, built with
Prometheus by devstack/build/build-prometheus.sh), and the metric names our registries expose.

Shared by the pure checks (tests/unit/chart/test_monitoring.py) and the real-Prometheus test
(tests/integration/observability/). A missing binary is a failure naming the build, never a skip.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from smartflow_devstack.versions import prometheus_bin
from smartflow_operator.autoscaling.metrics import AutoscalingMetrics
from smartflow_operator.metrics import OperatorMetrics
from smartflow_operator.runtime_metrics import RuntimeStatusMetrics
from smartflow_runtime.metrics import RuntimeMetrics, process_registry

from .helm import OPERATOR_CHART, Manifest, of_kind, one, render

DASHBOARD_FILE = OPERATOR_CHART / "dashboards" / "smartflow.json"
ALL_ON: dict[str, Any] = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}
# What Grafana puts in place of the dashboard's variables before it sends a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": "shop", "$name": "demo"}
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*\w+\)$")


def binary(name: str) -> Path:
    path = prometheus_bin(name)
    if not path.exists():
        pytest.fail(f"{path} is missing; run `make deps` (devstack/build/build-prometheus.sh)", pytrace=False)
    return path


def rendered(values: Mapping[str, Any] = ALL_ON, **kwargs: Any) -> list[Manifest]:
    return render(OPERATOR_CHART, values=values, **kwargs)


def rule_groups(manifests: Iterable[Manifest]) -> list[dict[str, Any]]:
    return list(one(manifests, "PrometheusRule")["spec"]["groups"])


def alerts(manifests: Iterable[Manifest]) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups(manifests) for rule in group["rules"]}


def write_rules(path: Path, manifests: Iterable[Manifest]) -> Path:
    """The PrometheusRule's groups as a Prometheus rules file (what prometheus-operator loads)."""
    path.write_text(yaml.safe_dump({"groups": rule_groups(manifests)}, sort_keys=False))
    return path


def dashboard(manifests: Iterable[Manifest]) -> dict[str, Any]:
    maps = [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]
    assert len(maps) == 1, f"expected one dashboard ConfigMap, got {len(maps)}"
    return dict(json.loads(maps[0]["data"]["smartflow.json"]))


def panel_queries(
    board: Mapping[str, Any], variables: Mapping[str, str] = GRAFANA_VARIABLES
) -> dict[str, str]:
    """Each panel target's query by ``<panel title>/<refId>``, with Grafana's variables replaced
    as Grafana does before sending them."""
    queries = {
        f"{panel['title']}/{target['refId']}": target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    return {key: _substituted(query, variables) for key, query in queries.items()}


def dashboard_queries(board: Mapping[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard: the panels', and the variables' selectors."""
    queries = list(panel_queries(board).values())
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"unexpected variable query {variable['query']!r}"
            queries.append(_substituted(match["selector"], GRAFANA_VARIABLES))
    return queries


def _substituted(query: str, variables: Mapping[str, str]) -> str:
    for placeholder, value in variables.items():
        query = query.replace(placeholder, value)
    return query


def promql_names(expressions: list[str]) -> list[dict[str, Any]]:
    """Parse each expression with Prometheus's own parser: {"names": [...]} or {"error": ...}."""
    result = subprocess.run(
        [str(binary("promql-names"))],
        input="".join(json.dumps(expr) + "\n" for expr in expressions),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(parsed) == len(expressions), result.stderr
    return parsed


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """The series names a registry serves, including counter and histogram suffixes."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def role_process_names() -> set[str]:
    """What a ``smartflow-runtime run`` process serves on its admin port (as the CLI builds it)."""
    registry = process_registry()
    RuntimeMetrics(registry)
    return exposed_names(registry)


def operator_names() -> set[str]:
    """What ``smartflow-operator run`` serves on its metrics port (as runner.py wires it)."""
    metrics = OperatorMetrics()
    AutoscalingMetrics(metrics.registry)
    RuntimeStatusMetrics(metrics.registry)
    return exposed_names(metrics.registry)


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary("promtool")), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
