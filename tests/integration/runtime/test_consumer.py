"""The consumer against real PostgreSQL and Kafka: effects exactly once under redelivery and group
replay, poison events go dead without blocking their partition, bad messages go dead with a reason."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry

from smartflow_runtime.domain import commands, queries
from smartflow_runtime.errors import HandlerError
from smartflow_runtime.handlers import HandlerDependencies, HandlerRegistry, build_registry
from smartflow_runtime.memory.worker import MemoryWorker
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.consumer import Consumer
from smartflow_runtime.outbox.model import BackoffPolicy, NewEvent
from smartflow_runtime.outbox.relay import Relay
from smartflow_runtime.outbox.store import utcnow

from .conftest import PARTITIONS, read_topic, sample, status_counts, wait_until

FAST = BackoffPolicy(0.05, 0.2)


def registry() -> HandlerRegistry:
    return build_registry(HandlerDependencies(clock=utcnow))


def make_consumer(
    pool: Any,
    bootstrap_servers: str,
    topic: str,
    group: str,
    reg: HandlerRegistry | None = None,
    backoff: BackoffPolicy = FAST,
    commit_interval_seconds: float = 0.1,
) -> Consumer:
    return Consumer(
        pool=pool,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        group_id=group,
        registry=reg or registry(),
        metrics=RuntimeMetrics(CollectorRegistry()),
        backoff=backoff,
        poll_timeout_ms=200,
        consumer_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        commit_interval_seconds=commit_interval_seconds,
    )


@asynccontextmanager
async def pipeline(
    pool: Any,
    bootstrap_servers: str,
    topic: str,
    group: str,
    reg: HandlerRegistry | None = None,
    backoff: BackoffPolicy = FAST,
) -> AsyncIterator[tuple[Relay, Consumer]]:
    relay = Relay(
        pool=pool,
        bootstrap_servers=bootstrap_servers,
        metrics=RuntimeMetrics(CollectorRegistry()),
        lease_seconds=2.0,
        poll_interval_seconds=0.2,
        backoff=FAST,
    )
    consumer = make_consumer(pool, bootstrap_servers, topic, group, reg, backoff)
    async with relay, consumer:
        yield relay, consumer


async def all_consumed(pool: Any, expected: int) -> bool:
    return (await status_counts(pool)).get("consumed", 0) == expected


async def test_chat_message_flows_through_every_role_into_the_read_model(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    async with pool.acquire() as conn:
        posted = await commands.post_chat_message(
            conn,
            conversation_id="conv-1",
            user_id="ada",
            content="My name is Ada. I prefer meetings after 10am. Remember that Friday is busy.",
            topic=topic,
        )
        await commands.post_chat_message(
            conn, conversation_id="conv-1", user_id="ada", content="ok", role="assistant", topic=topic
        )
        await commands.record_agent_step(
            conn, conversation_id="conv-1", agent_id="planner", seq=1, kind="plan", content={"s": 1},
            state={"step": 1}, topic=topic,
        )  # fmt: skip
        await commands.record_agent_step(
            conn, conversation_id="conv-1", agent_id="planner", seq=2, kind="act", content={"s": 2},
            state={"step": 2}, topic=topic,
        )  # fmt: skip
        await commands.promote_task_urgency(
            conn, task_id="task-9", user_id="ada", urgency=80, reason="deadline", topic=topic
        )
    worker = MemoryWorker(
        pool=pool, metrics=RuntimeMetrics(CollectorRegistry()), lease_seconds=5, poll_interval_seconds=0.2
    )
    async with pipeline(pool, bootstrap_servers, topic, f"g-{unique_name}"), worker:
        await wait_until(lambda: all_consumed(pool, 10), within=30, what="10 events consumed")

        async def facts_stored() -> bool:
            async with pool.acquire() as conn:
                return len(await queries.memory_facts(conn, "ada")) == 3

        await wait_until(facts_stored, within=15, what="memory facts")
        assert worker.is_healthy()
    async with pool.acquire() as conn:
        history = await queries.conversation_history(conn, "conv-1")
        assert (history[0].role, history[0].message_id) == ("user", posted.message_id)
        assert [m.role for m in history] == ["user", "assistant"]
        usage = await queries.token_usage(conn, "ada")
        assert [(u.conversation_id, u.tokens, u.adjustments) for u in usage] == [
            ("conv-1", posted.tokens + 1, 2)
        ]
        timeline = await queries.agent_timeline(conn, "conv-1")
        assert [(e.seq, e.kind, e.content) for e in timeline] == [(1, "plan", {"s": 1}), (2, "act", {"s": 2})]
        state = await queries.agent_state(conn, "conv-1")
        assert state is not None and (state.version, state.state) == (2, {"step": 2})
        urgency = await queries.task_urgency(conn, "task-9")
        assert urgency is not None and urgency.urgency == 80
        facts = [f.fact for f in await queries.memory_facts(conn, "ada")]
        assert facts == [
            "identity: Ada",
            "preference: meetings after 10am",
            "reminder: Friday is busy",
        ]
        assert json.dumps(history[0].as_dict())  # JSON-ready for the api role


async def test_redelivery_and_replayed_group_have_no_second_effect(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    async with pool.acquire() as conn:
        for i in range(12):
            await commands.post_chat_message(
                conn, conversation_id=f"c{i % 4}", user_id="u", content="x" * 8, role="assistant", topic=topic
            )
    group = f"g-{unique_name}"
    async with pipeline(pool, bootstrap_servers, topic, group) as (_, consumer):
        await wait_until(lambda: all_consumed(pool, 24), within=30, what="24 events consumed")
        before = await token_totals(pool)
        assert before == {f"c{i}": 6 for i in range(4)}  # 3 messages x 2 tokens
        # Redeliver: the same Kafka messages once more, as a producer retry or a lost commit would.
        messages = await read_topic(bootstrap_servers, topic, expect=24)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
        await producer.start()
        try:
            for m in messages:
                await producer.send_and_wait(topic, m.envelope.encode(), key=m.key.encode())
        finally:
            await producer.stop()

        async def redelivered_skipped() -> bool:
            return (
                sample(consumer._metrics, "smartflow_outbox_events_skipped_total", {"reason": "already_done"})
                == 24
            )

        await wait_until(redelivered_skipped, within=20, what="redeliveries skipped")
        assert await token_totals(pool) == before
    # The group committed everything and left: Kafka shows no members and no lag.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        assert sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic) == 48
    finally:
        await admin.close()
    # Replay the whole topic with a new group from the earliest offset: 48 messages, no effect.
    replay = make_consumer(pool, bootstrap_servers, topic, f"{group}-replay")
    async with replay:

        async def replayed() -> bool:
            return (
                sample(replay._metrics, "smartflow_outbox_events_skipped_total", {"reason": "already_done"})
                == 48
            )

        await wait_until(replayed, within=20, what="replayed group skipped everything")
    assert await token_totals(pool) == before
    assert (
        sample(
            replay._metrics,
            "smartflow_outbox_events_consumed_total",
            {"event_type": "chat.token.usage.adjust.requested"},
        )
        == 0
    )


async def token_totals(pool: Any) -> dict[str, int]:
    rows = await pool.fetch("SELECT conversation_id, tokens FROM token_usage WHERE user_id = 'u'")
    return {r["conversation_id"]: r["tokens"] for r in rows}


async def test_poison_event_goes_dead_without_blocking_its_partition_and_replay_brings_it_back(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    broken = {"on": True}
    effects: list[str] = []
    reg = registry()

    async def flaky(conn: Any, row: Any) -> None:
        if broken["on"]:
            raise HandlerError("downstream unavailable")
        effects.append(row.payload["name"])

    reg.register("test.flaky", flaky)
    key = "conv-poison"
    async with pool.acquire() as conn:
        poison = await store.publish(
            conn,
            NewEvent(event_type="test.flaky", aggregate_id=key, message_key=key, topic=topic,
                     payload={"name": "poison"}, max_attempts=3),
        )  # fmt: skip
        for _ in range(20):  # same key -> same partition, all after the poison event
            await commands.post_chat_message(
                conn, conversation_id=key, user_id="p", content="abcd", role="assistant", topic=topic
            )
    # Handler retries wait 1 s each, so the poison event is still being retried when the events
    # behind it on its partition are done: it is not retried in place.
    slow_retry = BackoffPolicy(1.0, 1.0)
    async with pipeline(pool, bootstrap_servers, topic, f"g-{unique_name}", reg, slow_retry) as (_, consumer):
        await wait_until(lambda: all_consumed(pool, 40), within=20, what="the 40 events behind the poison")
        row = await pool.fetchrow("SELECT status, attempts FROM outbox_events WHERE id = $1", poison)
        assert row["status"] != "dead" and row["attempts"] >= 1

        async def poison_dead() -> bool:
            return (await status_counts(pool)).get("dead", 0) == 1

        await wait_until(poison_dead, within=20, what="the poison event dead")
        row = await pool.fetchrow(
            "SELECT status, attempts, last_error FROM outbox_events WHERE id = $1", poison
        )
        assert (row["status"], row["attempts"]) == ("dead", 3)
        assert row["last_error"] == "HandlerError: downstream unavailable"
        assert (
            sample(
                consumer._metrics,
                "smartflow_outbox_events_failed_total",
                {"stage": "consumer", "event_type": "test.flaky"},
            )
            == 2
        )
        assert (
            sample(
                consumer._metrics,
                "smartflow_outbox_events_dead_total",
                {"stage": "consumer", "event_type": "test.flaky"},
            )
            == 1
        )
        assert (await token_totals_for(pool, "p")) == 20
        # Fixed downstream; the operator replays the dead event and it is consumed once.
        broken["on"] = False
        async with pool.acquire() as conn:
            assert await store.replay_dead(conn, ids=[poison]) == [poison]
        await wait_until(lambda: all_consumed(pool, 41), within=20, what="replayed poison consumed")
    assert effects == ["poison"]


async def token_totals_for(pool: Any, user: str) -> int:
    return int(
        await pool.fetchval("SELECT coalesce(sum(tokens), 0) FROM token_usage WHERE user_id = $1", user)
    )


async def test_bad_envelope_unknown_type_and_timeline_conflict_go_dead_with_reason(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    async with pool.acquire() as conn:
        unknown = await store.publish(
            conn,
            NewEvent(event_type="no.such.type", aggregate_id="a", message_key="a", topic=topic, payload={}),
        )
        broken = await store.publish(
            conn, NewEvent(event_type="chat.history.persist.requested", aggregate_id="b", message_key="b",
                           topic="not-sent", payload={})
        )  # fmt: skip
        # Same step twice (identical) is a replay; a different entry at the same seq conflicts.
        same = dict(
            conversation_id="t", agent_id="a", seq=1, kind="k", content={"v": 1}, state={}, topic=topic
        )
        at = utcnow()
        await commands.record_agent_step(conn, **same, now=at)  # type: ignore[arg-type]
        await commands.record_agent_step(conn, **same, now=at)  # type: ignore[arg-type]
        await commands.record_agent_step(conn, **{**same, "content": {"v": 2}}, now=at)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for partition in range(PARTITIONS):  # garbage first on every partition
            await producer.send_and_wait(topic, b"\x00not json", partition=partition)
        # An envelope with a valid outbox id but a broken body: that row goes dead with the reason.
        await producer.send_and_wait(topic, json.dumps({"outbox_id": broken, "event_type": 5}).encode())
    finally:
        await producer.stop()
    await pool.execute("UPDATE outbox_events SET status = 'published' WHERE id = $1", broken)
    async with pipeline(pool, bootstrap_servers, topic, f"g-{unique_name}") as (_, consumer):

        async def settled() -> bool:
            counts = await status_counts(pool)
            return counts.get("dead", 0) == 3 and counts.get("consumed", 0) == 5

        await wait_until(settled, within=30, what="3 dead, 5 consumed")
        skipped = sample(
            consumer._metrics, "smartflow_outbox_events_skipped_total", {"reason": "bad_envelope"}
        )
        assert skipped == PARTITIONS
    reasons = {
        r["id"]: r["last_error"]
        for r in await pool.fetch("SELECT id, last_error FROM outbox_events WHERE status = 'dead'")
    }
    assert "no handler registered for event type 'no.such.type'" in reasons.pop(unknown)
    assert reasons.pop(broken).startswith("bad envelope")
    # Only the third step's timeline entry conflicts; the identical second one was a replay and
    # every snapshot (same version: a no-op) was consumed.
    conflict_types = {
        await pool.fetchval("SELECT event_type FROM outbox_events WHERE id = $1", i) for i in reasons
    }
    assert conflict_types == {"agent.timeline.persist.requested"}
    assert all("TimelineConflictError" in reason for reason in reasons.values())
    async with pool.acquire() as conn:
        timeline = await queries.agent_timeline(conn, "t")
    assert [(e.seq, e.content) for e in timeline] == [(1, {"v": 1})]


async def test_two_consumers_split_the_partitions_and_handle_each_event_once(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    group = f"g-{unique_name}"
    first = make_consumer(pool, bootstrap_servers, topic, group)
    second = make_consumer(pool, bootstrap_servers, topic, group)
    relay = Relay(
        pool=pool,
        bootstrap_servers=bootstrap_servers,
        metrics=RuntimeMetrics(CollectorRegistry()),
        lease_seconds=2,
        poll_interval_seconds=0.2,
    )

    async def post(start: int, count: int) -> None:
        async with pool.acquire() as conn:
            for i in range(start, start + count):
                await commands.post_chat_message(
                    conn, conversation_id=f"s{i}", user_id="s", content="abcd", role="assistant", topic=topic
                )

    async with relay, second:
        async with first:

            async def split() -> bool:
                a, b = first.assignment(), second.assignment()
                return len(a) + len(b) == PARTITIONS and not (a & b) and bool(a) and bool(b)

            await wait_until(split, within=20, what="both consumers own partitions")
            kept = second.assignment()
            await post(0, 30)
            await wait_until(lambda: all_consumed(pool, 60), within=30, what="60 consumed")
            consumed = [
                sample(
                    c._metrics,
                    "smartflow_outbox_events_consumed_total",
                    {"event_type": "chat.token.usage.adjust.requested"},
                )
                for c in (first, second)
            ]
            assert sum(consumed) == 30 and all(n > 0 for n in consumed)
            assert first.is_healthy() and second.is_healthy()
        # Scale-down: the first member leaves; the second keeps its partitions (sticky) and gains
        # the others, and events keep flowing with no loss and no second effect.
        await wait_until(
            lambda: _assigned_all(second), within=20, what="remaining member owns every partition"
        )
        assert kept <= second.assignment()
        await post(30, 30)
        await wait_until(lambda: all_consumed(pool, 120), within=30, what="120 consumed")
    assert await token_totals_for(pool, "s") == 60


async def _assigned_all(consumer: Consumer) -> bool:
    return len(consumer.assignment()) == PARTITIONS


async def committed_total(bootstrap_servers: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == topic)


async def test_offsets_are_committed_only_after_the_effect_is_durable(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    async with pool.acquire() as conn:
        for i in range(3):
            await commands.post_chat_message(
                conn, conversation_id=f"d{i}", user_id="d", content="abcd", role="assistant", topic=topic
            )
    relay = Relay(pool=pool, bootstrap_servers=bootstrap_servers, metrics=RuntimeMetrics(CollectorRegistry()))
    async with relay:
        await wait_until(lambda: _published(pool, 6), within=15, what="6 published")
    # The database cannot record anything: the consumer fetches, fails to record, and must neither
    # skip the messages nor commit their offsets.
    await pool.execute("ALTER TABLE outbox_events RENAME TO outbox_events_away")
    group = f"g-{unique_name}"
    consumer = make_consumer(pool, bootstrap_servers, topic, group)
    consumer._db_retry_seconds = 0.2
    async with consumer:
        await asyncio.sleep(3)
        assert await committed_total(bootstrap_servers, group, topic) == 0
        await pool.execute("ALTER TABLE outbox_events_away RENAME TO outbox_events")
        await wait_until(lambda: all_consumed(pool, 6), within=20, what="6 consumed after recovery")
    assert await committed_total(bootstrap_servers, group, topic) == 6
    assert await token_totals_for(pool, "d") == 3


async def _published(pool: Any, n: int) -> bool:
    return (await status_counts(pool)).get("published", 0) == n


async def _post_one_by_one(pool: Any, topic: str, user: str, count: int) -> None:
    """``count`` chat messages (two events each), one commit each, 20 ms apart: many small polls."""
    async with pool.acquire() as conn:
        for i in range(count):
            await commands.post_chat_message(
                conn,
                conversation_id=f"{user}{i}",
                user_id=user,
                content="abcd",
                role="assistant",
                topic=topic,
            )
            await asyncio.sleep(0.02)


def _commits(consumer: Consumer) -> float:
    return sample(consumer._metrics, "smartflow_consumer_offset_commits_total", {"outcome": "ok"})


async def test_offsets_are_committed_once_per_interval_and_the_last_ones_without_a_further_poll(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    group = f"g-{unique_name}"
    relay = Relay(
        pool=pool, bootstrap_servers=bootstrap_servers, metrics=RuntimeMetrics(CollectorRegistry()),
        notify_linger_seconds=0,
    )  # fmt: skip
    consumer = make_consumer(pool, bootstrap_servers, topic, group, commit_interval_seconds=0.5)
    async with relay, consumer:
        await wait_until(lambda: _assigned_all(consumer), within=20, what="the consumer owns every partition")
        started = asyncio.get_running_loop().time()
        await _post_one_by_one(pool, topic, "c", 25)
        await wait_until(lambda: all_consumed(pool, 50), within=30, what="50 consumed")
        # No event comes after the last poll: its offsets are committed when the interval ends.
        await wait_until(
            lambda: _committed_is(bootstrap_servers, group, topic, 50),
            within=3,
            what="all 50 offsets committed",
        )
        elapsed = asyncio.get_running_loop().time() - started
        polls = sample(consumer._metrics, "smartflow_consumer_batch_size_count")
        commits = _commits(consumer)
    assert polls >= 10, f"{polls} polls: the events did not arrive in small polls"
    # One commit per started interval at most (the first one at once), not one per poll.
    assert 1 <= commits <= elapsed / 0.5 + 2 and commits < polls, (commits, polls, elapsed)


async def test_a_stop_commits_the_offsets_still_waiting_for_their_interval(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str
) -> None:
    group = f"g-{unique_name}"
    relay = Relay(pool=pool, bootstrap_servers=bootstrap_servers, metrics=RuntimeMetrics(CollectorRegistry()))
    consumer = make_consumer(pool, bootstrap_servers, topic, group, commit_interval_seconds=10)
    async with relay:
        async with consumer:
            await wait_until(
                lambda: _assigned_all(consumer), within=20, what="the consumer owns every partition"
            )
            await _post_one_by_one(pool, topic, "w", 10)
            await wait_until(lambda: all_consumed(pool, 20), within=30, what="20 consumed")
            # The first poll's offsets went at once; the rest wait for the 10 s interval.
            assert await committed_total(bootstrap_servers, group, topic) < 20
        assert await committed_total(bootstrap_servers, group, topic) == 20
    assert _commits(consumer) == 2


async def _committed_is(bootstrap_servers: str, group: str, topic: str, n: int) -> bool:
    return await committed_total(bootstrap_servers, group, topic) == n
