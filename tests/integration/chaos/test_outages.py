"""Every role rides out a PostgreSQL and a broker outage: unready during it, never exiting, ready
again within 10 s after, nothing lost and nothing applied twice (issue 13, "Done when").

Real ``smartflow-runtime run`` processes against the drill's own PostgreSQL and broker, which are
stopped and started again on the same ports. The outages here last ``SMARTFLOW_OUTAGE_SECONDS``
(default 15 s, to keep ``make test`` short); ``make chaos`` holds each for 60 s.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg

from smartflow_runtime.domain import commands

from .harness import Fleet, Load, Servers, drained, now, tally, wait_for

OUTAGE_SECONDS = float(os.environ.get("SMARTFLOW_OUTAGE_SECONDS", "15"))
READY_AGAIN_WITHIN = 10.0
ROLES = [("api", "api"), ("relay", "relay"), ("consumer", "consumer"), ("memory-worker", "memory-worker")]


async def _spawn_all(fleet: Fleet) -> None:
    for name, role in ROLES:
        await fleet.spawn(name, role)
    await fleet.wait_ready(within=90)


async def _unready_naming(fleet: Fleet, names: list[str], dependency: str) -> bool:
    for name in names:
        probe = await fleet.probe(fleet.members[name])
        if probe is None or probe.ready or dependency not in probe.unready_dependencies():
            return False
    return True


async def _hold(fleet: Fleet, seconds: float, *, unready: list[str], dependency: str) -> int:
    """Through the outage: every process alive (``/healthz`` 200), the named ones unready naming
    ``dependency``; returns how many probe rounds confirmed it."""
    rounds = 0
    until = now() + seconds
    while now() < until:
        assert fleet.self_exits() == [], fleet.self_exits()
        for member in fleet.members.values():
            probe = await fleet.probe(member)
            assert probe is not None and probe.alive, f"{member.name} does not answer /healthz"
            if member.name in unready:
                assert not probe.ready and dependency in probe.unready_dependencies(), probe.body
        rounds += 1
        await asyncio.sleep(1.0)
    return rounds


async def _finish(fleet: Fleet, load: Load, load_task: asyncio.Task[None]) -> None:
    load.stop()
    await asyncio.wait_for(load_task, 60)
    await wait_for(lambda: drained(fleet.dsn), what="every event consumed", within=90)
    counted = await tally(fleet.dsn, load)
    print("figures:", counted.as_dict())
    assert load.bad_answers == [], load.bad_answers[:5]
    assert counted.messages_accepted > 0
    assert counted.losses == 0 and counted.duplicates == 0, counted.as_dict()
    assert counted.tokens_counted == counted.tokens_expected
    assert fleet.self_exits() == []


async def test_every_role_rides_out_a_postgres_outage(servers: Servers, fleet: Fleet) -> None:
    await _spawn_all(fleet)
    load = Load(api_url=lambda: fleet.members["api"].http, rate_per_second=8)
    load_task = asyncio.create_task(load.run())
    await wait_for(lambda: _accepted(load, 10), what="first messages accepted", within=30)

    await servers.stop_postgres()
    names = [name for name, _ in ROLES]
    noticed = await wait_for(lambda: _unready_naming(fleet, names, "database"), what="unready", within=10)
    rounds = await _hold(fleet, OUTAGE_SECONDS - noticed, unready=names, dependency="database")
    assert rounds >= 3
    assert load.unavailable > 0, "the api answered the outage with JSON 503s naming the database"

    await servers.start_postgres()
    recovered = await fleet.wait_ready(within=READY_AGAIN_WITHIN)
    print(
        f"postgres outage {OUTAGE_SECONDS:.0f}s: unready after {noticed:.1f}s, ready {recovered:.1f}s after"
    )
    await _finish(fleet, load, load_task)


async def test_kafka_roles_ride_out_a_broker_outage_and_the_others_stay_ready(
    servers: Servers, fleet: Fleet
) -> None:
    await _spawn_all(fleet)
    load = Load(api_url=lambda: fleet.members["api"].http, rate_per_second=8)
    load_task = asyncio.create_task(load.run())
    await wait_for(lambda: _accepted(load, 10), what="first messages accepted", within=30)

    await servers.stop_kafka()
    kafka_roles = ["relay", "consumer"]
    noticed = await wait_for(lambda: _unready_naming(fleet, kafka_roles, "kafka"), what="unready", within=15)
    accepted_before = len(load.accepted)
    await _hold(fleet, OUTAGE_SECONDS - noticed, unready=kafka_roles, dependency="kafka")
    for name in ("api", "memory-worker"):  # they do not use Kafka: an outage there is not theirs
        probe = await fleet.probe(fleet.members[name])
        assert probe is not None and probe.ready, probe
    assert len(load.accepted) > accepted_before, "the api keeps accepting: events wait in the outbox"

    await servers.start_kafka()
    recovered = await fleet.wait_ready(within=READY_AGAIN_WITHIN)
    print(f"broker outage {OUTAGE_SECONDS:.0f}s: unready after {noticed:.1f}s, ready {recovered:.1f}s after")
    await _finish(fleet, load, load_task)


async def test_the_relay_publishes_again_within_seconds_of_a_postgres_restart(
    servers: Servers, fleet: Fleet
) -> None:
    await fleet.spawn("relay", "relay")
    await fleet.wait_ready()
    first = await _post_direct(fleet)
    await wait_for(lambda: _published(fleet.dsn, first), what="first event published", within=15)

    await servers.stop_postgres()
    await servers.start_postgres()
    back = now()
    second = await _post_direct(fleet)
    took = await wait_for(lambda: _published(fleet.dsn, second), what="published after restart", within=10)
    print(f"relay published {now() - back:.2f}s after PostgreSQL came back")
    assert took < 5.0
    await fleet.wait_ready(within=READY_AGAIN_WITHIN)
    assert fleet.self_exits() == []


async def test_a_role_started_while_postgres_is_down_becomes_ready_when_it_comes_up(
    servers: Servers, fleet: Fleet
) -> None:
    await servers.stop_postgres()
    for name, role in ROLES:
        await fleet.spawn(name, role)
    await fleet.wait_alive()
    await asyncio.sleep(2)  # a few monitor rounds
    await _hold(fleet, 5, unready=[name for name, _ in ROLES], dependency="database")
    await servers.start_postgres()
    took = await fleet.wait_ready(within=30)
    print(f"roles started during the outage were ready {took:.1f}s after PostgreSQL came up")
    assert took < READY_AGAIN_WITHIN + 5  # a first connect plus the consumer's first group join
    assert fleet.self_exits() == []


async def _accepted(load: Load, n: int) -> bool:
    return len(load.accepted) >= n


async def _post_direct(fleet: Fleet) -> int:
    """Write one chat message with its events straight into the database (no api in this test)."""
    conn = await asyncpg.connect(fleet.dsn)
    try:
        posted = await commands.post_chat_message(
            conn,
            conversation_id=f"r-{uuid.uuid4().hex[:6]}",
            user_id="r",
            content="hello",
            role="assistant",
            topic=fleet.env["SMARTFLOW_KAFKA_TOPIC"],
        )
    finally:
        await conn.close()
    return posted.outbox_ids[0]


async def _published(dsn: str, outbox_id: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval("SELECT status = 'published' FROM outbox_events WHERE id = $1", outbox_id)
        )
    finally:
        await conn.close()
