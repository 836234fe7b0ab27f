"""Probe readings as values, and the consumer's persistent-lag exclusion (pure).

The probes (:mod:`.probes`) produce these; :func:`.decision.decide` consumes them. Keeping the
per-partition arithmetic here means the rule "a partition with no commit counts from the log
start offset" and the stuck-partition rule are tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PartitionLag:
    """One partition of the topic as seen by the consumer group."""

    partition: int
    committed: int | None  # None: the group has never committed on this partition
    log_start: int
    log_end: int

    @property
    def lag(self) -> int:
        # No commit: the records a new consumer would still read are those from the log start
        # (auto.offset.reset=earliest, the runtime's setting), not the whole offset range.
        position = self.log_start if self.committed is None else max(self.committed, self.log_start)
        return max(self.log_end - position, 0)


@dataclass(frozen=True)
class Reading:
    """One successful probe: the metric, the natural cap on replicas, and per-partition detail."""

    metric: int
    cap: int | None = None
    partitions: tuple[PartitionLag, ...] = ()
    truncated: bool = False  # the metric was counted up to a bound and may be larger
    oldest_age_seconds: float | None = None  # relay: age of the oldest due row

    @property
    def shown(self) -> str:
        """The metric as people should read it: ``800+`` when counting stopped at 800 (there may be
        7,000), else the number (``status.roles.<role>.lagReading``, the Relay-Lag column)."""
        return f"{self.metric}+" if self.truncated else str(self.metric)


@dataclass(frozen=True)
class EffectiveLag:
    metric: int
    excluded: tuple[int, ...] = ()
    committed: dict[int, int] = field(default_factory=dict)


def effective_lag(
    reading: Reading, *, previous: Mapping[int, int], exclude_persistent: bool, current_replicas: int
) -> EffectiveLag:
    """The lag that drives the decision, leaving out partitions that are stuck.

    A partition is stuck when it has lag and its committed offset equals the one seen at the
    previous poll (KEDA's ``excludePersistentLag``). Only when replicas are running: with no
    consumer nothing can commit, and an unmoved offset says nothing about a poison record.
    A partition with no commit at all is never treated as stuck.
    """
    committed = {p.partition: p.committed for p in reading.partitions if p.committed is not None}
    if not exclude_persistent or current_replicas <= 0 or not reading.partitions:
        return EffectiveLag(metric=reading.metric, committed=committed)
    excluded = tuple(
        p.partition
        for p in reading.partitions
        if p.lag > 0 and p.committed is not None and previous.get(p.partition) == p.committed
    )
    stuck_lag = sum(p.lag for p in reading.partitions if p.partition in excluded)
    return EffectiveLag(metric=max(reading.metric - stuck_lag, 0), excluded=excluded, committed=committed)


def total_lag(partitions: Sequence[PartitionLag]) -> int:
    return sum(p.lag for p in partitions)
