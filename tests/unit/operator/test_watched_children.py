"""The children view over kopf's indexes: what a pass reads instead of listing."""

from __future__ import annotations

import json

from smartflow_operator.handlers import CHILD_INDEXES, watched_children
from smartflow_operator.watched_children import WatchedChildren, compact


def deployment(name: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"app.kubernetes.io/instance": "rt"},
            "managedFields": [{"manager": "smartflow-operator", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1},
    }


def test_compact_drops_managed_fields_and_names_the_kind() -> None:
    obj = compact(deployment("rt-relay"), api_version="apps/v1", kind="Deployment")
    assert "managedFields" not in obj["metadata"]
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/instance": "rt"}
    assert (obj["apiVersion"], obj["kind"], obj["spec"], obj["status"]) == (
        "apps/v1",
        "Deployment",
        {"replicas": 2},
        {"readyReplicas": 1},
    )


def test_compacted_children_share_their_keys_and_short_strings() -> None:
    # Decoded separately, as two watch events are: equal strings, distinct objects.
    first, second = (
        compact(json.loads(json.dumps(deployment("rt-relay"))), api_version="apps/v1", kind="Deployment")
        for _ in range(2)
    )
    assert first == second
    (key_a,), (key_b,) = first["metadata"]["labels"].keys(), second["metadata"]["labels"].keys()
    assert key_a is key_b
    assert first["metadata"]["name"] is second["metadata"]["name"]
    long_value = "x" * 200  # long strings (e.g. a large annotation) are copied, not interned
    raw = json.dumps({"metadata": {"annotations": {"a": long_value}}})
    kept = [compact(json.loads(raw), api_version="v1", kind="K") for _ in range(2)]
    assert kept[0]["metadata"]["annotations"]["a"] == long_value
    assert kept[0]["metadata"]["annotations"]["a"] is not kept[1]["metadata"]["annotations"]["a"]


def test_children_of_a_runtime_by_kind_and_name() -> None:
    view = WatchedChildren(["deployments", "services"])
    assert view.of("ns", "rt") is None  # before attach: the caller lists instead
    relay = compact(deployment("rt-relay"), api_version="apps/v1", kind="Deployment")
    api = compact(deployment("rt-api"), api_version="v1", kind="Service")
    view.attach({"deployments": {("ns", "rt"): [relay]}})  # one index missing: not attached yet
    assert not view.attached
    view.attach({"deployments": {("ns", "rt"): [relay]}, "services": {("ns", "rt"): [api]}, "other": 1})
    assert view.of("ns", "rt") == {("Deployment", "rt-relay"): relay, ("Service", "rt-api"): api}
    assert view.of("ns", "other") == {}  # a runtime without children (yet)
    view.attach({"deployments": {}, "services": {}})  # kopf keeps its index objects: the first stays
    assert view.of("ns", "rt") == {("Deployment", "rt-relay"): relay, ("Service", "rt-api"): api}


def test_the_operator_indexes_every_child_kind_it_prunes() -> None:
    assert set(CHILD_INDEXES) == {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    view = watched_children()
    view.attach({name: {} for name in CHILD_INDEXES.values()})
    assert view.attached


def test_the_request_metric_names_the_resource_of_each_path() -> None:
    from smartflow_operator.kube import resource_of

    assert resource_of("/apis/smartflow.io/v1alpha1/namespaces/ns/smartflowruntimes/x/status") == (
        "smartflowruntimes/status"
    )
    assert resource_of("/apis/apps/v1/namespaces/ns/deployments/rt-relay") == "deployments"
    assert resource_of("/apis/apps/v1/namespaces/ns/deployments?labelSelector=a%3Db") == "deployments"
    assert resource_of("/api/v1/namespaces/ns/pods/p/log") == "pods/log"
    assert resource_of("/api/v1/namespaces/ns/events") == "events"
    assert resource_of("/api/v1/namespaces/ns") == "namespaces"
    assert resource_of("/apis/smartflow.io/v1alpha1/smartflowruntimes") == "smartflowruntimes"
    assert resource_of("/api/v1/nodes/n1") == "nodes"
