"""SharedAnswers: the probes' one-read-in-flight, answer-shared-while-fresh helper (no servers)."""

from __future__ import annotations

import asyncio

import pytest

from smartflow_operator.autoscaling import probes
from smartflow_operator.autoscaling.probes import SharedAnswers


class Reads:
    """A read that counts its calls and finishes when released (or fails when told to)."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.calls


async def test_callers_at_once_share_one_read_and_its_answer() -> None:
    shared: SharedAnswers[str, int] = SharedAnswers(60.0)
    read = Reads()
    waiting = [asyncio.create_task(shared.get("topic", read, name="t")) for _ in range(20)]
    await asyncio.sleep(0)
    read.release.set()
    assert await asyncio.gather(*waiting) == [1] * 20
    assert await shared.get("topic", read, name="t") == 1  # still fresh: not read again
    assert read.calls == 1
    assert await shared.get("other", read, name="t") == 2  # another key reads on its own


async def test_a_failed_read_is_not_shared_with_the_next_caller() -> None:
    shared: SharedAnswers[str, int] = SharedAnswers(60.0)
    read = Reads()
    read.fail = TimeoutError("broker gone")
    read.release.set()
    with pytest.raises(TimeoutError):
        await shared.get("topic", read, name="t")
    read.fail = None
    assert await shared.get("topic", read, name="t") == 2
    assert read.calls == 2


async def test_a_caller_that_gives_up_does_not_cancel_the_read_others_wait_for() -> None:
    shared: SharedAnswers[str, int] = SharedAnswers(60.0)
    read = Reads()
    impatient = asyncio.create_task(shared.get("topic", read, name="t"))
    patient = asyncio.create_task(shared.get("topic", read, name="t"))
    await asyncio.sleep(0)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    read.release.set()
    assert await patient == 1
    assert read.calls == 1


async def test_an_answer_is_read_again_once_older_than_its_age_and_expired_keys_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(probes.time, "monotonic", lambda: clock[0])
    shared: SharedAnswers[str, int] = SharedAnswers(1.0)
    read = Reads()
    read.release.set()
    assert await shared.get("retired pair", read, name="t") == 1
    clock[0] += 0.9
    assert await shared.get("retired pair", read, name="t") == 1
    clock[0] += 0.1  # 1.0 s old: too old
    assert await shared.get("current pair", read, name="t") == 2
    assert len(shared) == 1  # the expired answer went when the new read started
    assert await shared.get("retired pair", read, name="t") == 3
