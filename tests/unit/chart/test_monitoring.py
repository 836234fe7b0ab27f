"""The chart's alerts, dashboard and PodMonitor, checked without a cluster: rendered by helm,
the rules checked and unit-tested by promtool, every query parsed by Prometheus's parser and
compared with the metrics our code registers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartflow_devstack.versions import REPO_ROOT
from smartflow_operator import conditions as c
from smartflow_operator.autoscaling.loop import SCALED_ROLES
from smartflow_operator.autoscaling.report import LAG_PROBE_FAILED, condition_type
from smartflow_operator.builders.deployment import build_deployment
from smartflow_operator.names import ADMIN_PORT_NAME, SPLIT_ROLES, Role
from tests.unit.operator.conftest import make_runtime

from . import monitoring as mon
from .helm import OPERATOR_CHART, helm, of_kind, one, render

ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")
OPERATIONS_DOC = REPO_ROOT / "docs" / "operations.md"
EXPECTED_ALERTS = {
    "SmartflowEventsDead",
    "SmartflowOutboxOldestDueRowTooOld",
    "SmartflowConsumerLagGrowing",
    "SmartflowLagProbeFailing",
    "SmartflowRuntimeNotReady",
    "SmartflowRuntimeDegraded",
    "SmartflowMigrationFailed",
    "SmartflowRelayShardsUnowned",
    "SmartflowRoleRestarting",
}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return mon.rendered()


class TestRendering:
    def test_monitoring_objects_are_off_by_default(self) -> None:
        manifests = render(OPERATOR_CHART)
        assert not of_kind(manifests, "PrometheusRule")
        assert not of_kind(manifests, "PodMonitor")
        assert not of_kind(manifests, "ConfigMap")

    def test_helm_lint_is_clean_with_every_monitoring_object_on(self) -> None:
        flags = [f"--set=metrics.{key}.enabled=true" for key in mon.ALL_ON["metrics"]]
        result = helm("lint", "--strict", str(OPERATOR_CHART), *flags)
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout

    def test_every_alert_says_what_where_and_links_its_runbook(self, manifests: list[dict[str, Any]]) -> None:
        alerts = mon.alerts(manifests)
        assert set(alerts) == EXPECTED_ALERTS
        headings = {
            line.lstrip("#").strip().lower()
            for line in OPERATIONS_DOC.read_text().splitlines()
            if line.startswith("### ")
        }
        for name, rule in alerts.items():
            annotations = rule["annotations"]
            assert annotations["summary"] and rule["labels"]["severity"] in {"warning", "critical"}, name
            assert "{{ $labels.namespace }}/{{ $labels.name }}" in annotations["description"], name
            anchor = annotations["runbook_url"].rsplit("#", 1)[1]
            assert anchor == name.lower() and anchor in headings, f"{name}: no runbook section {anchor!r}"

    def test_thresholds_severity_and_switches_come_from_values(self) -> None:
        values = {
            "metrics": {
                "prometheusRule": {
                    "enabled": True,
                    "labels": {"release": "prom"},
                    "additionalAlertLabels": {"team": "platform"},
                    "runbookBaseUrl": "",
                    "roleJob": "sf-roles",
                    "alerts": {
                        "eventsDead": {"windowMinutes": 3},
                        "oldestDueRow": {"maxAgeSeconds": 60, "for": "2m", "severity": "page"},
                        "consumerLagGrowing": {"minLag": 50, "window": "3m"},
                        "roleRestarting": {"restarts": 4, "window": "30m"},
                        "runtimeNotReady": {"enabled": False},
                    },
                }
            }
        }
        manifests = mon.rendered(values)
        assert one(manifests, "PrometheusRule")["metadata"]["labels"]["release"] == "prom"
        alerts = mon.alerts(manifests)
        assert "SmartflowRuntimeNotReady" not in alerts
        oldest = alerts["SmartflowOutboxOldestDueRowTooOld"]
        assert oldest["expr"].rstrip().endswith("> 60") and oldest["for"] == "2m"
        assert oldest["labels"] == {"severity": "page", "team": "platform"}
        dead = alerts["SmartflowEventsDead"]["expr"]
        assert "[3m]" in dead and "< 180" in dead
        lag = alerts["SmartflowConsumerLagGrowing"]["expr"]
        assert "[3m]" in lag and "> 50" in lag
        restarting = alerts["SmartflowRoleRestarting"]["expr"]
        assert 'job="sf-roles"' in restarting and "[30m]" in restarting and ">= 4" in restarting
        assert all("runbook_url" not in rule["annotations"] for rule in alerts.values())

    def test_alerts_match_the_condition_types_and_reasons_the_operator_writes(
        self, manifests: list[dict[str, Any]]
    ) -> None:
        alerts = {name: rule["expr"] for name, rule in mon.alerts(manifests).items()}
        assert f'type="{c.READY}"' in alerts["SmartflowRuntimeNotReady"]
        assert f'type="{c.DEGRADED}"' in alerts["SmartflowRuntimeDegraded"]
        migration = alerts["SmartflowMigrationFailed"]
        assert f'type="{c.SCHEMA_READY}"' in migration and f'reason="{c.MIGRATION_FAILED}"' in migration
        probe = alerts["SmartflowLagProbeFailing"]
        assert f'reason="{LAG_PROBE_FAILED}"' in probe
        assert all(condition_type(role) in probe for role in SCALED_ROLES)

    @pytest.mark.parametrize(
        ("watch", "selector"),
        [
            ({}, {"matchNames": ["smartflow-system"]}),
            ({"namespaces": ["shop", "staging"]}, {"matchNames": ["shop", "staging"]}),
            ({"allNamespaces": True}, {"any": True}),
        ],
    )
    def test_pod_monitor_scrapes_the_admin_port_of_every_role_pod_in_the_watched_namespaces(
        self, watch: dict[str, Any], selector: dict[str, Any]
    ) -> None:
        monitor = one(mon.rendered({**mon.ALL_ON, "watch": watch}), "PodMonitor")
        assert monitor["spec"]["namespaceSelector"] == selector
        match = monitor["spec"]["selector"]
        runtime = make_runtime()
        for role in (*SPLIT_ROLES, Role.ALL):
            template = build_deployment(runtime, role, replicas=1, config_hash="x")["spec"]["template"]
            pod_labels = template["metadata"]["labels"]
            assert match["matchLabels"].items() <= pod_labels.items(), role
            assert all(expression["key"] in pod_labels for expression in match["matchExpressions"]), role
            ports = {port["name"] for port in template["spec"]["containers"][0]["ports"]}
            assert ADMIN_PORT_NAME in ports
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == (ADMIN_PORT_NAME, "/metrics")
        relabeled = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert relabeled == {
            "name": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "role": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        }
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"

    def test_the_operator_service_monitor_keeps_the_runtime_namespace_label(
        self, manifests: list[dict[str, Any]]
    ) -> None:
        assert one(manifests, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True

    def test_dashboard_config_map_carries_the_chart_json_for_the_sidecar(self) -> None:
        values = {
            "metrics": {
                "grafanaDashboard": {
                    "enabled": True,
                    "namespace": "monitoring",
                    "annotations": {"grafana_folder": "Smartflow"},
                }
            }
        }
        (config_map,) = of_kind(mon.rendered(values), "ConfigMap")
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Smartflow"}
        board = mon.dashboard([config_map])
        assert board == yaml.safe_load(mon.DASHBOARD_FILE.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        titles = {panel["title"] for panel in board["panels"]}
        assert {
            "Desired vs ready replicas per role",
            "Last scaling decision per role",
            "Relay backlog (due outbox rows)",
            "Oldest due row age",
            "Consumer lag per partition",
            "Events per second",
            "Failed and dead events per second",
            "Handler latency",
            "Memory jobs per second",
        } <= titles
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
                assert 'namespace="$namespace", name="$name"' in target["expr"], panel["title"]


class TestPromtool:
    def test_rules_pass_promtool_check(self, manifests: list[dict[str, Any]], tmp_path: Path) -> None:
        rules = mon.write_rules(tmp_path / "rules.yaml", manifests)
        result = mon.promtool("check", "rules", str(rules))
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout

    def test_every_alert_fires_on_its_input_and_stays_quiet_on_a_healthy_one(
        self, manifests: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        spec = yaml.safe_load(ALERTS_TEST.read_text())
        checks = [check for case in spec["tests"] for check in case.get("alert_rule_test", [])]
        fires = {check["alertname"] for check in checks if check.get("exp_alerts")}
        quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
        assert fires == EXPECTED_ALERTS and quiet == EXPECTED_ALERTS
        mon.write_rules(tmp_path / "rules.yaml", manifests)
        shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
        result = mon.promtool("test", "rules", ALERTS_TEST.name, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


class TestMetricNames:
    def test_every_query_parses_and_selects_only_metrics_our_code_registers(
        self, manifests: list[dict[str, Any]]
    ) -> None:
        expressions = [rule["expr"] for rule in mon.alerts(manifests).values()]
        expressions += mon.dashboard_queries(mon.dashboard(manifests))
        registered = mon.role_process_names() | mon.operator_names()
        unknown: dict[str, list[str]] = {}
        for expression, parsed in zip(expressions, mon.promql_names(expressions), strict=True):
            assert "error" not in parsed, f"{expression!r} does not parse: {parsed['error']}"
            assert parsed["names"], f"{expression!r} selects no metric"
            missing = [name for name in parsed["names"] if name not in registered]
            if missing:
                unknown[expression] = missing
        assert not unknown, f"queries name metrics no registry has: {unknown}"

    def test_the_parser_reports_errors_and_names(self) -> None:
        # The check above is only as good as the parser wrapper: it must say no, and list names.
        bad, good = mon.promql_names(["sum(rate(x[5m])", 'a{b="c"} / on (d) e or {__name__="f"}'])
        assert "error" in bad
        assert good == {"names": ["a", "e", "f"]}

    def test_the_registries_hold_what_the_alerts_rely_on(self) -> None:
        names = mon.role_process_names() | mon.operator_names()
        assert {
            "process_start_time_seconds",
            "smartflow_outbox_events_dead_total",
            "smartflow_relay_shards",
            "smartflow_operator_runtime_condition",
            "smartflow_operator_autoscaling_partition_lag",
        } <= names
