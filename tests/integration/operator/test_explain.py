"""`kubectl explain` teaches the API from the CRD's descriptions."""

from __future__ import annotations

from .conftest import Kubectl


def test_explain_consumer_role_prints_descriptions(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.roles.consumer").stdout
    assert "The Kafka consumer group (mode split): runs the event handlers." in out
    assert "autoscaling" in out and "Scale this role from outbox lag" in out
    assert "replicas" in out and "Pod count." in out


def test_explain_autoscaling_bounds(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.roles.relay.autoscaling.maxReplicas").stdout
    assert "Upper bound." in out


def test_short_name_and_printer_columns(kubectl: Kubectl, crd: str) -> None:
    resources = kubectl("api-resources", "--api-group=smartflow.io").stdout
    assert "sfr" in resources and "SmartflowRuntime" in resources


def test_explain_migrations_teaches_the_opt_out(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.migrations").stdout
    assert "The schema migration Job run before the roles roll" in out
    for field in (
        "enabled",
        "outboxShards",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        assert field in out, field
    enabled = " ".join(kubectl("explain", "smartflowruntime.spec.migrations.enabled").stdout.split())
    assert "never create the Job (migrate in your own pipeline)" in enabled
    schema = kubectl("explain", "smartflowruntime.status.schema").stdout
    assert "migratedHash" in schema and "version" in schema
