"""Leader election with a ``coordination.k8s.io/v1`` Lease: which of the operator's replicas may
write. Called by ``runner.serve``, which runs kopf and every per-runtime loop only while this
process leads (a follower is alive, not ready, and runs nothing that writes).

The algorithm is client-go's ``leaderelection`` (what controller-runtime and KEDA use):

- a candidate reads the Lease every ``retry_period``; it takes the Lease when nobody holds it,
  when the holder released it, or when the record has not changed for ``lease_duration`` by the
  candidate's *own* clock (the time it observed the last change, never the holder's timestamps,
  so clock skew between nodes does not matter);
- the leader renews every ``retry_period``; when no renewal succeeded for ``renew_deadline``
  (< ``lease_duration``) it stops leading: :meth:`LeaderElector.may_write` turns False at that
  moment, the operator's API client refuses every write from then on (``KubeClient`` write
  guard), and kopf and the loops are stopped. A candidate can only take over ``lease_duration``
  after the last renewal it saw, so the two never write at the same time;
- on SIGTERM the leader refuses every further write (``may_write`` turns False before anything
  else) and releases the Lease (empty holder, duration 1 s), so a candidate takes over at its next
  retry instead of after a full lease duration; kopf and the loops then stop.

Writes use ``update`` with the read's ``resourceVersion`` (optimistic concurrency): of two
candidates racing for an expired Lease, one gets 409 Conflict and stays a follower.

The decisions (:func:`observe`, :func:`may_acquire`, the record builders) are pure; clocks are
passed in. :class:`LeaderElector` is the thin I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .errors import Conflict, KubeError
from .kube import LEASES, KubeClient
from .names import LEASE_NAME

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = LEASE_NAME
DEFAULT_LEASE_DURATION_SECONDS = 15.0
DEFAULT_RENEW_DEADLINE_SECONDS = 10.0
DEFAULT_RETRY_PERIOD_SECONDS = 2.0


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = DEFAULT_LEASE_NAME
    lease_duration: float = DEFAULT_LEASE_DURATION_SECONDS
    renew_deadline: float = DEFAULT_RENEW_DEADLINE_SECONDS
    retry_period: float = DEFAULT_RETRY_PERIOD_SECONDS

    def __post_init__(self) -> None:
        # client-go's own checks: the leader must give up before anyone may take over.
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} / {self.renew_deadline} / {self.retry_period} s"
            )


@dataclass(frozen=True)
class Record:
    """The part of a Lease's spec that leader election reads and writes."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


@dataclass(frozen=True)
class Observed:
    """The last record a candidate saw change, and when (its own monotonic clock)."""

    record: Record
    at: float


def observe(previous: Observed | None, record: Record, now: float) -> Observed:
    """Keep the observation time while the record is unchanged (``observedTime`` of client-go)."""
    if previous is not None and previous.record == record:
        return previous
    return Observed(record, now)


def may_acquire(observed: Observed, *, identity: str, now: float) -> bool:
    """Whether ``identity`` may write the Lease now: it holds it, nobody does, or it expired."""
    record = observed.record
    if record.holder in ("", identity):
        return True
    return now >= observed.at + record.duration_seconds


def micro_time(moment: datetime) -> str:
    """A Kubernetes ``MicroTime``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def acquired_spec(previous: Record | None, settings: LeaseSettings, now: datetime) -> dict[str, Any]:
    """The Lease spec after ``settings.identity`` takes or renews it."""
    stamp = micro_time(now)
    renewing = previous is not None and previous.holder == settings.identity
    transitions = 0 if previous is None else previous.transitions + (0 if renewing else 1)
    return {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": max(1, round(settings.lease_duration)),
        "acquireTime": previous.acquire_time if renewing and previous is not None else stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(previous: Record, now: datetime) -> dict[str, Any]:
    """The Lease spec a leader leaves on shutdown: no holder, so a candidate takes it at once."""
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": previous.acquire_time,
        "renewTime": micro_time(now),
        "leaseTransitions": previous.transitions,
    }


WallClock = Callable[[], datetime]
Monotonic = Callable[[], float]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Acquires, renews and releases the operator's Lease with its own API client."""

    def __init__(
        self,
        settings: LeaseSettings,
        *,
        kube: KubeClient,
        wall_clock: WallClock = _utc_now,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self._wall = wall_clock
        self._monotonic = monotonic
        self._observed: Observed | None = None
        self._lease: dict[str, Any] | None = None  # as last read or written
        self._renewed_at: float | None = None  # monotonic start of the last successful write
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    @property
    def identity(self) -> str:
        return self.settings.identity

    def may_write(self) -> bool:
        """True while this process leads and its last renewal is younger than the renew deadline:
        the guard of every write the operator makes."""
        renewed = self._renewed_at
        return (
            self.leading.is_set()
            and renewed is not None
            and self._monotonic() < renewed + self.settings.renew_deadline
        )

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: read the Lease and write it when allowed. Never raises ``KubeError``."""
        started = self._monotonic()
        try:
            lease = await self.kube.get(LEASES, self.settings.namespace, self.settings.name)
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                    "spec": acquired_spec(None, self.settings, self._wall()),
                }
                self._lease = await self.kube.create_in(LEASES, self.settings.namespace, body)
            else:
                record = Record.of(lease)
                self._observed = observe(self._observed, record, started)
                if not may_acquire(self._observed, identity=self.identity, now=started):
                    self._lease = lease
                    return False
                updated = {
                    **lease,
                    "spec": {
                        **(lease.get("spec") or {}),
                        **acquired_spec(record, self.settings, self._wall()),
                    },
                }
                self._lease = await self.kube.replace(
                    LEASES, self.settings.namespace, self.settings.name, updated
                )
        except Conflict:
            log.info("leader election: lease %s changed under this write; reading again", self.settings.name)
            return False  # another candidate wrote first: read again next time
        except KubeError as error:
            log.warning(
                "leader election: lease %s/%s: %s", self.settings.namespace, self.settings.name, error
            )
            return False
        self._observed = observe(self._observed, Record.of(self._lease), started)
        self._renewed_at = started
        return True

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this process leads (True) or ``stopping`` is set (False)."""
        log.info(
            "leader election: waiting for lease %s/%s as %s",
            self.settings.namespace,
            self.settings.name,
            self.identity,
        )
        while not stopping.is_set():
            if await self.try_acquire_or_renew():
                self.lost.clear()
                self.leading.set()
                log.info("leader election: %s leads", self.identity)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.retry_period)
        return False

    async def keep_renewing(self, stopping: asyncio.Event) -> None:
        """While leading: renew every retry period; return when ``stopping`` is set or when no
        renewal succeeded within the renew deadline (then ``lost`` is set and writes are refused)."""
        while not stopping.is_set():
            slept = self._monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.settings.retry_period)
            if stopping.is_set():
                return
            woke = self._monotonic()
            renewed = self._renewed_at or 0.0
            remaining = renewed + self.settings.renew_deadline - woke
            ok = False
            if remaining <= 0:
                # Nothing was even tried: the process did not run for a while (a blocked event
                # loop, a CPU-starved or stopped process). Said so, or the loss looks unexplained.
                log.warning(
                    "leader election: renewal due after %.1f s ran after %.1f s: too late for the "
                    "renew deadline (the process or its event loop was held up)",
                    self.settings.retry_period,
                    woke - slept,
                )
            else:
                try:
                    ok = await asyncio.wait_for(self.try_acquire_or_renew(), remaining)
                except TimeoutError:
                    log.warning(
                        "leader election: renewal unfinished in the %.1f s left before the renew deadline",
                        remaining,
                    )
            if not ok and not self.may_write():
                self.leading.clear()
                self.lost.set()
                log.error(
                    "leader election: %s lost the lease (no renewal within %.0f s)",
                    self.identity,
                    self.settings.renew_deadline,
                )
                return

    async def release(self) -> None:
        """Give the Lease up (shutdown): only if this process still holds it.

        A renewal may have changed the Lease since our last read (its write was in flight when
        SIGTERM came): on a conflict the Lease is read again and, if it is still ours, released
        from the fresh copy, within one retry period in all."""
        was_leading = self.leading.is_set()
        self.leading.clear()
        lease = self._lease
        if not was_leading or lease is None or Record.of(lease).holder != self.identity:
            return

        async def give_up(current: Mapping[str, Any]) -> bool:
            while True:
                released = released_spec(Record.of(current), self._wall())
                updated = {**current, "spec": {**(current.get("spec") or {}), **released}}
                try:
                    await self.kube.replace(LEASES, self.settings.namespace, self.settings.name, updated)
                    return True
                except Conflict:
                    fresh = await self.kube.get(LEASES, self.settings.namespace, self.settings.name)
                    if fresh is None or Record.of(fresh).holder != self.identity:
                        return False  # someone else holds it already: nothing of ours to give up
                    current = fresh

        try:
            if await asyncio.wait_for(give_up(lease), self.settings.retry_period):
                log.info("leader election: %s released the lease", self.identity)
        except (KubeError, TimeoutError) as error:
            log.warning("leader election: could not release the lease: %s", error)
