"""The scaling decision: a pure function of (reading, current replicas, policy, history, now).

Called by the autoscaling loop (:mod:`.loop`) once per poll and per role. Semantics:

- desired = ceil(metric / targetPerReplica), unless ``metric / (target x current)`` lies within
  ``[1 - tolerance, 1 + tolerance]`` (bounds included; HPA ``AverageValue`` metric), clamped to
  [minReplicas, min(maxReplicas, cap)] where the cap is the partition count (consumer) or outbox
  shard count (relay). The cap also wins over
  ``minReplicas``: replicas past it would only idle.
- HPA v2 behavior: stabilisation windows over the recorded recommendations (0 s up, 300 s
  down) and per-period rate-limit policies (:mod:`.behavior`). Step for step the HPA controller
  of Kubernetes 1.34 with ``behavior`` set (``normalizeDesiredReplicasWithBehaviors``): the
  tolerance test of ``Tolerances.isWithin``, the current count recorded as the first
  recommendation of a new history, scale-up and scale-down events kept apart
  (``storeScaleEvent``).
- KEDA activation: with ``minReplicas`` 0 a metric at or below ``activationThreshold`` asks
  for zero (the scale-down window acts as the cooldown); above it, zero goes to at least one.
- A failed probe holds the current count (it is never read as zero lag); after
  ``fallback.failureThreshold`` consecutive failures the fallback count applies.
- ``paused`` and mode ``External`` hold: the operator then writes no replicas at all.

Nothing here reads a clock, the environment or a client; ``now`` is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from .behavior import Limit, ResolvedBehavior, limit_rate, stabilize
from .history import Recommendation, ScalingHistory
from .lag import Reading, effective_lag
from .spec import AutoscalingSpec, ScalingMode


class Reason(StrEnum):
    """Why the decision is what it is (status, Events and metrics use these constants)."""

    PAUSED = "Paused"
    EXTERNAL = "External"
    PROBE_FAILED = "ProbeFailed"
    FALLBACK = "Fallback"
    BELOW_MINIMUM = "BelowMinimum"
    ABOVE_MAXIMUM = "AboveMaximum"
    ACTIVATED = "Activated"
    SCALED_TO_ZERO = "ScaledToZero"
    IDLE = "Idle"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    SCALE_UP_LIMITED = "ScaleUpLimited"
    SCALE_DOWN_LIMITED = "ScaleDownLimited"
    AT_MAXIMUM = "AtMaximum"
    AT_MINIMUM = "AtMinimum"
    STABILIZING = "Stabilizing"
    WITHIN_TOLERANCE = "WithinTolerance"
    STEADY = "Steady"


@dataclass(frozen=True)
class Bounds:
    lower: int
    upper: int

    @classmethod
    def of(cls, spec: AutoscalingSpec, cap: int | None) -> Bounds:
        # A cap of 0 (no shards table rows yet, topic not created) is "unknown", not "run none".
        upper = spec.max_replicas if cap is None or cap <= 0 else min(spec.max_replicas, cap)
        return cls(lower=min(spec.min_replicas, upper), upper=upper)

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.lower), self.upper)


@dataclass(frozen=True)
class DecisionInputs:
    """What the decision was made from, reported in the status next to the result."""

    current: int
    metric: int | None  # None: the probe failed
    effective_metric: int | None  # after persistent-lag exclusion
    cap: int | None
    lower: int
    upper: int
    recommendation: int | None  # ceil(metric / target) after tolerance and activation
    stabilized: int | None
    excluded_partitions: tuple[int, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class ScalingDecision:
    desired: int
    reason: Reason
    inputs: DecisionInputs
    history: ScalingHistory

    @property
    def changed(self) -> bool:
        return self.desired != self.inputs.current

    @property
    def writes_replicas(self) -> bool:
        """False when the operator must leave ``replicas`` alone (paused, external owner)."""
        return self.reason not in (Reason.PAUSED, Reason.EXTERNAL)


def metric_limit(spec: AutoscalingSpec) -> int:
    """The count past which more lag cannot change the decision (bounds the relay's COUNT)."""
    return max(spec.target_per_replica * spec.max_replicas, spec.activation_threshold + 1)


def recommend(metric: int, *, current: int, spec: AutoscalingSpec) -> int:
    """The unstabilised recommendation: HPA AverageValue with tolerance, plus KEDA activation."""
    active = metric > spec.activation_threshold
    if not active and spec.min_replicas == 0:
        return 0
    if current > 0 and within_tolerance(metric / (spec.target_per_replica * current), spec.tolerance):
        return current
    return math.ceil(metric / spec.target_per_replica)


def within_tolerance(ratio: float, tolerance: float) -> bool:
    """The HPA's ``Tolerances.isWithin`` (Kubernetes >= 1.33): both bounds are inside the band, so a
    ratio of exactly 1 + tolerance makes no change (the older ``abs(1 - ratio) > tolerance`` scaled
    there, since ``abs(1 - 1.1)`` is 0.10000000000000009 in float64)."""
    return (1.0 - tolerance) <= ratio <= (1.0 + tolerance)


def decide(
    *,
    spec: AutoscalingSpec,
    reading: Reading | None,
    current: int,
    history: ScalingHistory,
    now: datetime,
) -> ScalingDecision:
    """The replica count for one role now, with its reason, inputs and the next history."""
    behavior = ResolvedBehavior.of(spec.behavior)
    cap = reading.cap if reading is not None else None
    bounds = Bounds.of(spec, cap)
    inputs = DecisionInputs(
        current=current,
        metric=reading.metric if reading is not None else None,
        effective_metric=None,
        cap=cap,
        lower=bounds.lower,
        upper=bounds.upper,
        recommendation=None,
        stabilized=None,
        truncated=reading.truncated if reading is not None else False,
    )
    if spec.mode is ScalingMode.EXTERNAL:
        return ScalingDecision(current, Reason.EXTERNAL, inputs, history)
    if spec.paused:
        return ScalingDecision(current, Reason.PAUSED, inputs, history)
    if not history.started:
        # The HPA's recordInitialRecommendation: a new autoscaler's first recommendation is the
        # current count, whatever the windows, so neither window moves the count before it has
        # seen a full window of lag.
        history = history.model_copy(update={"recommendations": (Recommendation(at=now, replicas=current),)})
    if reading is None:
        return _probe_failed(spec, current=current, history=history, bounds=bounds, inputs=inputs, now=now)

    lag = effective_lag(
        reading,
        previous=history.committed_offsets,
        exclude_persistent=spec.exclude_persistent_lag,
        current_replicas=current,
    )
    inputs = replace(inputs, effective_metric=lag.metric, excluded_partitions=lag.excluded)
    history = history.model_copy(update={"consecutive_failures": 0, "committed_offsets": lag.committed})

    if current > bounds.upper:
        desired, reason = bounds.upper, Reason.ABOVE_MAXIMUM
    elif current < bounds.lower:
        desired, reason = bounds.lower, Reason.BELOW_MINIMUM
    else:
        recommendation = recommend(lag.metric, current=current, spec=spec)
        stabilized = stabilize(recommendation, current=current, history=history, behavior=behavior, now=now)
        inputs = replace(inputs, recommendation=recommendation, stabilized=stabilized)
        desired, reason = _limit(inputs, bounds=bounds, history=history, behavior=behavior, now=now)
        if reason is Reason.STEADY and math.ceil(lag.metric / spec.target_per_replica) != current:
            reason = Reason.WITHIN_TOLERANCE
        history = history.model_copy(
            update={
                "recommendations": (*history.recommendations, Recommendation(at=now, replicas=recommendation))
            }
        )
    history = _record(history, current=current, desired=desired, behavior=behavior, now=now)
    return ScalingDecision(desired, reason, inputs, history)


def _limit(
    inputs: DecisionInputs,
    *,
    bounds: Bounds,
    history: ScalingHistory,
    behavior: ResolvedBehavior,
    now: datetime,
) -> tuple[int, Reason]:
    """Apply the rate-limit policies and the bounds to the stabilised value, and name the outcome."""
    current, stabilized, recommendation = inputs.current, inputs.stabilized, inputs.recommendation
    assert stabilized is not None and recommendation is not None
    desired, limit = limit_rate(
        stabilized,
        current=current,
        lower=bounds.lower,
        upper=bounds.upper,
        history=history,
        behavior=behavior,
        now=now,
    )
    if current == 0 and stabilized > 0:
        # Activation always reaches one replica, even when the policies only allow percentages.
        return max(desired, min(1, bounds.upper)), Reason.ACTIVATED
    if limit is Limit.SCALE_UP_LIMIT:
        return desired, Reason.SCALE_UP_LIMITED
    if limit is Limit.SCALE_DOWN_LIMIT:
        return desired, Reason.SCALE_DOWN_LIMITED
    if desired > current:
        return desired, Reason.SCALED_UP
    if desired < current:
        return desired, Reason.SCALED_TO_ZERO if desired == 0 else Reason.SCALED_DOWN
    if limit is Limit.TOO_MANY:
        return current, Reason.AT_MAXIMUM
    if limit is Limit.TOO_FEW:
        return current, Reason.AT_MINIMUM
    if recommendation != current:
        return current, Reason.STABILIZING
    return current, Reason.IDLE if current == 0 else Reason.STEADY


def _probe_failed(
    spec: AutoscalingSpec,
    *,
    current: int,
    history: ScalingHistory,
    bounds: Bounds,
    inputs: DecisionInputs,
    now: datetime,
) -> ScalingDecision:
    """Hold (a failed probe is not zero lag); after enough failures in a row, the fallback."""
    failures = history.consecutive_failures + 1
    history = history.model_copy(update={"consecutive_failures": failures})
    if spec.fallback is None or failures < spec.fallback.failure_threshold:
        return ScalingDecision(current, Reason.PROBE_FAILED, inputs, history)
    desired = bounds.clamp(spec.fallback.replicas)
    behavior = ResolvedBehavior.of(spec.behavior)
    history = _record(history, current=current, desired=desired, behavior=behavior, now=now)
    return ScalingDecision(desired, Reason.FALLBACK, inputs, history)


def _record(
    history: ScalingHistory, *, current: int, desired: int, behavior: ResolvedBehavior, now: datetime
) -> ScalingHistory:
    """Remember a scale event (for the rate limits) and forget what no window can see any more."""
    history = history.with_scale_event(
        current=current,
        desired=desired,
        up_period_seconds=behavior.up.longest_period,
        down_period_seconds=behavior.down.longest_period,
        now=now,
    )
    return history.pruned(
        now, keep_recommendations=max(behavior.up.window_seconds, behavior.down.window_seconds)
    )
