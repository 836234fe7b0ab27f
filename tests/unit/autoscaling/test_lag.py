"""Per-partition lag arithmetic and the stuck-partition rule, without a broker."""

from __future__ import annotations

import pytest

from smartflow_operator.autoscaling.lag import PartitionLag, Reading, effective_lag, total_lag


@pytest.mark.parametrize(
    ("committed", "log_start", "log_end", "lag"),
    [
        (40, 0, 100, 60),
        (100, 0, 100, 0),
        (None, 0, 100, 100),  # no commit: counts from the log start
        (None, 30, 100, 70),  # ... which is not offset 0 once records were deleted
        (10, 30, 100, 70),  # committed before the log start: the consumer resumes at the start
        (None, 0, 0, 0),  # empty partition
    ],
)
def test_partition_lag(committed: int | None, log_start: int, log_end: int, lag: int) -> None:
    assert PartitionLag(partition=0, committed=committed, log_start=log_start, log_end=log_end).lag == lag


def test_total_lag_sums_partitions() -> None:
    parts = [PartitionLag(p, c, 0, 50) for p, c in enumerate([10, None, 50])]
    assert total_lag(parts) == 40 + 50 + 0


@pytest.mark.parametrize(
    ("previous", "replicas", "metric", "excluded"),
    [
        ({0: 5, 1: 20, 2: 7}, 3, 135 - 95, (0,)),  # p0 did not move while behind: its 95 dropped
        ({0: 5, 1: 20, 2: 7}, 0, 135, ()),  # nobody consumes: no evidence
        ({0: 4, 1: 19, 2: 6}, 3, 135, ()),  # every partition moved
        ({}, 3, 135, ()),  # first poll
        ({0: 5, 1: 20, 2: 7, 3: 0}, 3, 40, (0,)),  # p3 has no commit: never "stuck"
    ],
)
def test_persistent_lag_exclusion(
    previous: dict[int, int], replicas: int, metric: int, excluded: tuple
) -> None:
    parts = (
        PartitionLag(0, committed=5, log_start=0, log_end=100),  # lag 95
        PartitionLag(1, committed=20, log_start=0, log_end=20),  # no lag: unmoved is fine
        PartitionLag(2, committed=8, log_start=0, log_end=18),  # lag 10, moved 7 -> 8
        PartitionLag(3, committed=None, log_start=0, log_end=30),  # lag 30, never committed
    )
    reading = Reading(metric=total_lag(parts), partitions=parts)
    result = effective_lag(reading, previous=previous, exclude_persistent=True, current_replicas=replicas)
    assert reading.metric == 135
    assert (result.metric, result.excluded) == (metric, excluded)
    assert result.committed == {0: 5, 1: 20, 2: 8}


def test_exclusion_off_counts_everything() -> None:
    parts = (PartitionLag(0, committed=5, log_start=0, log_end=100),)
    result = effective_lag(
        Reading(metric=95, partitions=parts), previous={0: 5}, exclude_persistent=False, current_replicas=2
    )
    assert (result.metric, result.excluded) == (95, ())


def test_a_capped_reading_is_shown_as_capped_and_an_uncapped_one_as_the_number() -> None:
    assert Reading(metric=800, truncated=True).shown == "800+"
    assert Reading(metric=800).shown == "800"
    assert Reading(metric=0).shown == "0"
