"""Condition types and reasons of a SmartflowRuntime, and how a condition list is updated.

``lastTransitionTime`` changes only when a condition's status does; a new reason or message
with the same status keeps the old time (the Kubernetes API conventions). Pure.
"""

from __future__ import annotations

from .status import Condition, ConditionStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)

# Ready
ALL_ROLES_READY = "AllRolesReady"
ROLES_NOT_READY = "RolesNotReady"
# Progressing
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
# Progressing / Ready when the operator cannot apply the spec
RECONCILE_BLOCKED = "ReconcileBlocked"
# Degraded
AS_EXPECTED = "AsExpected"
INVALID_SPEC = "InvalidSpec"
CHILD_REJECTED = "ChildRejected"
# (SecretNotFound, SecretKeyNotFound, ConfigMapNotFound, ConfigMapKeyNotFound: see config_refs.py)


def set_condition(
    conditions: list[Condition],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """``conditions`` with ``type_`` set; other conditions are kept as they are."""
    previous = next((condition for condition in conditions if condition.type == type_), None)
    transition = now if previous is None or previous.status != status else previous.last_transition_time
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    others = [condition for condition in conditions if condition.type != type_]
    return sorted([*others, updated], key=_order)


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)


def _order(condition: Condition) -> tuple[int, str]:
    known = (
        CONDITION_TYPES.index(condition.type) if condition.type in CONDITION_TYPES else len(CONDITION_TYPES)
    )
    return known, condition.type
