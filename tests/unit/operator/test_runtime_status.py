"""Status and conditions from the live Deployments."""

from __future__ import annotations

from typing import Any

from smartflow_operator import conditions as c
from smartflow_operator.names import Role
from smartflow_operator.reconcile import merge_status_patches
from smartflow_operator.runtime_status import Problem, compute_status, status_patch
from smartflow_operator.status import SmartflowRuntimeStatus


def _deployment(role: str, *, desired: int, ready: int, updated: int | None = None) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {
            "name": f"demo-{role}",
            "generation": 2,
            "labels": {"app.kubernetes.io/component": role},
        },
        "spec": {
            "replicas": desired,
            "template": {"spec": {"containers": [{"name": "runtime", "image": "img:1"}]}},
        },
        "status": {
            "observedGeneration": 2,
            "readyReplicas": ready,
            "updatedReplicas": ready if updated is None else updated,
        },
    }


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(cond for cond in status["conditions"] if cond["type"] == type_)


def _status(
    deployments: list[dict[str, Any]], *, previous: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "generation": 4,
        "mode": "split",
        "expected_roles": (Role.API, Role.RELAY),
        "problem": None,
        "now": "2026-01-01T00:00:00Z",
    }
    options.update(kwargs)
    return compute_status(
        deployments=deployments, previous=SmartflowRuntimeStatus.model_validate(previous or {}), **options
    )


class TestComputeStatus:
    def test_ready_when_every_role_has_its_pods(self) -> None:
        status = _status([_deployment("api", desired=2, ready=2), _deployment("relay", desired=1, ready=1)])
        assert _condition(status, c.READY)["status"] == "True"
        assert _condition(status, c.PROGRESSING)["reason"] == c.ROLLOUT_COMPLETE
        assert _condition(status, c.DEGRADED)["status"] == "False"
        assert status["observedGeneration"] == 4
        assert status["roles"]["relay"] == {
            "deployment": "demo-relay",
            "image": "img:1",
            "desiredReplicas": 1,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "replicas": "1/1",
        }

    def test_not_ready_names_the_role_and_missing_deployments(self) -> None:
        status = _status([_deployment("api", desired=2, ready=1)])
        ready = _condition(status, c.READY)
        assert ready["status"] == "False" and ready["reason"] == c.ROLES_NOT_READY
        assert "api 1/2 ready" in ready["message"] and "relay has no Deployment" in ready["message"]
        assert _condition(status, c.PROGRESSING)["status"] == "True"

    def test_transition_time_changes_only_with_status(self) -> None:
        first = _status([_deployment("api", desired=2, ready=1)], expected_roles=(Role.API,))
        later = _status(
            [_deployment("api", desired=3, ready=1)],
            expected_roles=(Role.API,),
            previous=first,
            now="2026-01-02T00:00:00Z",
        )
        assert _condition(later, c.READY)["lastTransitionTime"] == "2026-01-01T00:00:00Z"
        assert _condition(later, c.READY)["message"] == "api 1/3 ready"
        ready = _status(
            [_deployment("api", desired=3, ready=3)],
            expected_roles=(Role.API,),
            previous=later,
            now="2026-01-03T00:00:00Z",
        )
        assert _condition(ready, c.READY)["lastTransitionTime"] == "2026-01-03T00:00:00Z"

    def test_problem_sets_degraded_and_keeps_judging_existing_workloads(self) -> None:
        problem = Problem("SecretNotFound", "Secret team/db (from spec.database.dsnSecretRef) does not exist")
        status = _status([_deployment("api", desired=1, ready=1)], problem=problem)
        degraded = _condition(status, c.DEGRADED)
        assert (degraded["status"], degraded["reason"]) == ("True", "SecretNotFound")
        assert "spec.database.dsnSecretRef" in degraded["message"]
        assert _condition(status, c.PROGRESSING)["reason"] == c.RECONCILE_BLOCKED
        assert _condition(status, c.READY)["status"] == "True"
        no_workloads = _status([], problem=problem)
        assert _condition(no_workloads, c.READY)["reason"] == c.RECONCILE_BLOCKED


class TestStatusPatch:
    def test_equal_status_needs_no_patch(self) -> None:
        status = _status([_deployment("api", desired=1, ready=1)], expected_roles=(Role.API,))
        assert status_patch(status, status) == {}

    def test_patch_keeps_fields_others_own_and_removes_stale_roles(self) -> None:
        desired = _status([_deployment("api", desired=1, ready=1)], expected_roles=(Role.API,))
        current = {
            **desired,
            "roles": {
                "api": {**desired["roles"]["api"], "readyReplicas": 0, "lag": 7, "autoscaling": {"x": 1}},
                "all": {"deployment": "demo-all"},
            },
            "kopf": {"progress": {}},
        }
        assert status_patch(current, desired) == {"roles": {"api": {"readyReplicas": 1}, "all": None}}

    def test_conditions_keep_the_autoscalers_types_as_they_are(self) -> None:
        desired = _status([_deployment("api", desired=1, ready=1)], expected_roles=(Role.API,))
        relay = {"type": "RelayAutoscaling", "status": "True", "reason": "WithinTolerance", "message": "x"}
        stale_ready = {**_condition(desired, c.READY), "status": "False", "reason": c.ROLES_NOT_READY}
        current = {**desired, "conditions": [stale_ready, relay]}
        patch = status_patch(current, desired)
        assert [cond["type"] for cond in patch["conditions"]] == [
            c.READY,
            c.PROGRESSING,
            c.DEGRADED,
            "RelayAutoscaling",
        ]
        assert patch["conditions"][3] == relay
        assert _condition(patch, c.READY)["status"] == "True"
        # Up to date apart from the autoscaler's condition: nothing to write.
        assert status_patch({**desired, "conditions": [*desired["conditions"], relay]}, desired) == {}

    def test_computed_status_holds_only_the_reconcilers_condition_types(self) -> None:
        previous = {"conditions": [{"type": "ConsumerAutoscaling", "status": "True", "reason": "R",
                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}  # fmt: skip
        status = _status([_deployment("api", desired=1, ready=1)], previous=previous)
        # SchemaReady comes with a schema gate (tests/unit/operator/test_schema_gate.py); none here.
        assert {cond["type"] for cond in status["conditions"]} == set(c.CONDITION_TYPES) - {c.SCHEMA_READY}


class TestMergeByType:
    def test_owned_types_are_replaced_and_others_kept(self) -> None:
        live = [{"type": "Ready", "status": "False"}, {"type": "RelayAutoscaling", "status": "True"}]
        merged = c.merge_by_type(
            live, [{"type": "RelayAutoscaling", "status": "False"}], owned_types=("RelayAutoscaling",)
        )
        assert merged == [
            {"type": "Ready", "status": "False"},
            {"type": "RelayAutoscaling", "status": "False"},
        ]

    def test_an_owned_type_left_out_is_removed_and_foreign_types_in_owned_are_ignored(self) -> None:
        live = [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "True"}]
        merged = c.merge_by_type(
            live, [{"type": "Ready", "status": "False"}, {"type": "Other"}], owned_types=("Ready", "Degraded")
        )
        assert merged == [{"type": "Ready", "status": "False"}]


class TestMergeStatusPatches:
    """The scale pass writes the reconciler's and the autoscaler's status in one merge patch."""

    LIVE = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "AllRolesReady", "message": "ok"},
            {"type": "RelayAutoscaling", "status": "True", "reason": "Steady", "message": "1"},
        ],
        "roles": {"relay": {"desiredReplicas": 1, "lag": 0}},
    }

    def test_roles_merge_per_role_and_conditions_keep_both_writers_changes(self) -> None:
        ours = {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RolesNotReady", "message": "relay 1/3"},
                self.LIVE["conditions"][1],
            ],
            "roles": {"relay": {"desiredReplicas": 3, "replicas": "1/3"}},
        }
        theirs = {
            "conditions": [
                self.LIVE["conditions"][0],
                {"type": "RelayAutoscaling", "status": "True", "reason": "ScaledUp", "message": "3"},
            ],
            "roles": {"relay": {"lag": 250, "autoscaling": {"desiredReplicas": 3}}},
        }
        merged = merge_status_patches(self.LIVE, ours, theirs)
        assert merged["roles"] == {
            "relay": {
                "desiredReplicas": 3,
                "replicas": "1/3",
                "lag": 250,
                "autoscaling": {"desiredReplicas": 3},
            }
        }
        assert {cond["type"]: cond["reason"] for cond in merged["conditions"]} == {
            "Ready": "RolesNotReady",
            "RelayAutoscaling": "ScaledUp",
        }

    def test_their_conditions_apply_on_the_live_list_when_ours_has_none(self) -> None:
        theirs = {
            "conditions": [
                self.LIVE["conditions"][0],
                {"type": "RelayAutoscaling", "status": "True", "reason": "ScaledUp", "message": "3"},
            ]
        }
        merged = merge_status_patches(self.LIVE, {"observedGeneration": 2}, theirs)
        assert merged["observedGeneration"] == 2
        assert [cond["reason"] for cond in merged["conditions"]] == ["AllRolesReady", "ScaledUp"]

    def test_nothing_to_merge_is_nothing(self) -> None:
        assert merge_status_patches(self.LIVE, {}, {}) == {}
