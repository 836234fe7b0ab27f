"""The relay's lanes: its leased shards dealt into disjoint groups, one claim-send-mark loop each."""

from __future__ import annotations

import pytest

from smartflow_runtime.outbox.model import lane_groups, lanes_for_notified, merge_lanes


def test_every_shard_is_in_exactly_one_lane_dealt_round_robin() -> None:
    groups = lane_groups({7, 0, 3, 12, 5, 9, 1}, 3)
    assert groups == [frozenset({0, 5, 12}), frozenset({1, 7}), frozenset({3, 9})]
    assert sorted(s for g in groups for s in g) == [0, 1, 3, 5, 7, 9, 12]


def test_fewer_shards_than_lanes_gives_one_lane_per_shard_and_none_for_no_shards() -> None:
    assert lane_groups({4, 2}, 8) == [frozenset({2}), frozenset({4})]
    assert lane_groups(set(), 4) == []
    assert lane_groups(range(32), 1) == [frozenset(range(32))]


def test_lanes_are_balanced_within_one_shard() -> None:
    sizes = sorted(len(g) for g in lane_groups(range(32), 5))
    assert sizes == [6, 6, 6, 7, 7]


def test_lanes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="lanes must be >= 1"):
        lane_groups({1}, 0)


def test_a_wake_up_runs_one_lane_per_lane_share_of_a_batch_of_notified_rows() -> None:
    assert lanes_for_notified(0, lanes=4, batch_size=500) == 1
    assert lanes_for_notified(3, lanes=4, batch_size=500) == 1
    assert lanes_for_notified(125, lanes=4, batch_size=500) == 1
    assert lanes_for_notified(126, lanes=4, batch_size=500) == 2
    assert lanes_for_notified(10_000, lanes=4, batch_size=500) == 4
    assert lanes_for_notified(5, lanes=4, batch_size=2) == 4
    with pytest.raises(ValueError):
        lanes_for_notified(1, lanes=0, batch_size=500)


def test_merged_lanes_stay_disjoint_and_cover_every_shard() -> None:
    groups = lane_groups(range(32), 4)
    assert merge_lanes(groups, 4) == groups
    (one,) = merge_lanes(groups, 1)
    assert one == frozenset(range(32))
    two = merge_lanes(groups[:3], 2)
    assert two == [groups[0] | groups[2], groups[1]]
    with pytest.raises(ValueError):
        merge_lanes(groups, 0)
