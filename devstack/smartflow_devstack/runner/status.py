"""The Deployment ``status`` the local runner writes in place of the deployment controller: replica
counts, ``observedGeneration`` and the ``Available``/``Progressing``/``ReplicaFailure`` conditions.
Pure: :mod:`.loop` passes the replicas it runs, the clock and the status currently stored, and
patches the ``status`` subresource only when :func:`status_changed` says so (the stored status
carries the conditions' transition times forward, so an unchanged state yields an equal status).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .rollout import ReplicaView
from .spec import DeploymentFacts

Json = dict[str, Any]

AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"

REASON_MIN_AVAILABLE = "MinimumReplicasAvailable"
REASON_MIN_UNAVAILABLE = "MinimumReplicasUnavailable"
REASON_ROLLED_OUT = "NewReplicaSetAvailable"
REASON_ROLLING = "ReplicaSetUpdated"
REASON_DEADLINE = "ProgressDeadlineExceeded"
REASON_CRASH_LOOP = "CrashLoopBackOff"

COUNT_FIELDS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")


@dataclass(frozen=True)
class ReplicaFailure:
    """Why replicas of the current template cannot run (kubelet-like reason)."""

    reason: str
    message: str


def build_status(
    facts: DeploymentFacts,
    replicas: Sequence[ReplicaView],
    *,
    now: datetime,
    last_progress: datetime,
    failure: ReplicaFailure | None = None,
    previous: Mapping[str, Any] | None = None,
) -> Json:
    """The status for ``replicas`` (not terminating); ``last_progress`` is when the counts last moved."""
    desired = max(facts.replicas, 0)
    updated = sum(1 for r in replicas if r.current)
    ready = sum(1 for r in replicas if r.ready)
    available = sum(1 for r in replicas if r.available)
    max_unavailable = facts.max_unavailable if facts.strategy == "RollingUpdate" else 0
    replica_set = f'ReplicaSet "{facts.name}-{facts.template_hash}"'
    conditions: list[Json] = []
    if available >= desired - max_unavailable:
        conditions.append(
            _condition(AVAILABLE, True, REASON_MIN_AVAILABLE, "Deployment has minimum availability.")
        )
    else:
        conditions.append(
            _condition(
                AVAILABLE, False, REASON_MIN_UNAVAILABLE, "Deployment does not have minimum availability."
            )
        )
    complete = updated == desired and len(replicas) == desired and available == desired
    if complete:
        conditions.append(
            _condition(PROGRESSING, True, REASON_ROLLED_OUT, f"{replica_set} has successfully progressed.")
        )
    elif now - last_progress > timedelta(seconds=facts.progress_deadline_seconds):
        conditions.append(
            _condition(PROGRESSING, False, REASON_DEADLINE, f"{replica_set} has timed out progressing.")
        )
    else:
        conditions.append(_condition(PROGRESSING, True, REASON_ROLLING, f"{replica_set} is progressing."))
    if failure is not None:
        conditions.append(_condition(REPLICA_FAILURE, True, failure.reason, failure.message))
    earlier = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    return {
        "observedGeneration": facts.generation,
        "replicas": len(replicas),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": max(0, desired - available),
        "conditions": [_carry_times(c, earlier.get(c["type"]), now) for c in conditions],
    }


def status_changed(stored: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the stored status differs from ``desired`` (the apiserver drops zero counts)."""
    stored = stored or {}
    if stored.get("observedGeneration") != desired.get("observedGeneration"):
        return True
    if any(int(stored.get(k) or 0) != int(desired.get(k) or 0) for k in COUNT_FIELDS):
        return True
    return _by_type(stored.get("conditions")) != _by_type(desired.get("conditions"))


def _condition(kind: str, status: bool, reason: str, message: str) -> Json:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message}


def _carry_times(condition: Json, earlier: Mapping[str, Any] | None, now: datetime) -> Json:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    if earlier is None or earlier.get("status") != condition["status"]:
        return {**condition, "lastTransitionTime": stamp, "lastUpdateTime": stamp}
    transition = earlier.get("lastTransitionTime", stamp)
    same = earlier.get("reason") == condition["reason"] and earlier.get("message") == condition["message"]
    updated = earlier.get("lastUpdateTime", stamp) if same else stamp
    return {**condition, "lastTransitionTime": transition, "lastUpdateTime": updated}


def _by_type(conditions: object) -> dict[str, tuple[object, ...]]:
    keys = ("status", "reason", "message", "lastTransitionTime", "lastUpdateTime")
    if not isinstance(conditions, list):
        return {}
    return {str(c.get("type")): tuple(c.get(k) for k in keys) for c in conditions if isinstance(c, dict)}
