"""The chart's RBAC equals the operator's permission list (smartflow_operator.rbac), for every
watch scope: nothing more, nothing less, no wildcards, and bound to the operator's ServiceAccount.
"""

from __future__ import annotations

from typing import Any

import pytest

from smartflow_operator.rbac import PERMISSIONS, as_policy_rules

from .helm import OPERATOR_CHART, Manifest, of_kind, one, render, rule_set

NAMESPACE = "smartflow-system"
SCOPES: dict[str, dict[str, Any]] = {
    "release-namespace": {},
    "one-namespace": {"watch": {"namespaces": ["team-a"]}},
    "namespace-list": {"watch": {"namespaces": ["team-a", "team-b", "team-c"]}},
    "cluster": {"watch": {"allNamespaces": True}},
}
CODE_RULES = rule_set(as_policy_rules())


def _roles(manifests: list[Manifest]) -> list[Manifest]:
    return of_kind(manifests, "Role") + of_kind(manifests, "ClusterRole")


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
    roles = of_kind(manifests, "Role")
    bindings = of_kind(manifests, "RoleBinding")
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
    assert not of_kind(manifests, "Role") and not of_kind(manifests, "RoleBinding")
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
    assert one(manifests, "RoleBinding")["subjects"][0]["name"] == "platform-operator"
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"
