"""replicas_for (the only source of Deployment replicas) and the declared permissions."""

from __future__ import annotations

from smartflow_operator.autoscaling.replicas import replicas_for
from smartflow_operator.controller import backoff_delay
from smartflow_operator.names import Role
from smartflow_operator.rbac import PERMISSIONS, as_policy_rules

from .conftest import make_runtime, with_spec


class TestReplicasFor:
    def test_spec_replicas_by_default(self) -> None:
        spec = make_runtime(with_spec(roles={"relay": {"replicas": 4}})).spec
        assert replicas_for(spec, Role.RELAY, 2) == 4
        assert replicas_for(spec, Role.API, None) == 1

    def test_external_autoscaling_omits_replicas(self) -> None:
        spec = make_runtime(
            with_spec(roles={"consumer": {"autoscaling": {"enabled": True, "mode": "External"}}})
        ).spec
        assert replicas_for(spec, Role.CONSUMER, 3) is None


class TestPermissions:
    def test_the_operator_can_do_what_reconcile_does(self) -> None:
        granted = {(p.api_group, p.resource): set(p.verbs) for p in PERMISSIONS}
        assert {"get", "list", "watch", "patch"} <= granted[("smartflow.io", "smartflowruntimes")]
        assert "patch" in granted[("smartflow.io", "smartflowruntimes/status")]
        assert {"list", "watch", "patch", "delete"} <= granted[("apps", "deployments")]
        # The api Service is desired in every mode, so it is applied but never pruned. Every child
        # kind is watched: the passes read children from the watches (watched_children).
        assert granted[("", "services")] == {"list", "watch", "create", "patch"}
        assert {"list", "watch", "patch", "delete"} <= granted[("policy", "poddisruptionbudgets")]
        assert {"list", "watch", "patch", "delete"} <= granted[("networking.k8s.io", "networkpolicies")]
        assert granted[("", "secrets")] == {"get"}
        assert "create" in granted[("", "events")]

    def test_policy_rules_shape(self) -> None:
        rules = as_policy_rules()
        assert len(rules) == len(PERMISSIONS)
        assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in rules)


class TestBackoff:
    def test_exponential_and_capped(self) -> None:
        assert [backoff_delay(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
