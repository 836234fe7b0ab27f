"""Builders shared by the autoscaling table tests (plain values, no servers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from smartflow_operator.autoscaling.history import Recommendation, ScaleEvent, ScalingHistory
from smartflow_operator.autoscaling.spec import (
    AutoscalingSpec,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds_ago: float) -> datetime:
    return NOW - timedelta(seconds=seconds_ago)


def rules(
    pods: int = 0, pods_period: int = 0, percent: int = 0, percent_period: int = 0, window: int = 0
) -> ScalingRules:
    """The HPA tests' ``generateScalingRules``: pods policy first, then percent, select Max."""
    policies = []
    if pods:
        policies.append(ScalingPolicy(type=PolicyType.PODS, value=pods, period_seconds=pods_period))
    if percent:
        policies.append(ScalingPolicy(type=PolicyType.PERCENT, value=percent, period_seconds=percent_period))
    return ScalingRules(
        stabilization_window_seconds=window, select_policy=SelectPolicy.MAX, policies=policies
    )


def uniform_events(changes: list[int], period: int) -> list[tuple[float, int]]:
    """The HPA tests' ``generateEventsUniformDistribution``: (seconds ago, change) pairs."""
    segment = period / len(changes)
    return [(period - segment * (i + 1) + segment / 2, change) for i, change in enumerate(changes)]


def history(
    *,
    recommendations: Sequence[tuple[int, float]] = (),
    up_events: Sequence[tuple[float, int]] = (),
    down_events: Sequence[tuple[float, int]] = (),
    **extra: Any,
) -> ScalingHistory:
    """A history from (replicas, seconds ago) recommendations and (seconds ago, size) events."""
    return ScalingHistory(
        recommendations=tuple(Recommendation(at=at(ago), replicas=r) for r, ago in recommendations),
        scale_up_events=tuple(ScaleEvent(at=at(ago), change=c) for ago, c in up_events),
        scale_down_events=tuple(ScaleEvent(at=at(ago), change=c) for ago, c in down_events),
        **extra,
    )


def spec(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate({"enabled": True, **fields})
