"""Leader election's decisions (pure): when a candidate may take the Lease, what it writes, and the
timing rule that keeps two leaders from writing at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smartflow_operator.leadership import (
    LeaseSettings,
    Observed,
    Record,
    acquired_spec,
    may_acquire,
    observe,
    released_spec,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
SETTINGS = LeaseSettings(namespace="ops", identity="b")


def record(holder: str = "a", duration: int = 15, transitions: int = 0) -> Record:
    return Record(holder, duration, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:10.000000Z", transitions)


class TestMayAcquire:
    def test_a_held_lease_is_taken_only_a_full_duration_after_its_last_observed_change(self) -> None:
        seen = observe(None, record(), now=100.0)
        assert not may_acquire(seen, identity="b", now=100.0)
        assert not may_acquire(seen, identity="b", now=114.9)
        assert may_acquire(seen, identity="b", now=115.0)

    def test_the_candidates_own_clock_counts_not_the_holders_timestamps(self) -> None:
        seen = observe(None, record(), now=100.0)
        # The same record seen again later does not restart the wait ...
        assert observe(seen, record(), now=110.0) is seen
        # ... a renewal (a changed record) does.
        renewed = Record("a", 15, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:12.000000Z", 0)
        again = observe(seen, renewed, now=110.0)
        assert again.at == 110.0
        assert not may_acquire(again, identity="b", now=120.0)

    @pytest.mark.parametrize("holder", ["", "b"])
    def test_a_released_lease_or_ones_own_is_taken_at_once(self, holder: str) -> None:
        assert may_acquire(Observed(record(holder=holder), at=100.0), identity="b", now=100.0)


class TestRecords:
    def test_taking_over_counts_a_transition_and_stamps_both_times(self) -> None:
        spec = acquired_spec(record(holder="a", transitions=3), SETTINGS, NOW)
        assert spec == {
            "holderIdentity": "b",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-02T03:04:05.600000Z",
            "renewTime": "2026-01-02T03:04:05.600000Z",
            "leaseTransitions": 4,
        }

    def test_renewing_keeps_the_acquire_time_and_the_transitions(self) -> None:
        spec = acquired_spec(record(holder="b", transitions=4), SETTINGS, NOW)
        assert spec["acquireTime"] == "2026-01-01T00:00:00.000000Z"
        assert spec["renewTime"] == "2026-01-02T03:04:05.600000Z"
        assert spec["leaseTransitions"] == 4

    def test_a_new_lease_starts_at_zero_transitions(self) -> None:
        assert acquired_spec(None, SETTINGS, NOW)["leaseTransitions"] == 0

    def test_a_release_leaves_no_holder_and_a_one_second_duration(self) -> None:
        spec = released_spec(record(holder="b", transitions=4), NOW)
        assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("", 1, 4)
        assert may_acquire(observe(None, Record.of({"spec": spec}), now=0.0), identity="c", now=0.0)


class TestSettings:
    def test_the_defaults_are_client_gos(self) -> None:
        assert (SETTINGS.lease_duration, SETTINGS.renew_deadline, SETTINGS.retry_period) == (15.0, 10.0, 2.0)

    @pytest.mark.parametrize(
        ("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 20, 2), (15, 10, 0)]
    )
    def test_the_leader_must_stop_before_anyone_may_take_over(
        self, duration: float, deadline: float, retry: float
    ) -> None:
        with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
            LeaseSettings(
                namespace="ops",
                identity="b",
                lease_duration=duration,
                renew_deadline=deadline,
                retry_period=retry,
            )


async def test_the_api_client_refuses_every_write_while_not_leading_before_sending_it() -> None:
    from kubernetes import client

    from smartflow_operator.errors import NotLeading
    from smartflow_operator.kube import DEPLOYMENTS, RUNTIMES, KubeClient

    leading = False
    kube = KubeClient(client.ApiClient(), may_write=lambda: leading)
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "ns"}}
    with pytest.raises(NotLeading):
        await kube.apply(manifest)
    with pytest.raises(NotLeading):
        await kube.patch_status(RUNTIMES, "ns", "x", {"observedGeneration": 1})
    with pytest.raises(NotLeading):
        await kube.delete(DEPLOYMENTS, "ns", "x")
    assert kube.writes == 0 and not kube.requests  # nothing was sent
    kube.close()


class _Leases:
    """A Lease store in memory: what ``LeaderElector`` reads and writes through its API client."""

    def __init__(self) -> None:
        self.lease: dict | None = None
        self.writes = 0

    async def get(self, _kind: object, _namespace: str, _name: str) -> dict | None:
        return self.lease

    async def create_in(self, _kind: object, _namespace: str, body: dict) -> dict:
        self.writes += 1
        self.lease = body
        return body

    async def replace(self, _kind: object, _namespace: str, _name: str, body: dict) -> dict:
        self.writes += 1
        self.lease = body
        return body


async def test_a_leader_held_up_past_its_renew_deadline_stops_writing_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    from smartflow_operator.leadership import LeaderElector

    now = [100.0]
    leases = _Leases()
    settings = LeaseSettings(namespace="ops", identity="b", retry_period=0.01)
    elector = LeaderElector(settings, kube=leases, monotonic=lambda: now[0])  # type: ignore[arg-type]
    stopping = asyncio.Event()
    assert await elector.acquire(stopping)
    assert elector.may_write()

    # The first sleep of the renewer "lasts" 12 s: past the 10 s renew deadline, nothing is tried.
    async def held_up() -> None:
        await asyncio.sleep(0)
        now[0] += 12.0

    asyncio.get_running_loop().create_task(held_up())
    await asyncio.wait_for(elector.keep_renewing(stopping), 5)
    assert elector.lost.is_set() and not elector.may_write()
    assert leases.writes == 1  # only the acquisition
    assert "too late for the renew deadline" in caplog.text
