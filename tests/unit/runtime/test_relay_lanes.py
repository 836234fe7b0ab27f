"""The relay's lanes: its leased shards dealt into disjoint groups, one claim-send-mark loop each."""

from __future__ import annotations

import pytest

from smartflow_runtime.outbox.model import lane_groups


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
