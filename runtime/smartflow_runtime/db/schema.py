"""The PostgreSQL schema as an ordered list of versioned migrations, and :func:`migrate` to apply them.

Called by ``smartflow-runtime migrate`` (the process layer's CLI) and by tests. Migrations are
append-only: a released version is never edited, a change is a new version. Applying is
idempotent and safe to run from several pods at once: a transaction-level advisory lock
serialises concurrent runs, and ``schema_migrations`` records what was applied.

The names are the shared contract in ``docs/contracts.md``; the operator's lag probe reads
``outbox_events`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from ..errors import DatabaseError, MigrationError

DEFAULT_SHARD_COUNT = 32

# Arbitrary constant: the advisory lock key every `migrate` run takes, so two pods never interleave.
_MIGRATE_LOCK_KEY = 0x5F0A_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


# outbox_events_shard_status_due (version 1) looks unused by EXPLAIN on a quiet table, but it is
# what keeps the relay claim's blocker check (NOT EXISTS: a pending, never published row of the
# shard waiting out its backoff) a range scan on (shard, 'pending', available_at > now): dropped,
# 2 and 4 relays draining a backlog fell from 14-18k to 9-12k ev/s in the bench.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "outbox",
        """
        CREATE TABLE outbox_events (
            id            bigserial PRIMARY KEY,
            event_id      uuid NOT NULL UNIQUE,
            event_type    text NOT NULL,
            event_version int NOT NULL DEFAULT 1,
            aggregate_id  text NOT NULL,
            message_key   text NOT NULL,
            topic         text NOT NULL,
            payload       jsonb NOT NULL,
            shard         int NOT NULL,
            status        text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'published', 'consumed', 'dead')),
            attempts      int NOT NULL DEFAULT 0,
            max_attempts  int NOT NULL DEFAULT 20 CHECK (max_attempts >= 1),
            available_at  timestamptz NOT NULL,
            last_error    text,
            created_at    timestamptz NOT NULL,
            updated_at    timestamptz NOT NULL,
            published_at  timestamptz,
            consumed_at   timestamptz
        );
        CREATE INDEX outbox_events_shard_status_due ON outbox_events (shard, status, available_at, id);
        CREATE INDEX outbox_events_due_pending ON outbox_events (available_at) WHERE status = 'pending';
        CREATE INDEX outbox_events_dead ON outbox_events (event_type, id) WHERE status = 'dead';

        CREATE TABLE outbox_shards (
            shard       int PRIMARY KEY CHECK (shard >= 0),
            owner       text,
            lease_until timestamptz
        );

        -- Live relays announce themselves here; each targets ceil(shards / live relays) shards.
        CREATE TABLE outbox_relays (
            relay_id     text PRIMARY KEY,
            heartbeat_at timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        2,
        "business tables for the core event types",
        """
        CREATE TABLE conversations (
            conversation_id text PRIMARY KEY,
            user_id         text NOT NULL,
            message_count   int NOT NULL DEFAULT 0,
            created_at      timestamptz NOT NULL,
            last_message_at timestamptz NOT NULL
        );

        CREATE TABLE chat_messages (
            id              bigserial PRIMARY KEY,
            message_id      uuid NOT NULL UNIQUE,
            conversation_id text NOT NULL,
            user_id         text NOT NULL,
            role            text NOT NULL,
            content         text NOT NULL,
            sent_at         timestamptz NOT NULL,
            persisted_at    timestamptz NOT NULL
        );
        CREATE INDEX chat_messages_conversation ON chat_messages (conversation_id, sent_at, id);

        CREATE TABLE token_usage (
            user_id         text NOT NULL,
            conversation_id text NOT NULL,
            tokens          bigint NOT NULL DEFAULT 0,
            adjustments     int NOT NULL DEFAULT 0,
            updated_at      timestamptz NOT NULL,
            PRIMARY KEY (user_id, conversation_id)
        );

        CREATE TABLE agent_state_snapshots (
            conversation_id text PRIMARY KEY,
            agent_id        text NOT NULL,
            version         bigint NOT NULL,
            state           jsonb NOT NULL,
            updated_at      timestamptz NOT NULL
        );

        CREATE TABLE agent_timeline (
            conversation_id text NOT NULL,
            seq             int NOT NULL,
            kind            text NOT NULL,
            content         jsonb NOT NULL,
            occurred_at     timestamptz NOT NULL,
            PRIMARY KEY (conversation_id, seq)
        );

        CREATE TABLE task_urgency (
            task_id     text PRIMARY KEY,
            user_id     text NOT NULL,
            urgency     int NOT NULL,
            reason      text NOT NULL,
            promoted_at timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "memory jobs and facts",
        """
        CREATE TABLE memory_jobs (
            id              bigserial PRIMARY KEY,
            job_type        text NOT NULL,
            idempotency_key text NOT NULL UNIQUE,
            payload         jsonb NOT NULL,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'dead')),
            attempts        int NOT NULL DEFAULT 0,
            max_attempts    int NOT NULL DEFAULT 6 CHECK (max_attempts >= 1),
            available_at    timestamptz NOT NULL,
            lease_owner     text,
            lease_until     timestamptz,
            last_error      text,
            created_at      timestamptz NOT NULL,
            updated_at      timestamptz NOT NULL,
            finished_at     timestamptz
        );
        CREATE INDEX memory_jobs_claimable ON memory_jobs (available_at, id)
            WHERE status IN ('pending', 'failed');
        CREATE INDEX memory_jobs_leased ON memory_jobs (lease_until) WHERE status = 'processing';

        CREATE TABLE memory_facts (
            id              bigserial PRIMARY KEY,
            job_id          bigint NOT NULL REFERENCES memory_jobs (id),
            user_id         text NOT NULL,
            conversation_id text NOT NULL,
            kind            text NOT NULL,
            fact            text NOT NULL,
            created_at      timestamptz NOT NULL,
            UNIQUE (job_id, fact)
        );
        CREATE INDEX memory_facts_user ON memory_facts (user_id, id);
        """,
    ),
    Migration(
        4,
        "outbox retention and cheap stats",
        # Both partial: `outbox stats` and the relay's backlog sampler read unfinished rows
        # without touching the consumed history, and `outbox prune` finds old consumed rows
        # oldest first without a table scan. Built without CONCURRENTLY (migrations run in a
        # transaction), so on a large existing outbox writes wait for the build once.
        """
        CREATE INDEX outbox_events_unfinished ON outbox_events (status, event_type)
            WHERE status <> 'consumed';
        CREATE INDEX outbox_events_consumed ON outbox_events (consumed_at, id)
            WHERE status = 'consumed';
        """,
    ),
    Migration(
        5,
        "outbox pending rows by shard in id order",
        # The relay's claim walks each leased shard's pending rows in id order and stops after a
        # batch, so a claim costs the batch, not the backlog (the (shard, status, available_at,
        # id) index orders by time first and made every claim sort all due rows of its shards).
        # available_at is included so the due check needs no heap visit on all-visible pages.
        """
        CREATE INDEX outbox_events_pending_by_shard ON outbox_events (shard, id) INCLUDE (available_at)
            WHERE status = 'pending';
        """,
    ),
    Migration(
        6,
        "api idempotency keys",
        # One row per Idempotency-Key the api accepted, written in the same transaction as the
        # command's business rows and events, holding the response it answered: a retry with the
        # same key gets that response back and writes nothing. request_hash (method, path, body)
        # tells a true retry from a key reused for another request.
        """
        CREATE TABLE api_idempotency_keys (
            idempotency_key text PRIMARY KEY,
            request_hash    text NOT NULL,
            status          int NOT NULL,
            response        jsonb NOT NULL,
            created_at      timestamptz NOT NULL
        );
        CREATE INDEX api_idempotency_keys_created ON api_idempotency_keys (created_at);
        """,
    ),
)

REQUIRED_SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this code needs: roles stay unready on a database below it (run ``migrate``)."""


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`migrate` did: versions applied by this run, the resulting version and shard count."""

    applied: tuple[int, ...]
    version: int
    shard_count: int


async def schema_version(conn: Any) -> int:
    """The highest applied migration version, 0 on an empty database."""
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))
    except (asyncpg.PostgresError, OSError) as error:
        raise DatabaseError(f"cannot read schema version: {error}") from error


async def migrate(conn: Any, *, shard_count: int = DEFAULT_SHARD_COUNT) -> MigrationResult:
    """Create or upgrade the schema on ``conn`` (an asyncpg connection, not in a transaction).

    Idempotent: a second run applies nothing. The outbox shard count is fixed by the first run:
    ``outbox_shards`` gets ``shard_count`` rows; a later run asking for a different count raises
    :class:`MigrationError`, because re-sharding would move keys between shards and break
    per-key ordering while events are in flight.
    """
    if shard_count < 1:
        raise MigrationError(f"shard_count must be >= 1, got {shard_count}")
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK_KEY)
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    int PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            applied: list[int] = []
            for migration in MIGRATIONS:
                if migration.version in done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
            existing = int(await conn.fetchval("SELECT count(*) FROM outbox_shards"))
            if existing == 0:
                await conn.execute(
                    "INSERT INTO outbox_shards (shard) SELECT generate_series(0, $1::int - 1)", shard_count
                )
            elif existing != shard_count:
                raise MigrationError(
                    f"outbox already has {existing} shards; refusing to change it to {shard_count} "
                    "(re-sharding would break per-key order of in-flight events)"
                )
            version = max((m.version for m in MIGRATIONS), default=0)
    except (asyncpg.PostgresError, OSError) as error:
        raise DatabaseError(f"migration failed: {error}") from error
    return MigrationResult(applied=tuple(applied), version=version, shard_count=shard_count)
