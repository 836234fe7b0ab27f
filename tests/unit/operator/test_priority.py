"""PrioritySlots and the urgent context: a user's change goes ahead of background work (no servers)."""

from __future__ import annotations

import asyncio

import pytest

from smartflow_operator.priority import PrioritySlots, is_urgent, urgent


async def _hold(
    slots: PrioritySlots, order: list[str], name: str, *, release: asyncio.Event, **kw: bool
) -> None:
    async with slots.slot(**kw):
        order.append(name)
        await release.wait()


async def test_a_freed_slot_goes_to_urgent_waiters_first_then_in_arrival_order() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()
    holder = asyncio.create_task(_hold(slots, order, "holder", release=release))
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(_hold(slots, order, name, release=release, urgent=name.startswith("u")))
        for name in ("b1", "b2", "u1", "b3", "u2")
    ]
    await asyncio.sleep(0)
    assert order == ["holder"] and slots.waiting == 5
    release.set()
    await asyncio.gather(holder, *waiters)
    assert order == ["holder", "u1", "u2", "b1", "b2", "b3"]
    assert slots.waiting == 0


async def test_no_more_than_size_hold_a_slot_at_once() -> None:
    slots = PrioritySlots(3)
    holding, most = 0, 0

    async def work() -> None:
        nonlocal holding, most
        async with slots.slot():
            holding += 1
            most = max(most, holding)
            await asyncio.sleep(0.001)
            holding -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert most == 3


async def test_a_cancelled_waiter_gives_up_its_place_and_a_slot_it_was_handed() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []
    release = asyncio.Event()
    release.set()
    held = slots.slot()
    await held.__aenter__()
    gone = asyncio.create_task(_hold(slots, order, "gone", release=release, urgent=True))
    handed = asyncio.create_task(_hold(slots, order, "handed", release=release, urgent=True))
    last = asyncio.create_task(_hold(slots, order, "last", release=release))
    await asyncio.sleep(0)
    gone.cancel()
    await held.__aexit__(None, None, None)  # hands the slot to "handed"...
    handed.cancel()  # ...which is cancelled before it runs, and passes it on
    await last
    for task in (gone, handed):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert order == ["last"]
    async with slots.slot():  # the slot is free again, not lost
        pass


async def test_urgency_is_carried_by_the_context_into_tasks_it_starts() -> None:
    assert not is_urgent()
    with urgent():
        assert is_urgent()
        assert await asyncio.create_task(_urgent_in_task())
    assert not is_urgent()
    assert not await asyncio.create_task(_urgent_in_task())


async def _urgent_in_task() -> bool:
    return is_urgent()


def test_a_pool_of_no_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        PrioritySlots(0)
