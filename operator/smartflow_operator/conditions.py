"""Condition types and reasons of a SmartflowRuntime, and how a condition list is updated.

``lastTransitionTime`` changes only when a condition's status does; a new reason or message
with the same status keeps the old time (the Kubernetes API conventions). Pure.

Two writers share ``status.conditions``: the reconciler owns ``Ready``, ``Progressing``,
``Degraded`` and ``SchemaReady``; the autoscaler owns ``RelayAutoscaling`` and
``ConsumerAutoscaling``. A JSON merge patch replaces the whole list, so each writer builds it
with :func:`merge_by_type` from the list it read (its own types replaced, every other type kept
as read) and sends it with that read's ``resourceVersion`` as a precondition
(:mod:`.status_writer`): a concurrent write of the other writer makes the patch fail with 409,
and it is rebuilt from the fresh list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .status import Condition, ConditionStatus

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SCHEMA_READY = "SchemaReady"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, SCHEMA_READY)

# Ready
ALL_ROLES_READY = "AllRolesReady"
ROLES_NOT_READY = "RolesNotReady"
SCHEMA_NOT_READY = "SchemaNotReady"  # Ready requires SchemaReady
# Progressing
ROLLING_OUT = "RollingOut"
ROLLOUT_COMPLETE = "RolloutComplete"
# Progressing / Ready when the operator cannot apply the spec
RECONCILE_BLOCKED = "ReconcileBlocked"
# Degraded
AS_EXPECTED = "AsExpected"
INVALID_SPEC = "InvalidSpec"
CHILD_REJECTED = "ChildRejected"
MIGRATION_FAILED = "MigrationFailed"  # also SchemaReady's reason
# SchemaReady (True: the roles may run spec.image; False: the migration Job has not succeeded yet)
MIGRATED = "Migrated"
MIGRATIONS_DISABLED = "MigrationsDisabled"
MIGRATING = "Migrating"  # also Progressing's reason while the roles wait for the migration
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


def merge_by_type(
    live: Sequence[Mapping[str, Any]] | None,
    owned: Iterable[Mapping[str, Any]],
    *,
    owned_types: Iterable[str],
) -> list[dict[str, Any]]:
    """``live`` (raw ``status.conditions``) with the ``owned_types`` replaced by ``owned``.

    Conditions of other types are kept exactly as they are, in a stable order; an owned type
    absent from ``owned`` is removed.
    """
    types = set(owned_types)
    kept = [dict(cond) for cond in live or () if cond.get("type") not in types]
    merged = kept + [dict(cond) for cond in owned if cond.get("type") in types]
    return sorted(merged, key=lambda cond: _rank(str(cond.get("type", ""))))


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((condition for condition in conditions if condition.type == type_), None)


def _order(condition: Condition) -> tuple[int, str]:
    return _rank(condition.type)


def _rank(type_: str) -> tuple[int, str]:
    known = CONDITION_TYPES.index(type_) if type_ in CONDITION_TYPES else len(CONDITION_TYPES)
    return known, type_
