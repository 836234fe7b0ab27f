"""What the autoscaler reports for one role: status fields, its condition and Event text (pure).

Called by :mod:`.loop` after each poll. The status lives under ``status.roles.<role>.lag`` and
``status.roles.<role>.autoscaling`` (fields the reconciler preserves and never writes), and one
condition per role, ``RelayAutoscaling`` / ``ConsumerAutoscaling``: True while the lag is
measured (reason: the decision's), False with reason ``LagProbeFailed`` while it is not.
``desiredReplicas`` only reports the decision: it reaches the Deployment by ``Controller.scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..names import Role
from .decision import Reason, ScalingDecision
from .errors import ProbeError
from .history import ScalingHistory
from .lag import Reading

LAG_PROBE_FAILED = "LagProbeFailed"
DISABLED = "Disabled"

METRIC_NAMES = {Role.RELAY: "due outbox rows", Role.CONSUMER: "consumer-group lag"}
CAP_NAMES = {Role.RELAY: "outbox shards", Role.CONSUMER: "partitions"}


def condition_type(role: Role) -> str:
    return f"{role.value.capitalize()}Autoscaling"


@dataclass(frozen=True)
class ConditionValue:
    type: str
    status: str  # "True" / "False"
    reason: str
    message: str


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def autoscaling_status(
    role: Role,
    decision: ScalingDecision,
    *,
    reading: Reading | None,
    error: ProbeError | None,
    previous: dict[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """``status.roles.<role>.autoscaling`` after this poll (camelCase, JSON-ready).

    Fields without a value are left out rather than set to null: a merge patch deletes a null
    field, so the stored status would never equal a value holding nulls (see
    :func:`autoscaling_changed`). Nothing here changes from poll to poll while the lag and the
    decision do not (the oldest due row's age, which grows every second, is only a metric).
    """
    previous = previous or {}
    inputs = decision.inputs
    scaled = decision.changed and decision.writes_replicas
    status: dict[str, Any] = {
        "desiredReplicas": decision.desired if decision.writes_replicas else None,
        "currentReplicas": inputs.current,
        "metric": inputs.metric if reading is not None else previous.get("metric"),
        "effectiveMetric": inputs.effective_metric,
        "metricTruncated": inputs.truncated,
        "cap": inputs.cap,
        "minReplicas": inputs.lower,
        "maxReplicas": inputs.upper,
        "recommendation": inputs.recommendation,
        "reason": decision.reason.value,
        "message": decision_message(role, decision, error=error),
        "lastScaleTime": timestamp(now) if scaled else previous.get("lastScaleTime"),
        "lastScaleReason": decision.reason.value if scaled else previous.get("lastScaleReason"),
        "probeError": None if error is None else {"reason": error.reason, "message": str(error)},
        "excludedPartitions": list(inputs.excluded_partitions) or None,
        "history": decision.history.to_status(),
    }
    return without_nulls(status)


# What a poll measured and decided; equal to the previous report's, the scale it reported is all
# that happened since.
_OUTCOME = (
    "desiredReplicas",
    "metric",
    "effectiveMetric",
    "metricTruncated",
    "cap",
    "minReplicas",
    "maxReplicas",
    "recommendation",
    "excludedPartitions",
    "probeError",
)


def confirms_last_scale(previous: dict[str, Any] | None, fragment: dict[str, Any]) -> bool:
    """Whether this poll only finds the previous report's scale done: that report changed the count
    to the one running now, and the metric, bounds, cap and recommendation are the same. Its
    reason and message (e.g. "lag 30: 1 -> 3 replicas (ScaledUp)") then stay, since they still
    explain the count, and the scale costs no second status write."""
    if previous is None or previous.get("currentReplicas") == previous.get("desiredReplicas"):
        return False
    if previous.get("desiredReplicas") != fragment.get("currentReplicas"):
        return False
    return all(previous.get(key) == fragment.get(key) for key in _OUTCOME)


def carried_over(previous: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    """``fragment`` with the previous report's account of the scale (see :func:`confirms_last_scale`)."""
    kept = ("currentReplicas", "reason", "message", "lastScaleTime", "lastScaleReason")
    return {**fragment, **{key: previous[key] for key in kept if key in previous}}


def decision_message(role: Role, decision: ScalingDecision, *, error: ProbeError | None) -> str:
    inputs = decision.inputs
    if error is not None:
        held = f"holding {inputs.current} replicas"
        if decision.reason is Reason.FALLBACK:
            held = f"fallback to {decision.desired} replicas"
        failures = decision.history.consecutive_failures
        return f"{role.value} lag probe failed ({failures} in a row), {held}: {error.reason}: {error}"
    metric = f"{METRIC_NAMES[role]} {inputs.metric}{'+' if inputs.truncated else ''}"
    if inputs.excluded_partitions:
        metric += f" ({inputs.effective_metric} counted; stuck partitions {list(inputs.excluded_partitions)})"
    if decision.reason in (Reason.PAUSED, Reason.EXTERNAL):
        owner = "paused" if decision.reason is Reason.PAUSED else "replicas owned by an external autoscaler"
        return f"{metric}; {owner}, the operator does not write replicas"
    cap = f", cap {inputs.cap} {CAP_NAMES[role]}" if inputs.cap else ""
    bounds = f"[{inputs.lower}, {inputs.upper}]{cap}"
    change = f"{inputs.current} -> {decision.desired}" if decision.changed else f"{decision.desired}"
    return f"{metric}: {change} replicas ({decision.reason.value}, bounds {bounds})"


def condition(role: Role, decision: ScalingDecision, *, error: ProbeError | None) -> ConditionValue:
    message = decision_message(role, decision, error=error)
    if error is not None:
        return ConditionValue(condition_type(role), "False", LAG_PROBE_FAILED, message)
    return ConditionValue(condition_type(role), "True", decision.reason.value, message)


def history_of(autoscaling: dict[str, Any] | None) -> ScalingHistory:
    return ScalingHistory.from_status((autoscaling or {}).get("history"))


def without_nulls(value: dict[str, Any] | None) -> dict[str, Any]:
    """``value`` without null fields, at every depth: what a JSON merge patch of it stores."""
    return {
        key: without_nulls(item) if isinstance(item, dict) else item
        for key, item in (value or {}).items()
        if item is not None
    }


def autoscaling_changed(live: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether ``status.roles.<role>.autoscaling`` must be written to become ``wanted``.

    A null and an omitted field are the same (a merge patch stores neither). The history is
    compared by what a restart would decide from (:meth:`.ScalingHistory.worth_persisting_over`),
    not field by field: the standing recommendation's time moves every poll.
    """
    if live is None:
        return True
    if without_nulls(_without_history(live)) != without_nulls(_without_history(wanted)):
        return True
    return history_of(wanted).worth_persisting_over(history_of(live))


def _without_history(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key != "history"}
