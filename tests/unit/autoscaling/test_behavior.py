"""HPA equivalence of the behavior arithmetic: the cases of the HPA controller's own tests.

Ported from kubernetes ``pkg/controller/podautoscaler/horizontal_test.go``
(``TestScalingWithRules`` and ``TestNormalizeDesiredReplicasWithBehavior``): same inputs, same
replica counts and the same ScalingLimited reason.
"""

from __future__ import annotations

import pytest

from smartflow_operator.autoscaling.behavior import Limit, ResolvedBehavior, limit_rate, stabilize
from smartflow_operator.autoscaling.spec import ScalingBehavior, ScalingRules, SelectPolicy

from .conftest import NOW, history, rules, uniform_events

E3 = uniform_events([1, 5, 9], 120)  # 100 s, 60 s and 20 s ago

# name, current, desired, min, max, up rules, down rules, up events, down events, expected, limit
SCALING_WITH_RULES = [
    ("within range", 5, 7, 3, 8, None, None, [], [], 7, Limit.WITHIN_RANGE),
    ("below min", 3, 1, 2, 8, None, None, [], [], 2, Limit.TOO_FEW),
    ("to zero when min is 0", 1, 0, 0, 10, None, None, [], [], 0, Limit.WITHIN_RANGE),
    ("max below up limit", 20, 1000, 1, 10, None, None, [], [], 10, Limit.TOO_MANY),
    ("more than max", 100, 1000, 100, 150, None, None, [], [], 150, Limit.TOO_MANY),
    (
        "user up percent",
        3,
        1000,
        1,
        2000,
        rules(percent=1, percent_period=60),
        None,
        [],
        [],
        4,
        Limit.SCALE_UP_LIMIT,
    ),
    (
        "user down pods",
        1000,
        3,
        3,
        2000,
        None,
        rules(pods=20, pods_period=60),
        [],
        [],
        980,
        Limit.SCALE_DOWN_LIMIT,
    ),
    ("default up", 10, 50, 1, 1000, None, None, [], [], 20, Limit.SCALE_UP_LIMIT),
    ("up pods > percent", 10, 500, 1, 1000, rules(100, 60, 100, 60), None, [], [], 110, Limit.SCALE_UP_LIMIT),
    ("up percent > pods", 10, 500, 1, 1000, rules(2, 60, 100, 60), None, [], [], 20, Limit.SCALE_UP_LIMIT),
    ("up large pods", 10, 50, 1, 1000, rules(100, 60), None, [], [], 50, Limit.WITHIN_RANGE),
    ("up larger pods", 10, 50, 1, 1000, rules(10000, 60), None, [], [], 50, Limit.WITHIN_RANGE),
    ("up pods limit", 10, 50, 1, 1000, rules(30, 60), None, [], [], 40, Limit.SCALE_UP_LIMIT),
    ("up percent limit", 10, 50, 1, 1000, rules(0, 0, 200, 60), None, [], [], 30, Limit.SCALE_UP_LIMIT),
    (
        "down percent > pods",
        100,
        2,
        1,
        1000,
        None,
        rules(20, 60, 1, 60, 300),
        [],
        [],
        80,
        Limit.SCALE_DOWN_LIMIT,
    ),
    (
        "down pods > percent",
        100,
        2,
        1,
        1000,
        None,
        rules(2, 60, 1, 60, 300),
        [],
        [],
        98,
        Limit.SCALE_DOWN_LIMIT,
    ),
    ("down large pods, min", 10, 0, 1, 1000, None, rules(100, 60, window=300), [], [], 1, Limit.TOO_FEW),
    ("down large percent, min", 10, 2, 5, 1000, None, rules(0, 0, 100, 60, 300), [], [], 5, Limit.TOO_FEW),
    ("down pods limit", 10, 2, 1, 1000, None, rules(5, 60, window=300), [], [], 5, Limit.SCALE_DOWN_LIMIT),
    ("down percent limit", 10, 5, 1, 1000, None, rules(0, 0, 50, 60, 300), [], [], 5, Limit.WITHIN_RANGE),
    ("up max with events, pods", 100, 500, 1, 200, rules(300, 60), None, E3, [], 200, Limit.TOO_MANY),
    (
        "up max with events, percent",
        100,
        500,
        1,
        200,
        rules(0, 0, 10000, 60),
        None,
        E3,
        [],
        200,
        Limit.TOO_MANY,
    ),
    (
        "up blocked by recent events",
        100,
        500,
        1,
        1000,
        rules(5, 120),
        None,
        E3,
        [],
        100,
        Limit.SCALE_UP_LIMIT,
    ),
    ("up pods with events", 100, 500, 1, 1000, rules(150, 120), None, E3, [], 235, Limit.SCALE_UP_LIMIT),
    (
        "up percent with events",
        100,
        500,
        1,
        1000,
        rules(0, 0, 200, 120),
        None,
        E3,
        [],
        255,
        Limit.SCALE_UP_LIMIT,
    ),
    (
        "up percent with up and down events",
        6,
        24,
        1,
        1000,
        rules(0, 0, 300, 300),
        None,
        uniform_events([4], 120),
        uniform_events([2], 120),
        16,
        Limit.SCALE_UP_LIMIT,
    ),
    ("down default with events", 10, 5, 1, 1000, None, None, [], E3, 5, Limit.WITHIN_RANGE),
    (
        "down large pods with events, min",
        100,
        0,
        1,
        1000,
        None,
        rules(115, 120, window=300),
        [],
        E3,
        1,
        Limit.TOO_FEW,
    ),
    (
        "down larger pods with events, min 5",
        100,
        0,
        5,
        1000,
        None,
        rules(130, 120, window=300),
        [],
        E3,
        5,
        Limit.TOO_FEW,
    ),
    (
        "down percent with events, min 5",
        100,
        2,
        5,
        1000,
        None,
        rules(0, 0, 100, 120, 300),
        [],
        E3,
        5,
        Limit.TOO_FEW,
    ),
    (
        "down pods with events",
        100,
        2,
        1,
        1000,
        None,
        rules(5, 120, window=300),
        [],
        E3,
        100,
        Limit.SCALE_DOWN_LIMIT,
    ),
    (
        "down percent with events",
        100,
        0,
        1,
        1000,
        None,
        rules(0, 0, 50, 120, 300),
        [],
        uniform_events([2, 4, 6], 120),
        56,
        Limit.SCALE_DOWN_LIMIT,
    ),
    (
        "down percent with up and down events",
        10,
        1,
        1,
        1000,
        None,
        rules(0, 0, 50, 180, 0),
        uniform_events([2], 120),
        uniform_events([4], 120),
        6,
        Limit.SCALE_DOWN_LIMIT,
    ),
    (
        "down blocked by recent events",
        100,
        0,
        1,
        1000,
        None,
        rules(0, 0, 10, 120, 300),
        [],
        uniform_events([10, 10, 10], 120),
        100,
        Limit.SCALE_DOWN_LIMIT,
    ),
    (
        "down still allowed after events",
        10,
        5,
        1,
        1000,
        None,
        rules(0, 0, 1000, 120, 300),
        [],
        uniform_events([10, 10, 10], 120),
        5,
        Limit.WITHIN_RANGE,
    ),
    (
        "outdated events, one up policy",
        100,
        200,
        1,
        1000,
        rules(1000, 60),
        None,
        uniform_events([8, 12, 9, 11], 120),
        [],
        200,
        Limit.WITHIN_RANGE,
    ),
    (
        "events, two up policies",
        100,
        200,
        1,
        1000,
        rules(1000, 120, 100, 60),
        None,
        uniform_events([8, 12, 9, 11], 120),
        [],
        200,
        Limit.WITHIN_RANGE,
    ),
    (
        "outdated events, two up policies",
        100,
        200,
        1,
        1000,
        rules(1000, 30, 100, 60),
        None,
        uniform_events([8, 12, 9, 11], 120),
        [],
        200,
        Limit.WITHIN_RANGE,
    ),
    (
        "outdated events, one down policy",
        100,
        5,
        1,
        1000,
        None,
        rules(1000, 60, window=300),
        [],
        uniform_events([8, 12, 9, 11], 120),
        5,
        Limit.WITHIN_RANGE,
    ),
    (
        "events, two down policies",
        100,
        5,
        1,
        1000,
        None,
        rules(1000, 120, 100, 60, 300),
        [],
        uniform_events([8, 12, 9, 11], 120),
        5,
        Limit.WITHIN_RANGE,
    ),
    (
        "outdated events, two down policies",
        100,
        5,
        1,
        1000,
        None,
        rules(1000, 30, 100, 60, 300),
        [],
        uniform_events([8, 12, 9, 11], 120),
        5,
        Limit.WITHIN_RANGE,
    ),
]


@pytest.mark.parametrize(
    (
        "current",
        "desired",
        "minimum",
        "maximum",
        "up",
        "down",
        "up_events",
        "down_events",
        "expected",
        "limit",
    ),
    [case[1:] for case in SCALING_WITH_RULES],
    ids=[case[0] for case in SCALING_WITH_RULES],
)
def test_rate_limits_match_the_hpa(
    current: int,
    desired: int,
    minimum: int,
    maximum: int,
    up: ScalingRules | None,
    down: ScalingRules | None,
    up_events: list[tuple[float, int]],
    down_events: list[tuple[float, int]],
    expected: int,
    limit: Limit,
) -> None:
    behavior = ResolvedBehavior.of(
        ScalingBehavior(scale_up=up or ScalingRules(), scale_down=down or ScalingRules())
    )
    result = limit_rate(
        desired,
        current=current,
        lower=minimum,
        upper=maximum,
        history=history(up_events=up_events, down_events=down_events),
        behavior=behavior,
        now=NOW,
    )
    assert result == (expected, limit)


# (name, recommendations as (replicas, seconds ago), current, desired, expected, up window, down window)
STABILIZATION = [
    ("empty, scaling down", [], 100, 5, 5, 0, 0),
    ("scale-down stabilisation", [(4, 120), (5, 60)], 100, 3, 5, 0, 180),
    ("scale-up stabilisation", [(4, 120), (5, 60)], 1, 7, 4, 300, 0),
    ("no scale-down stabilisation", [(1, 120), (2, 60)], 100, 3, 3, 300, 0),
    ("no scale-up stabilisation", [(4, 120), (5, 60)], 1, 3, 3, 0, 300),
    ("old recommendations, down", [(10, 600), (9, 540)], 100, 3, 3, 0, 0),
    ("old recommendations, up", [(10, 600), (9, 540)], 1, 100, 100, 0, 0),
    ("some obsolete, down", [(10, 600), (4, 60), (5, 120), (9, 540)], 100, 3, 5, 0, 180),
    ("some obsolete, up", [(10, 6000), (6, 60), (5, 120), (9, 180)], 1, 100, 5, 300, 0),
    ("no scale-up when the recommendation falls", [(2, 6000), (3, 180)], 2, 1, 2, 300, 300),
    ("no scale-down when the recommendation rises", [(2, 6000), (1, 180)], 2, 3, 2, 300, 300),
]


@pytest.mark.parametrize(
    ("recommendations", "current", "desired", "expected", "up_window", "down_window"),
    [case[1:] for case in STABILIZATION],
    ids=[case[0] for case in STABILIZATION],
)
def test_stabilization_matches_the_hpa(
    recommendations: list[tuple[int, float]],
    current: int,
    desired: int,
    expected: int,
    up_window: int,
    down_window: int,
) -> None:
    behavior = ResolvedBehavior.of(
        ScalingBehavior(
            scale_up=ScalingRules(stabilization_window_seconds=up_window),
            scale_down=ScalingRules(stabilization_window_seconds=down_window),
        )
    )
    stabilized = stabilize(
        desired, current=current, history=history(recommendations=recommendations), behavior=behavior, now=NOW
    )
    assert stabilized == expected


def test_defaults_are_the_hpa_defaults() -> None:
    behavior = ResolvedBehavior.of(ScalingBehavior())
    assert behavior.up.window_seconds == 0
    assert behavior.down.window_seconds == 300
    assert [(p.type.value, p.value, p.period_seconds) for p in behavior.up.policies] == [
        ("Percent", 100, 15),
        ("Pods", 4, 15),
    ]
    assert [(p.type.value, p.value, p.period_seconds) for p in behavior.down.policies] == [
        ("Percent", 100, 15)
    ]


def test_disabled_select_policy_never_changes_the_count() -> None:
    behavior = ResolvedBehavior.of(
        ScalingBehavior(
            scale_up=ScalingRules(select_policy=SelectPolicy.DISABLED),
            scale_down=ScalingRules(select_policy=SelectPolicy.DISABLED),
        )
    )
    common = {"lower": 1, "upper": 100, "history": history(), "behavior": behavior, "now": NOW}
    assert limit_rate(50, current=10, **common) == (10, Limit.SCALE_UP_LIMIT)
    assert limit_rate(2, current=10, **common) == (10, Limit.SCALE_DOWN_LIMIT)


def test_min_select_policy_takes_the_smallest_change() -> None:
    up = rules(2, 60, 100, 60).model_copy(update={"select_policy": SelectPolicy.MIN})
    down = rules(2, 60, 50, 60).model_copy(update={"select_policy": SelectPolicy.MIN})
    behavior = ResolvedBehavior.of(ScalingBehavior(scale_up=up, scale_down=down))
    common = {"lower": 1, "upper": 1000, "history": history(), "behavior": behavior, "now": NOW}
    assert limit_rate(500, current=10, **common) == (12, Limit.SCALE_UP_LIMIT)
    assert limit_rate(1, current=10, **common) == (8, Limit.SCALE_DOWN_LIMIT)
