"""The consumer group cannot livelock: two consumer processes started together, killed together
and through a broker restart settle within seconds, with a handful of rebalances, never a storm.

The storm of issue 13 came from aiokafka sending one JoinGroup per configured assignment
strategy (see :mod:`smartflow_runtime.outbox.consumer`); with one strategy each rejoin is one
JoinGroup. Each trial counts the assignments the members received (their
``smartflow_consumer_rebalances_total``, read from the logs of every process, killed ones too)
and asserts none happen once the group is quiet. ``make test`` runs 1 trial, ``make chaos`` 5.
"""

from __future__ import annotations

import asyncio
import os

from .harness import Fleet, Servers

TRIALS = 5 if os.environ.get("SMARTFLOW_CHAOS_PROFILE") == "long" else 1
SETTLE_WITHIN = 30.0


async def _settled(fleet: Fleet, names: list[str]) -> float:
    """Until both are ready and no assignment happened for 5 s (a broker restart costs the group
    one more generation a few seconds after the members see the broker again); seconds taken."""
    started = asyncio.get_running_loop().time()
    await fleet.wait_ready(names, within=SETTLE_WITHIN)
    seen, calm_since = fleet.rebalances(), asyncio.get_running_loop().time()
    while asyncio.get_running_loop().time() - calm_since < 5:
        assert asyncio.get_running_loop().time() - started < SETTLE_WITHIN + 30, "the group never settled"
        await asyncio.sleep(0.5)
        if (now_seen := fleet.rebalances()) != seen:
            seen, calm_since = now_seen, asyncio.get_running_loop().time()
    await fleet.wait_ready(names, within=SETTLE_WITHIN)
    return calm_since - started


async def test_the_group_stays_stable_through_simultaneous_starts_kills_and_a_broker_restart(
    servers: Servers, fleet: Fleet
) -> None:
    names = ["consumer-a", "consumer-b"]
    report: list[dict[str, float | int]] = []
    await asyncio.gather(*(fleet.spawn(n, "consumer") for n in names))
    for trial in range(TRIALS):
        before = fleet.rebalances()
        started = await _settled(fleet, names)
        await asyncio.gather(*(fleet.kill(n) for n in names))
        await asyncio.gather(*(fleet.restart(n) for n in names))
        after_kill = await _settled(fleet, names)
        await servers.stop_kafka()
        await servers.start_kafka()
        after_restart = await _settled(fleet, names)
        quiet = fleet.rebalances()
        await asyncio.sleep(8)  # most of a session timeout: a storm would rebalance many times here
        report.append(
            {
                "trial": trial + 1,
                "start_ready_s": round(started, 1),
                "kill_ready_s": round(after_kill, 1),
                "broker_restart_ready_s": round(after_restart, 1),
                "assignments": quiet - before,
                "assignments_when_quiet": fleet.rebalances() - quiet,
            }
        )
        print("group stability", report[-1], flush=True)
        assert fleet.self_exits() == []
        assert report[-1]["assignments_when_quiet"] == 0, report
        # Two members: a start, a kill-and-restart and a broker restart cost a few generations each.
        assert report[-1]["assignments"] <= 24, report
    print(f"group stability: {TRIALS} trials passed: {report}")
