"""The scaling decision, table by table: each concern of issue 5 with the inputs that exercise it."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from smartflow_operator.autoscaling.decision import Reason, decide, metric_limit, recommend
from smartflow_operator.autoscaling.history import ScalingHistory
from smartflow_operator.autoscaling.lag import PartitionLag, Reading

from .conftest import NOW, at, history, spec

NO_WINDOWS = {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}
OLD = [(1, 100_000)]  # a history that has run before (no "new autoscaler" seeding)


# --- HPA equivalence of the recommendation (external metric, AverageValue target) -------------


def hpa_average_value(metric: int, target: int, current: int, tolerance: float) -> int:
    """Kubernetes 1.34's GetExternalPerPodMetricReplicas (replica_calculator.go), written from its
    source for comparison: ``Tolerances.isWithin`` keeps both bounds inside the band."""
    usage_ratio = metric / (target * current)
    if not ((1.0 - tolerance) <= usage_ratio <= (1.0 + tolerance)):
        return math.ceil(metric / target)
    return current


@pytest.mark.parametrize(
    ("metric", "target", "current", "expected"),
    [
        (330, 100, 3, 3),  # a ratio of exactly 1.1 is inside the band (Kubernetes >= 1.33)
        (11, 10, 1, 1),  # the same at one replica: the pre-1.33 abs() form would have said 2
        (270, 100, 3, 3),  # exactly 1 - 0.1: inside too
        (331, 100, 3, 4),
        (320, 100, 3, 3),
        (340, 100, 3, 4),
        (370, 100, 4, 4),
        (350, 100, 4, 4),
        (500, 100, 10, 5),
        (0, 100, 3, 0),
        (1, 100, 1, 1),
        (95_000, 100, 7, 950),
        (19, 10, 2, 2),
        (21, 10, 2, 2),
        (23, 10, 2, 3),
        (3, 1, 3, 3),
        (1000, 7, 50, 143),
    ],
)
def test_recommendation_equals_the_hpa_average_value_formula(
    metric: int, target: int, current: int, expected: int
) -> None:
    policy = spec(targetPerReplica=target, minReplicas=1)
    assert recommend(metric, current=current, spec=policy) == expected
    assert hpa_average_value(metric, target, current, 0.1) == expected


# --- tolerance ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "tolerance", "expected", "reason"),
    [
        (400, 0.1, 4, Reason.STEADY),  # exact
        (430, 0.1, 4, Reason.WITHIN_TOLERANCE),  # +7.5 %: ceil would say 5
        (450, 0.1, 5, Reason.SCALED_UP),  # +12.5 %
        (365, 0.1, 4, Reason.STEADY),  # -8.75 %: ceil says 4 anyway
        (430, 0.0, 5, Reason.SCALED_UP),  # no band
        (550, 0.5, 4, Reason.WITHIN_TOLERANCE),  # +37.5 % inside a wide band
        (250, 0.1, 3, Reason.SCALED_DOWN),
    ],
)
def test_tolerance_band(metric: int, tolerance: float, expected: int, reason: Reason) -> None:
    d = decide(
        spec=spec(tolerance=tolerance, **NO_WINDOWS),
        reading=Reading(metric=metric),
        current=4,
        history=history(recommendations=OLD),
        now=NOW,
    )
    assert (d.desired, d.reason) == (expected, reason)


# --- stabilisation: up at once, down only after the window -------------------------------------


def test_scale_up_is_immediate_and_scale_down_waits_for_the_window() -> None:
    policy = spec(minReplicas=1, maxReplicas=10, targetPerReplica=100)
    state = ScalingHistory()
    replicas = 1
    timeline = []
    for second, metric in [(0, 1000), (15, 1000), (30, 0), (200, 0), (314, 0), (316, 0), (331, 0)]:
        d = decide(
            spec=policy,
            reading=Reading(metric=metric),
            current=replicas,
            history=state,
            now=NOW + timedelta(seconds=second),
        )
        timeline.append((second, d.desired, d.reason))
        replicas, state = d.desired, d.history
    assert timeline == [
        (0, 5, Reason.SCALE_UP_LIMITED),  # 1 -> max(100 %, 4 pods) = 5 in the first 15 s
        (15, 10, Reason.SCALED_UP),  # the +4 event left the 15 s period
        (30, 10, Reason.STABILIZING),  # lag gone, but 10 was recommended within 300 s
        (200, 10, Reason.STABILIZING),
        (314, 10, Reason.STABILIZING),  # the recommendation of 10 at t=15 is still inside
        (316, 1, Reason.SCALED_DOWN),  # window passed: down to min in one step (100 %/15 s)
        (331, 1, Reason.AT_MINIMUM),
    ]


def test_scale_down_follows_the_highest_recommendation_in_the_window() -> None:
    policy = spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    recs = [(8, 50), (6, 30), (3, 10)]
    d = decide(
        spec=policy, reading=Reading(metric=200), current=10, history=history(recommendations=recs), now=NOW
    )
    assert (d.desired, d.reason, d.inputs.recommendation, d.inputs.stabilized) == (
        8,
        Reason.SCALED_DOWN,
        2,
        8,
    )


def test_a_new_autoscaler_does_not_scale_down_before_one_window() -> None:
    """As the HPA: the first poll seeds the window with the current count."""
    policy = spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}})
    first = decide(spec=policy, reading=Reading(metric=0), current=5, history=ScalingHistory(), now=NOW)
    assert (first.desired, first.reason) == (5, Reason.STABILIZING)
    later = decide(
        spec=policy,
        reading=Reading(metric=0),
        current=5,
        history=first.history,
        now=NOW + timedelta(seconds=61),
    )
    assert (later.desired, later.reason) == (1, Reason.SCALED_DOWN)


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    policy = spec(behavior={"scaleUp": {"stabilizationWindowSeconds": 60}})
    d = decide(
        spec=policy,
        reading=Reading(metric=900),
        current=2,
        history=history(recommendations=[(4, 30)]),
        now=NOW,
    )
    assert (d.desired, d.reason) == (4, Reason.SCALED_UP)


# --- rate limits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behavior", "current", "metric", "events", "expected", "reason"),
    [
        ({}, 2, 5000, [], 6, Reason.SCALE_UP_LIMITED),  # max(100 % -> 4, 4 pods -> 6)
        ({}, 8, 5000, [], 16, Reason.SCALE_UP_LIMITED),  # 100 % -> 16
        (
            {},
            8,
            5000,
            [(5, 4)],
            8,
            Reason.SCALE_UP_LIMITED,
        ),  # +4 five seconds ago: the period started at 4, so max(4 + 4, 4 * 2) = 8, no change
        (
            {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
            3,
            5000,
            [],
            4,
            Reason.SCALE_UP_LIMITED,
        ),
        ({"scaleUp": {"selectPolicy": "Disabled"}}, 3, 5000, [], 3, Reason.SCALE_UP_LIMITED),
        (
            {
                "scaleDown": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 25, "periodSeconds": 60}],
                }
            },
            20,
            0,
            [],
            15,
            Reason.SCALE_DOWN_LIMITED,
        ),
        (
            {
                "scaleDown": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}],
                }
            },
            20,
            0,
            [(30, -2)],
            20,
            Reason.SCALE_DOWN_LIMITED,
        ),
    ],
)
def test_rate_limit_policies(
    behavior: dict[str, object],
    current: int,
    metric: int,
    events: list[tuple[float, int]],
    expected: int,
    reason: Reason,
) -> None:
    up = [(ago, c) for ago, c in events if c > 0]
    down = [(ago, -c) for ago, c in events if c < 0]
    d = decide(
        spec=spec(maxReplicas=100, behavior=behavior),
        reading=Reading(metric=metric),
        current=current,
        history=history(recommendations=OLD, up_events=up, down_events=down),
        now=NOW,
    )
    assert (d.desired, d.reason) == (expected, reason)


def test_scale_events_are_recorded_for_the_next_poll() -> None:
    d = decide(
        spec=spec(), reading=Reading(metric=5000), current=2, history=history(recommendations=OLD), now=NOW
    )
    assert d.desired == 6
    assert [(e.at, e.change) for e in d.history.scale_up_events] == [(NOW, 4)]
    assert d.history.scale_down_events == ()
    again = decide(
        spec=spec(),
        reading=Reading(metric=5000),
        current=6,
        history=d.history,
        now=NOW + timedelta(seconds=5),
    )
    # Within the same 15 s period the limit is counted from the period's start (2): max(4, 6) -> 6.
    assert (again.desired, again.reason) == (6, Reason.SCALE_UP_LIMITED)


# --- activation and 0 <-> 1 --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimum", "activation", "current", "metric", "expected", "reason"),
    [
        (0, 10, 0, 5, 0, Reason.IDLE),  # below activation: stay at zero
        (0, 10, 0, 10, 0, Reason.IDLE),  # at activation: still inactive (strictly above activates)
        (0, 10, 0, 11, 1, Reason.ACTIVATED),  # ceil(11 / 100) = 1
        (0, 0, 0, 1, 1, Reason.ACTIVATED),
        (0, 0, 0, 1000, 4, Reason.ACTIVATED),  # from 0: 100 % of 0 is 0, 4 pods allowed
        (0, 0, 0, 0, 0, Reason.IDLE),
        (0, 10, 2, 5, 0, Reason.SCALED_TO_ZERO),  # inactive with min 0 -> zero (no window here)
        (0, 10, 2, 50, 1, Reason.SCALED_DOWN),  # active: normal scaling, ceil(50 / 100)
        (1, 10, 1, 5, 1, Reason.STEADY),  # with min >= 1 activation does not matter
        (2, 0, 0, 0, 2, Reason.BELOW_MINIMUM),  # zero replicas but min 2: back to min at once
    ],
)
def test_activation_governs_zero_and_one(
    minimum: int, activation: int, current: int, metric: int, expected: int, reason: Reason
) -> None:
    d = decide(
        spec=spec(minReplicas=minimum, activationThreshold=activation, **NO_WINDOWS),
        reading=Reading(metric=metric),
        current=current,
        history=history(recommendations=OLD),
        now=NOW,
    )
    assert (d.desired, d.reason) == (expected, reason)


def test_activation_reaches_one_even_with_percent_only_policies() -> None:
    policy = spec(
        minReplicas=0,
        behavior={"scaleUp": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}},
    )
    d = decide(spec=policy, reading=Reading(metric=800), current=0, history=ScalingHistory(), now=NOW)
    assert (d.desired, d.reason) == (1, Reason.ACTIVATED)


def test_scale_to_zero_waits_for_the_down_window_as_a_cooldown() -> None:
    policy = spec(
        minReplicas=0, activationThreshold=0, behavior={"scaleDown": {"stabilizationWindowSeconds": 30}}
    )
    busy = decide(spec=policy, reading=Reading(metric=50), current=1, history=ScalingHistory(), now=NOW)
    assert busy.desired == 1
    idle = decide(
        spec=policy,
        reading=Reading(metric=0),
        current=1,
        history=busy.history,
        now=NOW + timedelta(seconds=10),
    )
    assert (idle.desired, idle.reason) == (1, Reason.STABILIZING)
    cooled = decide(
        spec=policy,
        reading=Reading(metric=0),
        current=1,
        history=idle.history,
        now=NOW + timedelta(seconds=31),
    )
    assert (cooled.desired, cooled.reason) == (0, Reason.SCALED_TO_ZERO)


# --- the natural cap: partitions (consumer) and shards (relay) ---------------------------------


@pytest.mark.parametrize(
    ("minimum", "maximum", "cap", "current", "metric", "expected", "reason", "bounds"),
    [
        (1, 10, 6, 4, 5000, 6, Reason.SCALED_UP, (1, 6)),  # wants 50, 8 allowed by rate, cap 6
        (1, 10, 6, 6, 5000, 6, Reason.AT_MAXIMUM, (1, 6)),
        (1, 4, 32, 2, 5000, 4, Reason.SCALED_UP, (1, 4)),  # max below the shard count
        (1, 10, 6, 8, 5000, 6, Reason.ABOVE_MAXIMUM, (1, 6)),  # partitions went down
        (8, 10, 6, 6, 0, 6, Reason.AT_MINIMUM, (6, 6)),  # the cap wins over minReplicas
        (1, 10, 0, 4, 5000, 8, Reason.SCALE_UP_LIMITED, (1, 10)),  # cap 0 = unknown, not "run none"
        (1, 10, None, 4, 5000, 8, Reason.SCALE_UP_LIMITED, (1, 10)),
    ],
)
def test_partition_and_shard_cap(
    minimum: int,
    maximum: int,
    cap: int | None,
    current: int,
    metric: int,
    expected: int,
    reason: Reason,
    bounds: tuple[int, int],
) -> None:
    d = decide(
        spec=spec(minReplicas=minimum, maxReplicas=maximum, **NO_WINDOWS),
        reading=Reading(metric=metric, cap=cap),
        current=current,
        history=history(recommendations=OLD),
        now=NOW,
    )
    assert (d.desired, d.reason, (d.inputs.lower, d.inputs.upper)) == (expected, reason, bounds)


# --- persistent-lag exclusion ------------------------------------------------------------------

STUCK = PartitionLag(partition=0, committed=10, log_start=0, log_end=1010)  # 1000 behind, not moving
MOVING = PartitionLag(partition=1, committed=50, log_start=0, log_end=160)  # 110 behind, moving
PREVIOUS = {0: 10, 1: 40}


@pytest.mark.parametrize(
    ("exclude", "current", "previous", "expected", "excluded"),
    [
        (True, 2, PREVIOUS, 2, (0,)),  # only the moving partition's 110 counts: ceil(1.1) = 2
        (False, 2, PREVIOUS, 6, ()),  # 1110 -> 12, capped at the 6 partitions... rate: 2 -> 6
        (True, 0, PREVIOUS, 4, ()),  # no consumers: an unmoved offset proves nothing
        (True, 2, {}, 6, ()),  # first poll: nothing to compare with
    ],
)
def test_persistent_lag_exclusion(
    exclude: bool, current: int, previous: dict[int, int], expected: int, excluded: tuple[int, ...]
) -> None:
    reading = Reading(metric=1110, cap=6, partitions=(STUCK, MOVING))
    d = decide(
        spec=spec(minReplicas=0, maxReplicas=10, excludePersistentLag=exclude, **NO_WINDOWS),
        reading=reading,
        current=current,
        history=history(recommendations=OLD, committed_offsets=previous),
        now=NOW,
    )
    assert (d.desired, d.inputs.excluded_partitions) == (expected, excluded)
    assert d.inputs.metric == 1110
    assert d.history.committed_offsets == {0: 10, 1: 50}


# --- probe failure: hold, never zero; fallback after N ------------------------------------------


def test_probe_failure_holds_and_is_never_read_as_zero_lag() -> None:
    policy = spec(minReplicas=0, **NO_WINDOWS)
    state = history(recommendations=OLD)
    for n in range(1, 6):
        d = decide(spec=policy, reading=None, current=7, history=state, now=NOW + timedelta(seconds=n))
        assert (d.desired, d.reason, d.history.consecutive_failures) == (7, Reason.PROBE_FAILED, n)
        assert d.history.recommendations == state.recommendations  # nothing recorded
        state = d.history


def test_fallback_applies_after_the_failure_threshold_and_success_resets() -> None:
    policy = spec(minReplicas=1, maxReplicas=10, fallback={"failureThreshold": 3, "replicas": 4})
    state = history(recommendations=OLD)
    outcomes = []
    current = 2
    for n in range(4):
        d = decide(spec=policy, reading=None, current=current, history=state, now=NOW + timedelta(seconds=n))
        outcomes.append((d.desired, d.reason))
        current, state = d.desired, d.history
    assert outcomes == [
        (2, Reason.PROBE_FAILED),
        (2, Reason.PROBE_FAILED),
        (4, Reason.FALLBACK),
        (4, Reason.FALLBACK),
    ]
    ok = decide(
        spec=policy, reading=Reading(metric=400), current=4, history=state, now=NOW + timedelta(seconds=9)
    )
    assert ok.history.consecutive_failures == 0
    assert ok.reason is Reason.STEADY


def test_fallback_is_kept_within_min_and_max() -> None:
    policy = spec(minReplicas=2, maxReplicas=5, fallback={"failureThreshold": 1, "replicas": 50})
    d = decide(spec=policy, reading=None, current=3, history=ScalingHistory(), now=NOW)
    assert (d.desired, d.reason) == (5, Reason.FALLBACK)


# --- paused and external: hold and write nothing ------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"), [({"paused": True}, Reason.PAUSED), ({"mode": "External"}, Reason.EXTERNAL)]
)
def test_paused_and_external_hold_and_write_no_replicas(fields: dict[str, object], reason: Reason) -> None:
    state = history(recommendations=OLD, consecutive_failures=2)
    for reading in (Reading(metric=100_000), Reading(metric=0), None):
        d = decide(spec=spec(minReplicas=0, **fields), reading=reading, current=3, history=state, now=NOW)
        assert (d.desired, d.reason, d.writes_replicas) == (3, reason, False)
        assert d.history == state


# --- the result carries its inputs; the history survives a restart -----------------------------


def test_decision_carries_reason_and_inputs() -> None:
    d = decide(
        spec=spec(maxReplicas=10),
        reading=Reading(metric=730, cap=32),
        current=3,
        history=history(recommendations=OLD),
        now=NOW,
    )
    # ceil(730 / 100) = 8, but from 3 the default policies allow max(3 * 2, 3 + 4) = 7 now.
    assert (d.desired, d.reason, d.changed, d.writes_replicas) == (7, Reason.SCALE_UP_LIMITED, True, True)
    i = d.inputs
    assert (
        i.current,
        i.metric,
        i.effective_metric,
        i.cap,
        i.lower,
        i.upper,
        i.recommendation,
        i.stabilized,
    ) == (
        3,
        730,
        730,
        32,
        1,
        10,
        8,
        8,
    )


def test_history_round_trips_through_the_status_as_json() -> None:
    policy = spec(minReplicas=0, fallback={"failureThreshold": 5, "replicas": 1})
    d = decide(
        spec=policy,
        reading=Reading(metric=5000, partitions=(MOVING,)),
        current=1,
        history=ScalingHistory(),
        now=NOW,
    )
    stored = json.loads(json.dumps(d.history.to_status()))
    assert ScalingHistory.from_status(stored) == d.history
    assert ScalingHistory.from_status(None) == ScalingHistory()
    assert ScalingHistory.from_status({"recommendations": "garbage"}) == ScalingHistory()


def test_history_forgets_recommendations_no_window_can_see_and_reuses_outdated_event_slots() -> None:
    state = history(recommendations=[(9, 400), (8, 200)], up_events=[(20, 3), (5, 1)])
    d = decide(spec=spec(), reading=Reading(metric=100), current=1, history=state, now=NOW)
    assert [r.replicas for r in d.history.recommendations] == [8, 1]  # 300 s window
    assert [e.change for e in d.history.scale_up_events] == [3, 1]  # no new event: kept as they are
    up = decide(spec=spec(), reading=Reading(metric=300), current=1, history=state, now=NOW)
    assert up.desired == 3
    # The event of 20 s ago is past the longest up period (15 s): the new event takes its slot.
    assert [(e.change, e.outdated) for e in up.history.scale_up_events] == [(2, False), (1, False)]


def test_a_started_history_keeps_its_latest_recommendation_even_past_every_window() -> None:
    state = history(recommendations=[(4, 1000)])
    d = decide(spec=spec(**NO_WINDOWS), reading=Reading(metric=400), current=4, history=state, now=NOW)
    assert d.history.started
    assert [r.replicas for r in d.history.recommendations] == [4]


# --- the relay COUNT bound never changes the decision ------------------------------------------


@pytest.mark.parametrize("current", [0, 1, 3, 10])
def test_counting_past_the_metric_limit_cannot_change_the_decision(current: int) -> None:
    policy = spec(minReplicas=0, maxReplicas=10, targetPerReplica=100, activationThreshold=5, **NO_WINDOWS)
    limit = metric_limit(policy)
    assert limit == 1000
    bounded = decide(
        spec=policy,
        reading=Reading(metric=limit, truncated=True),
        current=current,
        history=history(recommendations=OLD),
        now=NOW,
    )
    for more in (limit + 1, limit * 10, 10**9):
        full = decide(
            spec=policy,
            reading=Reading(metric=more),
            current=current,
            history=history(recommendations=OLD),
            now=NOW,
        )
        assert full.desired == bounded.desired


def test_metric_limit_covers_a_high_activation_threshold() -> None:
    assert (
        metric_limit(spec(targetPerReplica=10, maxReplicas=2, minReplicas=0, activationThreshold=500)) == 501
    )


def test_at_helper_is_consistent() -> None:
    assert at(0) == NOW
