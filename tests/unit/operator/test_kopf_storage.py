"""The operator's kopf diff-base storage builds the same essence as kopf's own, without copying
the status and managedFields it throws away (pure: kopf's storage classes, no apiserver)."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from smartflow_operator.handlers import LeanStatusDiffBaseStorage


class NoCopy(dict[str, Any]):
    """A value that fails the test when deep-copied."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise AssertionError("deep-copied a part of the object the essence does not keep")


def _runtime(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "smartflow.io/v1alpha1",
        "kind": "SmartflowRuntime",
        "metadata": {
            "name": "demo",
            "namespace": "team",
            "uid": "u-1",
            "generation": 3,
            "resourceVersion": "42",
            "labels": {"team": "a"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "smartflow.io/register._locals_.runtime_changed": '{"retries": 1}',
                "smartflow.io/last-handled-configuration": "{}",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"image": "smartflow:1", "mode": "split", "roles": {"api": {"replicas": 2}}},
        "status": {"kopf": {"x": 1}, "conditions": [{"type": "Ready", "status": "True"}], **status},
    }


def test_the_essence_is_kopfs_own() -> None:
    lean = LeanStatusDiffBaseStorage(name="kopf")
    kopfs = kopf.StatusDiffBaseStorage(name="kopf")
    for body in (_runtime(), {"metadata": {"name": "bare"}, "spec": {}}, {"spec": {"a": 1}}):
        assert lean.build(body=kopf.Body(copy.deepcopy(body))) == kopfs.build(body=kopf.Body(body))
    essence = lean.build(body=kopf.Body(_runtime()))
    assert essence["spec"]["roles"] == {"api": {"replicas": 2}}  # type: ignore[typeddict-item]
    assert "status" not in essence and "managedFields" not in essence.get("metadata", {})


def test_status_and_managed_fields_are_not_copied() -> None:
    body = _runtime(roles=NoCopy(api={"replicas": 2}))
    body["metadata"]["managedFields"] = NoCopy(huge="x" * 10_000)
    essence = LeanStatusDiffBaseStorage(name="kopf").build(body=kopf.Body(body))
    assert essence["metadata"]["labels"] == {"team": "a"}  # type: ignore[typeddict-item]


def test_with_extra_fields_it_is_kopfs_build() -> None:
    body = _runtime(phase="Running")
    fields = ["status.phase"]
    lean = LeanStatusDiffBaseStorage(name="kopf").build(body=kopf.Body(body), extra_fields=fields)
    assert lean == kopf.StatusDiffBaseStorage(name="kopf").build(body=kopf.Body(body), extra_fields=fields)
    assert lean["status"] == {"phase": "Running"}  # type: ignore[typeddict-item]
