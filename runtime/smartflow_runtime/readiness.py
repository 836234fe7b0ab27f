"""Why a role is not ready right now: which dependency is down, for what reason, since when.

Pure bookkeeping, no I/O. Each service (relay, consumer, memory worker) and the role runner's
own database/schema monitor hold a :class:`DependencyStatus`; their loops call :meth:`down` when
a dependency fails and :meth:`up` when it answers again. The runner merges every
:meth:`DependencyStatus.unready` into ``/readyz`` (see :mod:`smartflow_runtime.admin`).

Being unready is not being dead: a role whose PostgreSQL or Kafka is unreachable keeps running,
keeps retrying, and turns ready again by itself. Only a loop task that ended makes a role exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

DATABASE = "database"
SCHEMA = "schema"
KAFKA = "kafka"
CONSUMER_GROUP = "consumer-group"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Unready:
    """One reason for not being ready: ``dependency`` (``database``, ``schema``, ``kafka``,
    ``consumer-group``) has been failing since ``since`` (aware UTC), last with ``reason``."""

    dependency: str
    reason: str
    since: datetime

    def as_dict(self, now: datetime) -> dict[str, object]:
        return {
            "dependency": self.dependency,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "for_seconds": round(max(0.0, (now - self.since).total_seconds()), 1),
        }


class DependencyStatus:
    """Up/down per dependency; a dependency stays down from its *first* failure until :meth:`up`."""

    def __init__(self, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock
        self._down: dict[str, Unready] = {}

    def down(self, dependency: str, reason: str) -> None:
        """Record a failure; the ``since`` of an ongoing outage is kept, its reason refreshed."""
        previous = self._down.get(dependency)
        since = previous.since if previous is not None else self._clock()
        self._down[dependency] = Unready(dependency, reason, since)

    def up(self, dependency: str) -> None:
        self._down.pop(dependency, None)

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down

    def unready(self) -> tuple[Unready, ...]:
        return tuple(self._down.values())


def merge(reports: Iterable[Unready]) -> tuple[Unready, ...]:
    """One entry per dependency across several reporters: the earliest ``since`` and its reason."""
    merged: dict[str, Unready] = {}
    for item in reports:
        known = merged.get(item.dependency)
        if known is None or item.since < known.since:
            merged[item.dependency] = item
    return tuple(sorted(merged.values(), key=lambda u: (u.since, u.dependency)))
