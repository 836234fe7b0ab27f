"""The CLI's one-shot commands as real subprocesses: config errors, migrate, outbox stats and replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from smartflow_runtime.db import MIGRATIONS
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import NewEvent

from .conftest import base_env, run_cli


async def test_invalid_config_names_every_bad_field_and_exits_non_zero(database_dsn: str) -> None:
    env = base_env(
        admin_port="abc",
        http_port="0",
        shutdown_grace_seconds="soon",
        log_format="yaml",
        database_dsn="mysql://root:hunter2@db/x",
    )
    code, out, err = await run_cli("run", "--role", "relay", env=env, within=30)
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    for expected in (
        "SMARTFLOW_DATABASE_DSN: must be a PostgreSQL DSN",
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS: missing",
        "SMARTFLOW_ADMIN_PORT: must be a port 1..65535, got 'abc'",
        "SMARTFLOW_HTTP_PORT: must be a port 1..65535, got '0'",
        "SMARTFLOW_SHUTDOWN_GRACE_SECONDS: must be a number of seconds > 0, got 'soon'",
        "SMARTFLOW_LOG_FORMAT: must be json or text, got 'yaml'",
    ):
        assert expected in message
    assert "hunter2" not in message


async def test_missing_role_and_dsn_are_both_reported() -> None:
    code, _, err = await run_cli("run", env=base_env(), within=30)
    assert code == 3
    assert "SMARTFLOW_ROLE: missing" in err
    assert "SMARTFLOW_DATABASE_DSN: missing" in err


async def test_migrate_twice_is_idempotent(database_dsn: str) -> None:
    env = base_env(database_dsn=database_dsn)
    code, out, err = await run_cli("migrate", "--shards", "4", env=env)
    assert code == 0, err
    assert "applied: " + ", ".join(str(m.version) for m in MIGRATIONS) in out
    assert "kafka topic: skipped (SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS not set)" in out
    conn = await asyncpg.connect(database_dsn)
    try:
        tables_before = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public' ORDER BY 1"
        )
        await conn.execute("INSERT INTO outbox_shards (shard) VALUES (99)")
        await conn.execute("DELETE FROM outbox_shards WHERE shard = 99")
        code, out, err = await run_cli("migrate", "--shards", "4", env=env)
        assert code == 0, err
        assert "already up to date" in out
        tables_after = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public' ORDER BY 1"
        )
        assert tables_after == tables_before
        assert {r["table_name"] for r in tables_after} >= {"outbox_events", "outbox_shards", "memory_jobs"}
        assert await conn.fetchval("SELECT count(*) FROM outbox_shards") == 4
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
        # Changing the shard count of a live outbox would break per-key order: refused, non-zero.
        code, _, err = await run_cli("migrate", "--shards", "8", env=env)
        assert code == 1
        assert "refusing" in err
    finally:
        await conn.close()


async def test_migrate_reports_an_unreachable_database() -> None:
    env = base_env(database_dsn="postgresql://nobody:pw@127.0.0.1:1/none")
    code, _, err = await run_cli("migrate", env=env)
    assert code == 1
    assert "cannot connect to PostgreSQL" in err


async def _seed(dsn: str) -> dict[str, list[int]]:
    """Real rows: 3 pending (1 due long ago), 2 consumed, 3 dead of two types."""
    now = datetime.now(UTC)

    def event(kind: str, key: str) -> NewEvent:
        return NewEvent(event_type=kind, aggregate_id=key, message_key=key, topic="t", payload={"k": key})

    conn = await asyncpg.connect(dsn)
    try:
        ids: dict[str, list[int]] = {"pending": [], "consumed": [], "dead": []}
        for i in range(3):
            ids["pending"].append(
                await store.publish(conn, event("a.one", f"p{i}"), now=now - timedelta(minutes=5))
            )
        for i in range(2):
            outbox_id = await store.publish(conn, event("a.one", f"c{i}"), now=now)
            await conn.execute(store.sql.MARK_CONSUMED, outbox_id, now)
            ids["consumed"].append(outbox_id)
        for i, kind in enumerate(["b.two", "b.two", "c.three"]):
            outbox_id = await store.publish(conn, event(kind, f"d{i}"), now=now)
            assert await store.mark_dead(conn, outbox_id, "poison", now=now)
            ids["dead"].append(outbox_id)
        return ids
    finally:
        await conn.close()


async def test_outbox_stats_counts_real_rows(migrated_dsn: str) -> None:
    await _seed(migrated_dsn)
    env = base_env(database_dsn=migrated_dsn)
    code, out, err = await run_cli("outbox", "stats", "--json", env=env)
    assert code == 0, err
    report = json.loads(out)
    backlog = {(e["status"], e["event_type"]): e["count"] for e in report["backlog"]}
    # Consumed rows are history, not backlog: one bounded total, not split by type.
    assert backlog == {
        ("pending", "a.one"): 3,
        ("dead", "b.two"): 2,
        ("dead", "c.three"): 1,
    }
    assert (report["consumed"], report["consumed_exact"]) == (2, True)
    assert report["due_pending"] == 3
    assert 290 < report["oldest_due_age_seconds"] < 600

    code, out, err = await run_cli("outbox", "stats", env=env)
    assert code == 0, err
    assert "dead" in out and "b.two" in out
    assert "due pending: 3" in out
    assert "consumed (history, until pruned): 2" in out


async def test_outbox_replay_dry_run_changes_nothing_and_by_id_replays_only_that_row(
    migrated_dsn: str,
) -> None:
    ids = await _seed(migrated_dsn)
    env = base_env(database_dsn=migrated_dsn)
    conn = await asyncpg.connect(migrated_dsn)
    try:

        async def dead_ids() -> list[int]:
            return [
                r["id"]
                for r in await conn.fetch("SELECT id FROM outbox_events WHERE status='dead' ORDER BY id")
            ]

        code, out, err = await run_cli("outbox", "replay", "--all", "--dry-run", env=env)
        assert code == 0, err
        assert f"would replay 3 dead event(s): {' '.join(map(str, ids['dead']))}" in out
        assert await dead_ids() == ids["dead"]

        code, out, err = await run_cli("outbox", "replay", "--type", "b.two", "--dry-run", env=env)
        assert code == 0, err
        assert "would replay 2 dead event(s)" in out
        assert await dead_ids() == ids["dead"]

        target = ids["dead"][1]
        not_dead = ids["consumed"][0]
        code, out, err = await run_cli(
            "outbox", "replay", "--id", str(target), "--id", str(not_dead), env=env
        )
        assert code == 0, err
        assert f"replayed 1 dead event(s): {target}" in out
        assert f"left alone: {not_dead}" in out
        assert await dead_ids() == [ids["dead"][0], ids["dead"][2]]
        row = await conn.fetchrow(
            "SELECT status, attempts, available_at <= now() AS due FROM outbox_events WHERE id=$1", target
        )
        assert (row["status"], row["attempts"], row["due"]) == ("pending", 0, True)
        assert await conn.fetchval("SELECT status FROM outbox_events WHERE id=$1", not_dead) == "consumed"

        code, out, err = await run_cli("outbox", "replay", "--type", "c.three", env=env)
        assert code == 0, err
        assert await dead_ids() == [ids["dead"][0]]
    finally:
        await conn.close()
