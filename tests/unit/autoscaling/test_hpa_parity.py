"""Parity with the HPA controller of Kubernetes 1.34 (the release the local stack runs), path
"behavior present" (``normalizeDesiredReplicasWithBehaviors``).

Two kinds of test:

- cases ported from that release's ``pkg/controller/podautoscaler`` tests (``horizontal_test.go``:
  ``TestStoreScaleEvents``, ``TestCalculateScale{Up,Down}Limit...``, ``TestScaleDownStabilizeInitialSize``,
  the per-pod external metric cases; ``replica_calculator_test.go``: the ``externalPerPodMetric``
  cases), each named after its origin; the ``TestScalingWithRules`` and
  ``TestNormalizeDesiredReplicasWithBehavior`` tables are in ``test_behavior.py``;
- a reference model written line by line from that release's ``horizontal.go`` and
  ``replica_calculator.go`` (slot lists and all), fed the same random metric series as
  :func:`decide`: the replica counts must be equal at every step.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from smartflow_operator.autoscaling.behavior import ResolvedBehavior, Rules, scale_down_limit, scale_up_limit
from smartflow_operator.autoscaling.decision import Reason, decide
from smartflow_operator.autoscaling.history import ScaleEvent, ScalingHistory, replicas_changed, stored_event
from smartflow_operator.autoscaling.lag import Reading
from smartflow_operator.autoscaling.spec import PolicyType, ScalingPolicy, SelectPolicy

from .conftest import NOW, at, history, spec

# --- TestStoreScaleEvents ------------------------------------------------------------------------

# (name, longest policy period of generateScalingRules(...), previous events as (change, seconds ago),
#  expected events as (change, outdated), expected getReplicasChangePerPeriod(60, previous))
STORE_SCALE_EVENTS = [
    ("empty entries with two-policy-behavior", 60, [], [(5, False)], 0),
    ("one outdated entry to be replaced with behavior", 60, [(7, 61)], [(5, False)], 0),
    ("one actual entry to be not touched with behavior", 60, [(7, 58)], [(7, False), (5, False)], 7),
    ("two entries, one of them to be replaced", 60, [(7, 61), (6, 59)], [(5, False), (6, False)], 6),
    (
        "replace one entry, use policies with different periods",
        60,
        [(8, 29), (6, 59), (7, 61), (9, 61)],
        [(8, False), (6, False), (7, True), (5, False)],
        14,
    ),
    ("two entries, both actual", 120, [(7, 58), (6, 59)], [(7, False), (6, False), (5, False)], 13),
]


@pytest.mark.parametrize(
    ("longest", "previous", "expected", "changed"),
    [case[1:] for case in STORE_SCALE_EVENTS],
    ids=[case[0] for case in STORE_SCALE_EVENTS],
)
def test_store_scale_events(
    longest: int, previous: list[tuple[int, float]], expected: list[tuple[int, bool]], changed: int
) -> None:
    events = tuple(ScaleEvent(at=at(ago), change=change) for change, ago in previous)
    assert replicas_changed(events, period_seconds=60, now=NOW) == changed
    stored = stored_event(events, change=5, longest_period_seconds=longest, now=NOW)
    assert [(e.change, e.outdated) for e in stored] == expected
    # The same through the history, for either direction (10 -> 15 up, 10 -> 5 down).
    base = ScalingHistory(scale_up_events=events, scale_down_events=events)
    up = base.with_scale_event(
        current=10, desired=15, up_period_seconds=longest, down_period_seconds=1, now=NOW
    )
    down = base.with_scale_event(
        current=10, desired=5, up_period_seconds=1, down_period_seconds=longest, now=NOW
    )
    assert [(e.change, e.outdated) for e in up.scale_up_events] == expected
    assert up.scale_down_events == events
    assert [(e.change, e.outdated) for e in down.scale_down_events] == expected
    assert down.scale_up_events == events


# --- TestCalculateScaleUpLimitWithScalingRules / TestCalculateScaleDownLimitWithBehaviors --------

MIN_SELECT = Rules(
    window_seconds=300,
    select=SelectPolicy.MIN,
    policies=(
        ScalingPolicy(type=PolicyType.PODS, value=2, period_seconds=60),
        ScalingPolicy(type=PolicyType.PERCENT, value=50, period_seconds=60),
    ),
)


def test_calculate_scale_up_limit_with_scaling_rules() -> None:
    assert scale_up_limit(1, history=ScalingHistory(), rules=MIN_SELECT, now=NOW) == 2


def test_calculate_scale_down_limit_with_behaviors() -> None:
    assert scale_down_limit(5, history=ScalingHistory(), rules=MIN_SELECT, now=NOW) == 3


# --- the replica calculator's AverageValue (per pod) external metric ----------------------------

# (origin, current, metric, target per replica, tolerance, expected)
PER_POD_EXTERNAL = [
    ("TestReplicaCalcScaleUpPerPodCMExternal", 3, 8600, 2150, 0.1, 4),
    ("TestReplicaCalcScaleDownPerPodCMExternal", 5, 8600, 2867, 0.1, 3),
    ("TestReplicaCalcTolerancePerPodCMExternal", 3, 8600, 2900, 0.1, 3),
    # Its scale-up tolerance of 1 % as our one symmetric tolerance (1.34: per-direction tolerances
    # are alpha, off by default).
    ("TestReplicaCalcConfigurableTolerancePerPodCMExternal", 3, 8600, 2800, 0.01, 4),
    ("TestScaleUpPerPodCMExternal", 3, 8600, 2222, 0.1, 4),
    ("TestTolerancePerPodCMExternal", 4, 8600, 2200, 0.1, 4),
    ("ratio exactly 1 + tolerance (isWithin, 1.33+)", 3, 330, 100, 0.1, 3),
    ("ratio exactly 1 - tolerance", 10, 900, 100, 0.1, 10),
    ("just past 1 + tolerance", 3, 331, 100, 0.1, 4),
]


@pytest.mark.parametrize(
    ("current", "metric", "target", "tolerance", "expected"),
    [case[1:] for case in PER_POD_EXTERNAL],
    ids=[case[0] for case in PER_POD_EXTERNAL],
)
def test_per_pod_external_metric_replicas(
    current: int, metric: int, target: int, tolerance: float, expected: int
) -> None:
    policy = spec(
        minReplicas=1, maxReplicas=1000, targetPerReplica=target, tolerance=tolerance, behavior=_no_limits()
    )
    started = history(recommendations=[(current, 10_000)])
    d = decide(spec=policy, reading=Reading(metric=metric), current=current, history=started, now=NOW)
    assert d.inputs.recommendation == expected
    assert d.desired == expected


def test_scale_down_per_pod_external_with_an_empty_recommendation_log() -> None:
    """TestScaleDownPerPodCMExternal: 5 -> 3 at once, the log holding nothing older."""
    policy = spec(minReplicas=2, maxReplicas=6, targetPerReplica=3000)
    d = decide(
        spec=policy,
        reading=Reading(metric=8600),
        current=5,
        history=history(recommendations=[(3, 1000)]),  # started, nothing inside the window
        now=NOW,
    )
    assert (d.desired, d.reason) == (3, Reason.SCALED_DOWN)


# --- first decisions: recordInitialRecommendation ----------------------------------------------


def test_scale_down_stabilize_initial_size() -> None:
    """TestScaleDownStabilizeInitialSize: a new autoscaler at 5 whose metric says 3 holds 5."""
    policy = spec(minReplicas=2, maxReplicas=6, targetPerReplica=100)
    d = decide(spec=policy, reading=Reading(metric=300), current=5, history=ScalingHistory(), now=NOW)
    assert (d.desired, d.reason) == (5, Reason.STABILIZING)


def test_first_decision_under_a_scale_up_stabilization_window_holds_the_count() -> None:
    """The current count is the first recommendation whatever the windows, so a scale-up window
    (and no scale-down window) holds a new autoscaler too; once the window passed, it scales."""
    policy = spec(
        minReplicas=1,
        maxReplicas=10,
        targetPerReplica=100,
        behavior={
            "scaleUp": {"stabilizationWindowSeconds": 60},
            "scaleDown": {"stabilizationWindowSeconds": 0},
        },
    )
    first = decide(spec=policy, reading=Reading(metric=800), current=2, history=ScalingHistory(), now=NOW)
    assert (first.desired, first.reason) == (2, Reason.STABILIZING)
    later = decide(
        spec=policy,
        reading=Reading(metric=800),
        current=2,
        history=first.history,
        now=NOW + timedelta(seconds=61),
    )
    assert later.desired == 6  # 8 wanted; 2 + 4 pods (or +100 %) per 15 s


# --- rate limits after mixed scale-ups and scale-downs -----------------------------------------


def test_a_replaced_scale_up_event_no_longer_counts_for_the_scale_down_policy() -> None:
    """Up events live for the up policies' longest period (15 s) and their slot is then reused;
    a scale-down policy with a longer period (60 s) only sees the up events still stored."""
    policy = spec(
        minReplicas=1,
        maxReplicas=10,
        targetPerReplica=100,
        behavior={
            "scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]},
            "scaleDown": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            },
        },
    )
    state = history(recommendations=[(1, 10_000)])
    replicas, steps = 1, []
    for second, metric in [(0, 1000), (20, 1000), (30, 100)]:
        d = decide(
            spec=policy,
            reading=Reading(metric=metric),
            current=replicas,
            history=state,
            now=NOW + timedelta(seconds=second),
        )
        steps.append((second, d.desired, d.reason))
        replicas, state = d.desired, d.history
    # t=20: the +2 of t=0 is outdated for the up policy and its slot takes the new +2. At t=30 the
    # down policy counts from 5 - 2 (only the stored up event) = 3, so 5 -> 2; with both up events
    # counted it would have started from 1 and gone to 1.
    assert steps == [
        (0, 3, Reason.SCALE_UP_LIMITED),
        (20, 5, Reason.SCALE_UP_LIMITED),
        (30, 2, Reason.SCALE_DOWN_LIMITED),
    ]
    assert [e.change for e in state.scale_up_events] == [2]


def _no_limits() -> dict[str, object]:
    wide = [{"type": "Percent", "value": 1000, "periodSeconds": 15}]
    return {
        "scaleUp": {"policies": wide},
        "scaleDown": {"stabilizationWindowSeconds": 0, "policies": wide},
    }


# --- a reference model of the 1.34 controller, and random series -------------------------------


@dataclass
class _Event:
    change: int
    at: datetime
    outdated: bool = False


@dataclass
class HpaReference:
    """HorizontalController's state for one HPA, and its reconcile path with behavior set."""

    min_replicas: int
    max_replicas: int
    target: int
    tolerance: float
    up: Rules
    down: Rules
    recommendations: list[tuple[int, datetime]] | None = None
    up_events: list[_Event] = field(default_factory=list)
    down_events: list[_Event] = field(default_factory=list)

    def reconcile(self, current: int, metric: int, now: datetime) -> int:
        if self.recommendations is None:  # recordInitialRecommendation
            self.recommendations = [(current, now)]
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        else:
            ratio = metric / (self.target * current)  # GetExternalPerPodMetricReplicas
            within = (1.0 - self.tolerance) <= ratio <= (1.0 + self.tolerance)
            proposed = current if within else math.ceil(metric / self.target)
            stabilized = self._stabilize(current, proposed, now)
            desired = self._rate(current, stabilized, now)
        if desired != current:
            self._store(current, desired, now)
        return desired

    def _stabilize(self, current: int, desired: int, now: datetime) -> int:
        assert self.recommendations is not None
        up_cutoff = now - timedelta(seconds=self.up.window_seconds)
        down_cutoff = now - timedelta(seconds=self.down.window_seconds)
        up_rec, down_rec, old = desired, desired, None
        for i, (rec, ts) in enumerate(self.recommendations):
            if ts > up_cutoff:
                up_rec = min(rec, up_rec)
            if ts > down_cutoff:
                down_rec = max(rec, down_rec)
            if ts < up_cutoff and ts < down_cutoff:
                old = i
        result = current
        if result < up_rec:
            result = up_rec
        if result > down_rec:
            result = down_rec
        if old is not None:
            self.recommendations[old] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        return result

    def _changed(self, events: list[_Event], period: int, now: datetime) -> int:
        cutoff = now - timedelta(seconds=period)
        return sum(e.change for e in events if e.at > cutoff)

    def _limit(self, current: int, rules: Rules, now: datetime, *, up: bool) -> int:
        if rules.select is SelectPolicy.DISABLED:
            return current
        proposals = []
        for policy in rules.policies:
            start = current - self._changed(self.up_events, policy.period_seconds, now)
            start += self._changed(self.down_events, policy.period_seconds, now)
            if policy.type is PolicyType.PODS:
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        smallest_change = rules.select is SelectPolicy.MIN
        if up:
            return min(proposals) if smallest_change else max(proposals)
        return max(proposals) if smallest_change else min(proposals)

    def _rate(self, current: int, desired: int, now: datetime) -> int:
        if desired > current:
            allowed = min(self.max_replicas, max(self._limit(current, self.up, now, up=True), current))
            return min(desired, allowed)
        if desired < current:
            allowed = max(self.min_replicas, min(self._limit(current, self.down, now, up=False), current))
            return max(desired, allowed)
        return desired

    def _store(self, previous: int, new: int, now: datetime) -> None:
        up = new > previous
        events = self.up_events if up else self.down_events
        rules = self.up if up else self.down
        cutoff = now - timedelta(seconds=max((p.period_seconds for p in rules.policies), default=0))
        slot = None
        for i, event in enumerate(events):
            if event.at < cutoff:
                event.outdated = True
            if event.outdated:
                slot = i
        change = new - previous if up else previous - new
        if slot is None:
            events.append(_Event(change, now))
        else:
            events[slot] = _Event(change, now)


def _random_rules(rng: random.Random, *, window: int) -> dict[str, object]:
    policies = [
        {
            "type": rng.choice(["Pods", "Percent"]),
            "value": rng.choice([1, 2, 4, 10, 50, 100, 200]),
            "periodSeconds": rng.choice([5, 15, 30, 60, 120]),
        }
        for _ in range(rng.randint(1, 3))
    ]
    return {
        "stabilizationWindowSeconds": window,
        "selectPolicy": rng.choice(
            ["Max", "Max", "Min", "Disabled"] if rng.random() < 0.2 else ["Max", "Min"]
        ),
        "policies": policies,
    }


def test_random_series_decide_exactly_as_the_reference_hpa() -> None:
    rng = random.Random(1_34_4)
    diverged = []
    for series in range(2000):
        minimum = rng.randint(1, 3)
        maximum = rng.randint(minimum, 20)
        target = rng.choice([1, 10, 100])
        behavior = {
            "scaleUp": _random_rules(rng, window=rng.choice([0, 0, 10, 30, 60])),
            "scaleDown": _random_rules(rng, window=rng.choice([0, 15, 60, 300])),
        }
        policy = spec(
            minReplicas=minimum,
            maxReplicas=maximum,
            targetPerReplica=target,
            tolerance=0.1,
            behavior=behavior,
        )
        resolved = ResolvedBehavior.of(policy.behavior)
        reference = HpaReference(minimum, maximum, target, 0.1, resolved.up, resolved.down)
        current = rng.randint(1, maximum + 2)  # sometimes above the maximum
        hpa_current, state, now = current, ScalingHistory(), NOW
        for step in range(40):
            now += timedelta(seconds=rng.choice([1, 5, 5, 15, 30, 60]))
            metric = max(0, int(rng.gauss(target * current, target * 3)))
            if rng.random() < 0.1:
                metric = int(target * hpa_current * 1.1)  # right on the tolerance bound
            d = decide(spec=policy, reading=Reading(metric=metric), current=current, history=state, now=now)
            hpa_desired = reference.reconcile(hpa_current, metric, now)
            if d.desired != hpa_desired:
                diverged.append((series, step, current, metric, d.desired, hpa_desired))
                break
            current, hpa_current, state = d.desired, hpa_desired, d.history
    assert diverged == []
