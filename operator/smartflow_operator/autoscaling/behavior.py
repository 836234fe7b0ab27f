"""HPA v2 ``behavior``: default rules, stabilisation and per-period rate limits (pure).

The arithmetic mirrors the HPA controller (``pkg/controller/podautoscaler/horizontal.go``:
``stabilizeRecommendationWithBehaviors``, ``calculateScaleUpLimitWithScalingRules``,
``calculateScaleDownLimitWithBehaviors``) so the same inputs give the same replica counts.
Called by :mod:`.decision` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .history import ScalingHistory, replicas_changed
from .spec import PolicyType, ScalingBehavior, ScalingPolicy, ScalingRules, SelectPolicy

DEFAULT_SCALE_UP_WINDOW_SECONDS = 0
DEFAULT_SCALE_DOWN_WINDOW_SECONDS = 300
DEFAULT_SCALE_UP_POLICIES = (
    ScalingPolicy(type=PolicyType.PERCENT, value=100, period_seconds=15),
    ScalingPolicy(type=PolicyType.PODS, value=4, period_seconds=15),
)
DEFAULT_SCALE_DOWN_POLICIES = (ScalingPolicy(type=PolicyType.PERCENT, value=100, period_seconds=15),)


@dataclass(frozen=True)
class Rules:
    """One direction's rules with the HPA defaults filled in."""

    window_seconds: int
    select: SelectPolicy
    policies: tuple[ScalingPolicy, ...]

    @property
    def longest_period(self) -> int:
        return max((p.period_seconds for p in self.policies), default=0)


@dataclass(frozen=True)
class ResolvedBehavior:
    up: Rules
    down: Rules

    @classmethod
    def of(cls, behavior: ScalingBehavior) -> ResolvedBehavior:
        return cls(
            up=_resolve(behavior.scale_up, DEFAULT_SCALE_UP_WINDOW_SECONDS, DEFAULT_SCALE_UP_POLICIES),
            down=_resolve(
                behavior.scale_down, DEFAULT_SCALE_DOWN_WINDOW_SECONDS, DEFAULT_SCALE_DOWN_POLICIES
            ),
        )


def _resolve(rules: ScalingRules, window: int, policies: tuple[ScalingPolicy, ...]) -> Rules:
    return Rules(
        window_seconds=window
        if rules.stabilization_window_seconds is None
        else rules.stabilization_window_seconds,
        select=rules.select_policy,
        policies=policies if rules.policies is None else tuple(rules.policies),
    )


def stabilize(
    recommendation: int, *, current: int, history: ScalingHistory, behavior: ResolvedBehavior, now: datetime
) -> int:
    """The most conservative recommendation: min over the up window, max over the down window."""
    up_cutoff = now - timedelta(seconds=behavior.up.window_seconds)
    down_cutoff = now - timedelta(seconds=behavior.down.window_seconds)
    up_limit = min([recommendation, *history.recommendations_since(up_cutoff)])
    down_limit = max([recommendation, *history.recommendations_since(down_cutoff)])
    stabilized = current
    if stabilized < up_limit:
        stabilized = up_limit
    if stabilized > down_limit:
        stabilized = down_limit
    return stabilized


def _period_start(current: int, history: ScalingHistory, period_seconds: int, now: datetime) -> int:
    """The count at the start of a policy period: what scale-ups added taken off, what
    scale-downs removed put back (both lists are read for either direction, as by the HPA)."""
    added = replicas_changed(history.scale_up_events, period_seconds=period_seconds, now=now)
    removed = replicas_changed(history.scale_down_events, period_seconds=period_seconds, now=now)
    return current - added + removed


def scale_up_limit(current: int, *, history: ScalingHistory, rules: Rules, now: datetime) -> int:
    """The highest count the up policies allow now (never below ``current``)."""
    if rules.select is SelectPolicy.DISABLED or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            proposals.append(start + policy.value)
        else:
            # Rounded up, or a small count could never grow by a percentage.
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    limit = min(proposals) if rules.select is SelectPolicy.MIN else max(proposals)
    return max(limit, current)


def scale_down_limit(current: int, *, history: ScalingHistory, rules: Rules, now: datetime) -> int:
    """The lowest count the down policies allow now (never above ``current``)."""
    if rules.select is SelectPolicy.DISABLED or not rules.policies:
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, history, policy.period_seconds, now)
        if policy.type is PolicyType.PODS:
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    # For scale-down the largest change is the lowest count.
    limit = max(proposals) if rules.select is SelectPolicy.MIN else min(proposals)
    return min(limit, current)


class Limit(StrEnum):
    """What bounded the result of :func:`limit_rate` (the HPA's ScalingLimited condition reasons)."""

    WITHIN_RANGE = "DesiredWithinRange"
    SCALE_UP_LIMIT = "ScaleUpLimit"
    TOO_MANY = "TooManyReplicas"
    SCALE_DOWN_LIMIT = "ScaleDownLimit"
    TOO_FEW = "TooFewReplicas"


def limit_rate(
    desired: int,
    *,
    current: int,
    lower: int,
    upper: int,
    history: ScalingHistory,
    behavior: ResolvedBehavior,
    now: datetime,
) -> tuple[int, Limit]:
    """Bound a stabilised recommendation by the rate policies and [lower, upper].

    The HPA's ``convertDesiredReplicasWithBehaviorRate``: only the side the change goes to is
    checked, so an unchanged count is returned as is.
    """
    if desired > current:
        up_limit = scale_up_limit(current, history=history, rules=behavior.up, now=now)
        allowed, why = (up_limit, Limit.SCALE_UP_LIMIT) if upper > up_limit else (upper, Limit.TOO_MANY)
        if desired > allowed:
            return allowed, why
    elif desired < current:
        down_limit = scale_down_limit(current, history=history, rules=behavior.down, now=now)
        allowed, why = (down_limit, Limit.SCALE_DOWN_LIMIT) if lower < down_limit else (lower, Limit.TOO_FEW)
        if desired < allowed:
            return allowed, why
    return desired, Limit.WITHIN_RANGE
