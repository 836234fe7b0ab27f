"""The chart's RBAC equals the operator's permission list (smartflow_operator.rbac), for every
watch scope: nothing more, nothing less, no wildcards, and bound to the operator's ServiceAccount.
"""

from __future__ import annotations

from typing import Any

import pytest

from smartflow_operator.rbac import PERMISSIONS, as_policy_rules, leader_election_permissions

from .helm import OPERATOR_CHART, Manifest, of_kind, one, render, rule_set

NAMESPACE = "smartflow-system"
SCOPES: dict[str, dict[str, Any]] = {
    "release-namespace": {},
    "one-namespace": {"watch": {"namespaces": ["team-a"]}},
    "namespace-list": {"watch": {"namespaces": ["team-a", "team-b", "team-c"]}},
    "cluster": {"watch": {"allNamespaces": True}},
}
CODE_RULES = rule_set(as_policy_rules())


def _election(obj: Manifest) -> bool:
    return str(obj["metadata"]["name"]).endswith("-leader-election")


def _scoped(manifests: list[Manifest], kind: str) -> list[Manifest]:
    """The ``kind`` objects of the watch scope (the leader-election Role is tested on its own)."""
    return [obj for obj in of_kind(manifests, kind) if not _election(obj)]


def _roles(manifests: list[Manifest]) -> list[Manifest]:
    return _scoped(manifests, "Role") + of_kind(manifests, "ClusterRole")


@pytest.mark.parametrize("scope", SCOPES)
def test_every_role_grants_exactly_the_code_permissions(scope: str) -> None:
    roles = _roles(render(OPERATOR_CHART, namespace=NAMESPACE, values=SCOPES[scope]))
    assert roles
    for role in roles:
        granted = rule_set(role["rules"])
        assert granted == CODE_RULES, (
            f"{role['kind']} {role['metadata']['name']}: "
            f"extra {sorted(granted - CODE_RULES)}, missing {sorted(CODE_RULES - granted)}"
        )


@pytest.mark.parametrize("scope", SCOPES)
def test_no_wildcards_and_no_resource_names(scope: str) -> None:
    for role in _roles(render(OPERATOR_CHART, namespace=NAMESPACE, values=SCOPES[scope])):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"wildcard in {key}: {rule}"
            assert "nonResourceURLs" not in rule
            assert "resourceNames" not in rule


def test_secrets_are_only_read_by_name() -> None:
    # A list/watch on Secrets would hand the operator every credential in the namespace.
    (role,) = _roles(render(OPERATOR_CHART, namespace=NAMESPACE))
    secret_verbs = {verb for group, resource, verb in rule_set(role["rules"]) if resource == "secrets"}
    assert secret_verbs == {"get"}
    config_map_verbs = {verb for _, resource, verb in rule_set(role["rules"]) if resource == "configmaps"}
    assert config_map_verbs == {"get"}


def test_the_code_list_itself_has_no_wildcards_or_duplicates() -> None:
    keys = [(permission.api_group, permission.resource) for permission in PERMISSIONS]
    assert len(keys) == len(set(keys)), "one entry per resource"
    for permission in PERMISSIONS:
        assert "*" not in permission.verbs and permission.resource != "*"
        assert permission.why, f"{permission.resource}: every permission says why it is needed"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, [NAMESPACE]),
        ({"watch": {"namespaces": ["team-a"]}}, ["team-a"]),
        ({"watch": {"namespaces": ["team-a", "team-b", "team-a"]}}, ["team-a", "team-b"]),
    ],
)
def test_namespaced_scope_has_a_role_and_binding_per_watched_namespace(
    values: dict[str, Any], expected: list[str]
) -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=values)
    assert not of_kind(manifests, "ClusterRole") and not of_kind(manifests, "ClusterRoleBinding")
    roles = _scoped(manifests, "Role")
    bindings = _scoped(manifests, "RoleBinding")
    assert sorted(role["metadata"]["namespace"] for role in roles) == sorted(expected)
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == sorted(expected)
    account = one(manifests, "ServiceAccount")["metadata"]
    for binding in bindings:
        role = next(r for r in roles if r["metadata"]["namespace"] == binding["metadata"]["namespace"])
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        ]


def test_cluster_scope_has_one_cluster_role_and_binding_and_no_roles() -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=SCOPES["cluster"])
    assert not _scoped(manifests, "Role") and not _scoped(manifests, "RoleBinding")
    role = one(manifests, "ClusterRole")
    binding = one(manifests, "ClusterRoleBinding")
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(manifests, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    ]


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values={"rbac": {"create": False}})
    assert not _roles(manifests)
    assert not of_kind(manifests, "RoleBinding") and not of_kind(manifests, "ClusterRoleBinding")


def test_an_existing_service_account_is_bound_and_not_created() -> None:
    values = {"serviceAccount": {"create": False, "name": "platform-operator"}}
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=values)
    assert not of_kind(manifests, "ServiceAccount")
    assert {binding["subjects"][0]["name"] for binding in of_kind(manifests, "RoleBinding")} == {
        "platform-operator"
    }
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"


@pytest.mark.parametrize("scope", SCOPES)
def test_the_leader_election_role_is_the_code_list_in_the_release_namespace_only(scope: str) -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=SCOPES[scope])
    (role,) = [obj for obj in of_kind(manifests, "Role") if _election(obj)]
    (binding,) = [obj for obj in of_kind(manifests, "RoleBinding") if _election(obj)]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == as_policy_rules(leader_election_permissions())
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(manifests, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


def test_the_lease_rules_name_the_configured_lease_and_only_create_is_unnamed() -> None:
    values = {"leaderElection": {"leaseName": "shop-operator"}}
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=values)
    (role,) = [obj for obj in of_kind(manifests, "Role") if _election(obj)]
    by_verbs = {tuple(rule["verbs"]): rule.get("resourceNames") for rule in role["rules"]}
    assert by_verbs == {("create",): None, ("get", "update"): ["shop-operator"]}
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--lease-name=shop-operator" in container["args"]
    assert f"--lease-namespace={NAMESPACE}" in container["args"]


def test_no_leader_election_role_when_leader_election_is_off() -> None:
    values = {"replicaCount": 1, "leaderElection": {"enabled": False}}
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=values)
    assert not [obj for obj in of_kind(manifests, "Role") if _election(obj)]
    (container,) = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--no-leader-elect" in container["args"]
