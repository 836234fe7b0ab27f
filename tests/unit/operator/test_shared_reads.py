"""Shared reads of Secrets/ConfigMaps: one GET per object per max age, shared by concurrent readers
(pure: a recording stand-in for the operator's own KubeClient.get, no apiserver)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from smartflow_operator.errors import KubeError
from smartflow_operator.kube import CONFIG_MAPS, SECRETS, ResourceKind
from smartflow_operator.shared_reads import PresentOrFresh, SharedReads


class RecordingKube:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str, str]] = []
        self.version = 1
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.missing = False

    async def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((kind.kind, namespace, name))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.missing:
            return None
        return {"metadata": {"resourceVersion": str(self.version)}}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reads_with(kube: RecordingKube, clock: Clock, max_age: float = 2.5) -> SharedReads:
    return SharedReads(kube, max_age_seconds=max_age, clock=clock)  # type: ignore[arg-type]


async def test_readers_within_the_max_age_share_one_get_and_an_older_read_is_renewed() -> None:
    kube, clock = RecordingKube(), Clock()
    reads = reads_with(kube, clock)
    for _ in range(1000):  # a thousand runtimes' loops on one Secret
        assert (await reads.get(SECRETS, "ns", "db"))["metadata"]["resourceVersion"] == "1"  # type: ignore[index]
    assert len(kube.gets) == 1
    kube.version, clock.now = 2, clock.now + 2.5
    assert (await reads.get(SECRETS, "ns", "db"))["metadata"]["resourceVersion"] == "2"  # type: ignore[index]
    assert len(kube.gets) == 2


async def test_objects_are_kept_apart_by_kind_namespace_and_name() -> None:
    kube, clock = RecordingKube(), Clock()
    reads = reads_with(kube, clock)
    for kind, namespace, name in [(SECRETS, "a", "db"), (CONFIG_MAPS, "a", "db"), (SECRETS, "b", "db")]:
        await reads.get(kind, namespace, name)
        await reads.get(kind, namespace, name)
    assert kube.gets == [("Secret", "a", "db"), ("ConfigMap", "a", "db"), ("Secret", "b", "db")]


async def test_concurrent_readers_wait_for_the_one_request_in_flight() -> None:
    kube, clock = RecordingKube(), Clock()
    kube.gate = asyncio.Event()
    reads = reads_with(kube, clock)
    readers = [asyncio.create_task(reads.get(SECRETS, "ns", "db")) for _ in range(50)]
    await asyncio.sleep(0.01)
    kube.gate.set()
    assert len({str(found) for found in await asyncio.gather(*readers)}) == 1
    assert len(kube.gets) == 1


async def test_a_failed_read_reaches_every_waiter_and_is_not_kept() -> None:
    kube, clock = RecordingKube(), Clock()
    kube.gate, kube.fail = asyncio.Event(), KubeError("GET: 503")
    reads = reads_with(kube, clock)
    readers = [asyncio.create_task(reads.get(SECRETS, "ns", "db")) for _ in range(3)]
    await asyncio.sleep(0.01)
    kube.gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(result, KubeError) for result in results)
    kube.fail = None
    assert await reads.get(SECRETS, "ns", "db") is not None
    assert len(kube.gets) == 2


async def test_a_cancelled_reader_fails_the_others_retriably_instead_of_cancelling_them() -> None:
    kube, clock = RecordingKube(), Clock()
    kube.gate = asyncio.Event()
    reads = reads_with(kube, clock)
    first = asyncio.create_task(reads.get(SECRETS, "ns", "db"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(reads.get(SECRETS, "ns", "db"))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(KubeError, match="cancelled"):
        await second


async def test_max_age_zero_reads_every_time() -> None:
    kube, clock = RecordingKube(), Clock()
    reads = reads_with(kube, clock, max_age=0.0)
    for _ in range(3):
        await reads.get(SECRETS, "ns", "db")
    assert len(kube.gets) == 3


async def test_a_change_pass_shares_a_present_object_but_reads_an_absence_again() -> None:
    kube, clock = RecordingKube(), Clock()
    reads = reads_with(kube, clock)
    change = PresentOrFresh(reads)
    kube.missing = True
    assert await reads.get(SECRETS, "ns", "db") is None  # a periodic reader saw it missing
    assert await reads.get(SECRETS, "ns", "db") is None
    assert len(kube.gets) == 1
    kube.missing = False  # the user creates the Secret, then the runtime
    assert await change.get(SECRETS, "ns", "db") is not None
    assert len(kube.gets) == 2  # not told "missing" from the older read
    for _ in range(1000):  # a thousand runtimes created on it share that read
        assert await change.get(SECRETS, "ns", "db") is not None
    assert await reads.get(SECRETS, "ns", "db") is not None  # and the periodic readers see it too
    assert len(kube.gets) == 2
