"""The fault-drill harness: real runtime processes against a PostgreSQL and a Kafka broker of their own.

Used by the outage tests and the drill in this folder (``make test`` runs short versions) and by
``make chaos`` (the long drill). Everything listens on 127.0.0.1; every fault is bounded in count
and time and ends by itself.

- :class:`Servers` owns one PostgreSQL and one broker it can stop and start again on the same
  ports with their data (:func:`smartflow_devstack.postgres.stop_keeping_data` and friends).
- :class:`Fleet` runs ``smartflow-runtime run --role R`` processes, SIGKILLs and restarts only
  processes it killed itself, and counts every other exit as a *self-exit* (a failure).
- :class:`Load` posts chat messages through the api with an ``Idempotency-Key`` each, retrying
  on 503s and lost connections with the same key, and remembers what was accepted.
- :func:`tally` reads the business tables and reports accepted events, effects, duplicates and
  losses as figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smartflow_devstack import kafka, postgres
from smartflow_devstack.process import free_port

CLI = str(Path(sys.executable).parent / "smartflow-runtime")


def now() -> float:
    return time.monotonic()


# --- servers ----------------------------------------------------------------------------------


class Servers:
    """A PostgreSQL and a Kafka broker started for the drill, restartable on the same ports."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.pg: postgres.PostgresInfo | None = None
        self.kafka: kafka.KafkaInfo | None = None
        self.pg_up = False
        self.kafka_up = False

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.pg = postgres.start(self.state)
        self.pg_up = True
        self.kafka = kafka.start(self.state, partitions=6)
        self.kafka_up = True

    @property
    def dsn(self) -> str:
        assert self.pg is not None
        return self.pg.dsn

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap_servers

    async def stop_postgres(self) -> None:
        assert self.pg is not None
        await asyncio.to_thread(postgres.stop_keeping_data, self.pg)
        self.pg_up = False

    async def start_postgres(self) -> None:
        assert self.pg is not None
        self.pg = await asyncio.to_thread(postgres.start_again, self.state, self.pg.port)
        self.pg_up = True

    async def stop_kafka(self) -> None:
        assert self.kafka is not None
        await asyncio.to_thread(kafka.stop_keeping_data, self.kafka)
        self.kafka_up = False

    async def start_kafka(self) -> None:
        assert self.kafka is not None
        self.kafka = await asyncio.to_thread(kafka.start_again, self.state, self.kafka)
        self.kafka_up = True

    async def ensure_up(self) -> None:
        """Bring back whatever a failed test left stopped."""
        if not self.pg_up:
            await self.start_postgres()
        if not self.kafka_up:
            await self.start_kafka()

    def stop(self) -> None:
        if self.kafka is not None and self.kafka_up:
            kafka.stop_keeping_data(self.kafka)
        if self.pg is not None and self.pg_up:
            postgres.stop_keeping_data(self.pg)


async def fresh_database(servers: Servers) -> str:
    """A new empty database on the drill's server; its DSN."""
    name = f"d_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(servers.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    assert servers.pg is not None
    return postgres.dsn_for(servers.pg.port, name)


# --- runtime processes ------------------------------------------------------------------------


@dataclass
class Member:
    """One runtime process of the fleet."""

    name: str
    role: str
    proc: asyncio.subprocess.Process
    admin_port: int
    http_port: int
    log_path: Path
    killed: bool = False

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        if self.log_path.exists():
            for line in self.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    records.append(json.loads(line))
        return records


@dataclass(frozen=True)
class Probe:
    """One look at a member's probes: ``/healthz`` and ``/readyz`` status and the readyz body."""

    alive: bool
    ready: bool
    body: dict[str, Any]

    def unready_dependencies(self) -> set[str]:
        return {u["dependency"] for u in self.body.get("unready", [])}


class Fleet:
    """Runtime processes with free ports and their logs in ``logs``; tracks who exited by itself."""

    def __init__(self, *, logs: Path, env: dict[str, str], dsn: str) -> None:
        self.logs = logs
        self.env = env
        self.dsn = dsn
        self.members: dict[str, Member] = {}
        self.history: list[Member] = []
        self.kills = 0
        self._session: aiohttp.ClientSession | None = None

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
        return self._session

    async def spawn(self, name: str, role: str) -> Member:
        admin_port, http_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTFLOW_")}
        env.update(self.env)
        env.update(
            {
                "SMARTFLOW_BIND_HOST": "127.0.0.1",
                "SMARTFLOW_ADMIN_PORT": str(admin_port),
                "SMARTFLOW_HTTP_PORT": str(http_port),
                "SMARTFLOW_LOG_FORMAT": "json",
            }
        )
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}-{len(self.history)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                CLI, "run", "--role", role, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        member = Member(name, role, proc, admin_port, http_port, log_path)
        self.members[name] = member
        self.history.append(member)
        return member

    async def probe(self, member: Member) -> Probe | None:
        """None when the admin server does not answer (starting, or gone)."""
        session = await self.session()
        try:
            async with session.get(f"{member.admin}/healthz") as health:
                alive = health.status == 200
            async with session.get(f"{member.admin}/readyz") as ready:
                return Probe(alive, ready.status == 200, await ready.json())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None

    async def wait_ready(self, names: list[str] | None = None, *, within: float = 60) -> float:
        """Until every named member (default all) answers ready; the seconds it took."""
        started = now()
        pending = set(names if names is not None else self.members)
        while pending:
            for name in list(pending):
                member = self.members[name]
                if member.proc.returncode is not None:
                    raise AssertionError(f"{name} exited with {member.proc.returncode}: {tail(member)}")
                probe = await self.probe(member)
                if probe is not None and probe.ready:
                    pending.discard(name)
            if pending and now() - started > within:
                bodies = {n: await self.probe(self.members[n]) for n in pending}
                raise AssertionError(f"not ready after {within}s: {bodies}")
            if pending:
                await asyncio.sleep(0.25)
        return now() - started

    async def wait_alive(self, *, within: float = 60) -> None:
        """Until every member's admin server answers (``/healthz``), ready or not."""
        started = now()
        for member in self.members.values():
            while (probe := await self.probe(member)) is None or not probe.alive:
                if member.proc.returncode is not None:
                    raise AssertionError(f"{member.name} exited ({member.proc.returncode}): {tail(member)}")
                if now() - started > within:
                    raise AssertionError(f"{member.name} has no /healthz after {within}s")
                await asyncio.sleep(0.25)

    async def kill(self, name: str) -> None:
        member = self.members[name]
        member.killed = True
        self.kills += 1
        with contextlib.suppress(ProcessLookupError):
            member.proc.send_signal(signal.SIGKILL)
        await member.proc.wait()

    async def restart(self, name: str) -> Member:
        member = self.members[name]
        assert member.killed, "the harness restarts only processes it killed itself"
        return await self.spawn(name, member.role)

    def self_exits(self) -> list[str]:
        """Members that ended without the harness killing them (a self-exit is a failure)."""
        return [
            f"{m.name} (rc={m.proc.returncode})"
            for m in self.history
            if m.proc.returncode is not None and not m.killed
        ]

    def rebalances(self) -> int:
        """Assignments received by every consumer process, from their logs ("partitions assigned")."""
        return sum(
            1
            for m in self.history
            if m.role == "consumer"
            for r in m.log_records()
            if r.get("msg") == "partitions assigned"
        )

    async def stop_all(self) -> None:
        for member in self.members.values():
            if member.proc.returncode is None:
                member.killed = True  # stopped by the harness at the end
                member.proc.send_signal(signal.SIGTERM)
        for member in self.members.values():
            try:
                await asyncio.wait_for(member.proc.wait(), 40)
            except TimeoutError:
                member.proc.kill()
                await member.proc.wait()
        if self._session is not None:
            await self._session.close()


def tail(member: Member, lines: int = 30) -> str:
    text = member.log_path.read_text(errors="replace").splitlines() if member.log_path.exists() else []
    return "\n".join(text[-lines:])


async def migrate(dsn: str, bootstrap: str, topic: str, *, partitions: int = 6) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTFLOW_")}
    env.update(
        {
            "SMARTFLOW_DATABASE_DSN": dsn,
            "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SMARTFLOW_KAFKA_TOPIC": topic,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "migrate",
        "--shards",
        "8",
        "--topic-partitions",
        str(partitions),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()


def fleet_env(dsn: str, bootstrap: str, topic: str, group: str) -> dict[str, str]:
    return {
        "SMARTFLOW_DATABASE_DSN": dsn,
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SMARTFLOW_KAFKA_TOPIC": topic,
        "SMARTFLOW_KAFKA_CONSUMER_GROUP": group,
        "SMARTFLOW_DB_POOL_MAX_SIZE": "6",
        "SMARTFLOW_RELAY_LEASE_SECONDS": "3",
        "SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS": "0.5",
        "SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
        "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS": "2",
        "SMARTFLOW_SHUTDOWN_GRACE_SECONDS": "20",
        "SMARTFLOW_LOG_LEVEL": "INFO",
    }


# --- load -------------------------------------------------------------------------------------


@dataclass
class Load:
    """Chat messages posted through the api, each with its own Idempotency-Key, retried until accepted."""

    api_url: Callable[[], str]
    rate_per_second: float
    users: int = 12
    conversations: int = 40
    accepted: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # key -> (user, conv, tokens)
    attempts: int = 0
    unavailable: int = 0  # JSON 503s naming the database
    bad_answers: list[str] = field(default_factory=list)  # anything else that is not 202/503-JSON
    connection_errors: int = 0
    replayed: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        rng = random.Random(13)
        in_flight: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            interval = 1.0 / self.rate_per_second
            next_at = now()
            n = 0
            while not self._stop.is_set():
                user = f"u{rng.randrange(self.users)}"
                conv = f"c{rng.randrange(self.conversations)}"
                words = " ".join(
                    rng.choice(["plan", "meet", "call", "lunch", "tomorrow", "at", "noon"])
                    for _ in range(rng.randrange(1, 30))
                )
                task = asyncio.create_task(self._post(session, f"k-{n}", user, conv, f"I like {words}"))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                n += 1
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_at - now())):
                        await self._stop.wait()
            if in_flight:
                await asyncio.gather(*in_flight)

    async def _post(self, session: aiohttp.ClientSession, key: str, user: str, conv: str, text: str) -> None:
        body = {"user_id": user, "content": text}
        deadline = now() + 300  # a message is retried through the longest outage of the drill
        while now() < deadline:
            self.attempts += 1
            try:
                async with session.post(
                    f"{self.api_url()}/v1/conversations/{conv}/messages",
                    json=body,
                    headers={"Idempotency-Key": key},
                ) as response:
                    status = response.status
                    kind = response.content_type
                    payload = await response.json() if kind == "application/json" else await response.text()
                    if response.headers.get("Idempotent-Replayed") == "true":
                        self.replayed += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.connection_errors += 1  # maybe committed, maybe not: the key makes retrying safe
                await asyncio.sleep(0.5)
                continue
            if status == 202:
                assert isinstance(payload, dict)
                self.accepted[key] = (user, conv, int(payload["tokens"]))
                return
            if status == 503 and isinstance(payload, dict) and payload.get("dependency") == "database":
                self.unavailable += 1
                await asyncio.sleep(0.5)
                continue
            self.bad_answers.append(f"{status} {kind}: {str(payload)[:200]}")
            await asyncio.sleep(0.5)
        self.bad_answers.append(f"{key} never accepted")


# --- checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    messages_accepted: int
    events_accepted: int
    outbox_rows: int
    outbox_by_status: dict[str, int]
    chat_messages: int
    conversation_messages: int
    token_adjustments: int
    tokens_expected: int
    tokens_counted: int
    memory_jobs: int
    memory_jobs_succeeded: int

    @property
    def duplicates(self) -> int:
        """Effects beyond one per accepted message, in any business table."""
        return (
            max(0, self.chat_messages - self.messages_accepted)
            + max(0, self.conversation_messages - self.messages_accepted)
            + max(0, self.token_adjustments - self.messages_accepted)
            + max(0, self.memory_jobs - self.messages_accepted)
        )

    @property
    def losses(self) -> int:
        """Accepted events without their effect (not consumed, or missing from a business table)."""
        not_consumed = self.outbox_rows - self.outbox_by_status.get("consumed", 0)
        return (
            max(0, self.events_accepted - self.outbox_rows)
            + not_consumed
            + max(0, self.messages_accepted - self.chat_messages)
            + max(0, self.messages_accepted - self.token_adjustments)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages_accepted": self.messages_accepted,
            "events_accepted": self.events_accepted,
            "outbox_rows": self.outbox_rows,
            "outbox_by_status": self.outbox_by_status,
            "effects": {
                "chat_messages": self.chat_messages,
                "conversations.message_count": self.conversation_messages,
                "token_usage.adjustments": self.token_adjustments,
                "token_usage.tokens": self.tokens_counted,
                "tokens_expected": self.tokens_expected,
                "memory_jobs": self.memory_jobs,
                "memory_jobs_succeeded": self.memory_jobs_succeeded,
            },
            "duplicates": self.duplicates,
            "losses": self.losses,
        }


async def tally(dsn: str, load: Load) -> Tally:
    conn = await asyncpg.connect(dsn)
    try:
        by_status = {
            r["status"]: r["n"]
            for r in await conn.fetch("SELECT status, count(*) AS n FROM outbox_events GROUP BY status")
        }
        tokens = await conn.fetchrow(
            "SELECT coalesce(sum(tokens), 0) AS t, coalesce(sum(adjustments), 0) AS a FROM token_usage"
        )
        jobs = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') AS ok FROM memory_jobs"
        )
        return Tally(
            messages_accepted=len(load.accepted),
            events_accepted=3 * len(load.accepted),  # history, token usage, memory extract per message
            outbox_rows=sum(by_status.values()),
            outbox_by_status=by_status,
            chat_messages=int(await conn.fetchval("SELECT count(*) FROM chat_messages")),
            conversation_messages=int(
                await conn.fetchval("SELECT coalesce(sum(message_count), 0) FROM conversations")
            ),
            token_adjustments=int(tokens["a"]),
            tokens_expected=sum(t for _, _, t in load.accepted.values()),
            tokens_counted=int(tokens["t"]),
            memory_jobs=int(jobs["n"]),
            memory_jobs_succeeded=int(jobs["ok"]),
        )
    finally:
        await conn.close()


async def drained(dsn: str) -> bool:
    """Every outbox row consumed and every memory job finished."""
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn = await asyncpg.connect(dsn, timeout=3)
        try:
            open_rows = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status <> 'consumed'")
            open_jobs = await conn.fetchval("SELECT count(*) FROM memory_jobs WHERE status <> 'succeeded'")
            return bool(open_rows == 0 and open_jobs == 0)
        finally:
            await conn.close()
    return False


async def wait_for(check: Callable[[], Awaitable[bool]], *, what: str, within: float) -> float:
    started = now()
    while now() - started < within:
        if await check():
            return now() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {within}s waiting for {what}")
