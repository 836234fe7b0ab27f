"""The fault drill: a fleet under load through SIGKILLs, PostgreSQL and broker outages and restarts.

1 api, relays, 2 consumers and 1 memory worker (real processes) against the drill's own
PostgreSQL and broker, with chat messages posted through the api (each with an Idempotency-Key,
retried on 503s). The schedule kills relays and consumers (singly and together, and starts them
again together), holds PostgreSQL and then the broker stopped, and restarts both once more. The
harness restarts only what it killed, so any other exit is a self-exit. Then it waits for the
outbox to drain and asserts, as figures: events accepted, effects per business table, 0
duplicates, 0 losses, 0 self-exits, the time to drain after the last fault, and the consumer
group's rebalances (no storm).

``make test`` runs the short profile (outages of 8 s, no final restarts, about 2 minutes);
``make chaos`` sets ``SMARTFLOW_CHAOS_PROFILE=long`` (60 s outages, three kill rounds, a
PostgreSQL and a broker restart at the end; a few minutes). Both write the figures to
``.local/chaos/``. "Held" outage figures are the seconds the server was unreachable: the hold
plus its start-up (a broker takes about 20 s to start on this machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from smartflow_devstack.versions import REPO_ROOT

from .harness import Fleet, Load, Servers, drained, now, tally, wait_for


@dataclass(frozen=True)
class Profile:
    name: str
    outage_seconds: float
    relays: int
    load_per_second: float
    kill_rounds: int
    settle_seconds: float
    restarts: bool  # a PostgreSQL and a broker restart at the end (a broker start takes ~20 s here)


PROFILES = {
    "short": Profile(
        "short",
        outage_seconds=8,
        relays=2,
        load_per_second=12,
        kill_rounds=1,
        settle_seconds=2,
        restarts=False,
    ),
    "long": Profile(
        "long",
        outage_seconds=60,
        relays=3,
        load_per_second=25,
        kill_rounds=3,
        settle_seconds=5,
        restarts=True,
    ),
}


class Timeline:
    def __init__(self) -> None:
        self.started = now()
        self.entries: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        at = now() - self.started
        self.entries.append((round(at, 1), what))
        print(f"[{at:6.1f}s] {what}", flush=True)


async def _kill_and_restart(
    fleet: Fleet, names: list[str], timeline: Timeline, *, pause: float = 2.0
) -> None:
    """SIGKILL ``names`` together, wait, start them again together, and wait until they are ready."""
    await asyncio.gather(*(fleet.kill(n) for n in names))
    timeline.mark(f"killed {', '.join(names)}")
    await asyncio.sleep(pause)
    await asyncio.gather(*(fleet.restart(n) for n in names))
    took = await fleet.wait_ready(names, within=60)
    timeline.mark(f"restarted {', '.join(names)}, ready after {took:.1f}s")


async def _outage(
    fleet: Fleet,
    timeline: Timeline,
    what: str,
    stop: Callable[[], Awaitable[None]],
    start: Callable[[], Awaitable[None]],
    hold: float,
    unready: list[str],
) -> dict[str, float]:
    """Stop a server for ``hold`` seconds; the named roles must turn unready naming it, every
    process must stay alive, and all must be ready again within 10 s after it is back."""
    await stop()
    timeline.mark(f"{what} stopped")
    stopped = now()
    unready_seen: set[str] = set()
    while now() - stopped < hold:
        for name in unready:
            probe = await fleet.probe(fleet.members[name])
            assert probe is not None and probe.alive, (
                f"{name} does not answer /healthz during the {what} outage"
            )
            if not probe.ready and what in probe.unready_dependencies():
                unready_seen.add(name)
        await asyncio.sleep(1.0)
    assert unready_seen == set(unready), (
        f"unready during the {what} outage: {sorted(unready_seen)} of {unready}"
    )
    await start()
    back = now()
    timeline.mark(f"{what} back after {back - stopped:.0f}s")
    took = await fleet.wait_ready(within=10)
    timeline.mark(f"every role ready {took:.1f}s after {what} came back")
    return {"held_seconds": round(back - stopped, 1), "ready_again_seconds": round(took, 1)}


async def run_drill(servers: Servers, fleet: Fleet, profile: Profile) -> dict[str, object]:
    timeline = Timeline()
    relays = [f"relay-{i}" for i in range(profile.relays)]
    consumers = ["consumer-0", "consumer-1"]
    await fleet.spawn("api", "api")
    await fleet.spawn("memory-worker", "memory-worker")
    for name in relays:
        await fleet.spawn(name, "relay")
    await asyncio.gather(*(fleet.spawn(name, "consumer") for name in consumers))  # a simultaneous start
    await fleet.wait_ready(within=90)
    timeline.mark("fleet ready")

    load = Load(api_url=lambda: fleet.members["api"].http, rate_per_second=profile.load_per_second)
    load_task = asyncio.create_task(load.run())
    await asyncio.sleep(profile.settle_seconds)
    every_role = ["api", "memory-worker", *relays, *consumers]
    outages: dict[str, dict[str, float]] = {}

    for round_ in range(profile.kill_rounds):
        await _kill_and_restart(fleet, [relays[round_ % len(relays)]], timeline)
        await _kill_and_restart(fleet, [consumers[round_ % 2]], timeline)
        await asyncio.sleep(profile.settle_seconds)
    outages["database"] = await _outage(
        fleet,
        timeline,
        "database",
        servers.stop_postgres,
        servers.start_postgres,
        profile.outage_seconds,
        every_role,
    )
    await asyncio.sleep(profile.settle_seconds)
    await _kill_and_restart(fleet, [relays[-1], consumers[0]], timeline)
    outages["kafka"] = await _outage(
        fleet,
        timeline,
        "kafka",
        servers.stop_kafka,
        servers.start_kafka,
        profile.outage_seconds,
        [*relays, *consumers],
    )
    await asyncio.sleep(profile.settle_seconds)
    await _kill_and_restart(fleet, consumers, timeline)  # both consumers die and start again together
    if profile.restarts:
        outages["database restart"] = await _outage(
            fleet, timeline, "database", servers.stop_postgres, servers.start_postgres, 0.0, []
        )
        outages["kafka restart"] = await _outage(
            fleet, timeline, "kafka", servers.stop_kafka, servers.start_kafka, 0.0, []
        )
    last_fault = now()
    rebalances_at_last_fault = fleet.rebalances()

    await asyncio.sleep(profile.settle_seconds)
    load.stop()
    await asyncio.wait_for(load_task, 120)
    timeline.mark(f"load stopped: {len(load.accepted)} messages accepted")
    drain = await wait_for(lambda: drained(fleet.dsn), what="the outbox drained", within=180)
    drain_after_fault = now() - last_fault
    timeline.mark(f"drained {drain_after_fault:.1f}s after the last fault")
    quiet_from = fleet.rebalances()
    await asyncio.sleep(5)
    counted = await tally(fleet.dsn, load)
    figures: dict[str, object] = {
        "profile": profile.name,
        **counted.as_dict(),
        "token_usage_matches": counted.tokens_counted == counted.tokens_expected,
        "self_exits": fleet.self_exits(),
        "kills": fleet.kills,
        "outages": outages,
        "drain_seconds_after_last_fault": round(drain_after_fault, 1),
        "drain_seconds_after_load": round(drain, 1),
        "api": {
            "attempts": load.attempts,
            "json_503_database": load.unavailable,
            "connection_errors": load.connection_errors,
            "idempotent_replays": load.replayed,
            "bad_answers": load.bad_answers[:5],
        },
        "consumer_rebalances_total": fleet.rebalances(),
        "consumer_rebalances_after_last_fault": fleet.rebalances() - rebalances_at_last_fault,
        "consumer_rebalances_when_quiet": fleet.rebalances() - quiet_from,
        "timeline": timeline.entries,
    }
    return figures


async def test_fault_drill(servers: Servers, fleet: Fleet) -> None:
    profile = PROFILES[os.environ.get("SMARTFLOW_CHAOS_PROFILE", "short")]
    figures = await run_drill(servers, fleet, profile)
    out = REPO_ROOT / ".local" / "chaos"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"drill-{profile.name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "timeline"}, indent=2))
    print(f"figures written to {Path(path).relative_to(REPO_ROOT)}")
    assert figures["messages_accepted"] and figures["events_accepted"] == 3 * figures["messages_accepted"]  # type: ignore[operator]
    assert figures["losses"] == 0, figures
    assert figures["duplicates"] == 0, figures
    assert figures["token_usage_matches"], figures
    assert figures["self_exits"] == [], figures
    assert figures["api"]["bad_answers"] == [], figures  # type: ignore[index]
    # Each kill, restart and outage costs the group a few generations; a storm costs hundreds.
    assert figures["consumer_rebalances_when_quiet"] == 0, figures
    assert figures["consumer_rebalances_total"] <= 20 * (fleet.kills + 6), figures  # type: ignore[operator]
