"""Section 6: where the time goes. One relay and one consumer process run under cProfile.

Profiling slows Python down (about 1.5-2x), so these runs are separate from the throughput runs
and only their *shares* matter: the top functions by own time and by cumulative time, plus the
share of the event loop's idle wait (``select``/``epoll``), i.e. time spent waiting on PostgreSQL
or Kafka rather than computing.
"""

from __future__ import annotations

import json
import pstats
from pathlib import Path
from typing import Any

import asyncpg

from .. import events
from ..context import Context
from ..results import Result
from . import consumer as consumer_section
from . import relay as relay_section

TOP = 15


# Start-up work (imports, class creation) is not the hot path; leave it out of the top lists.
STARTUP = ("<frozen", "importlib", "builtins.exec", "marshal", "builtins.compile", "__build_class__", "_ssl.")


def summarise(path: Path, events: int) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else "~"
        rows.append({"function": f"{short}:{line}({func})", "calls": nc, "own_s": tt, "cumulative_s": ct})
    idle = sum(r["own_s"] for r in rows if "select" in r["function"] or "epoll" in r["function"])

    sends = sum(r["calls"] for r in rows if "'send' of '_socket.socket'" in r["function"])
    hot = [r for r in rows if not any(marker in r["function"] for marker in STARTUP)]

    def top(key: str) -> list[dict[str, Any]]:
        chosen = sorted(hot, key=lambda r: r[key], reverse=True)[:TOP]
        return [
            {**r, "own_s": round(r["own_s"], 4), "cumulative_s": round(r["cumulative_s"], 4)} for r in chosen
        ]

    return {
        "total_seconds": round(total, 3),
        "event_loop_wait_seconds": round(idle, 3),
        "event_loop_wait_share": round(idle / total, 3) if total else None,
        "socket_sends_per_event": round(sends / events, 2) if events else None,
        "top_own_time": top("own_s"),
        "top_cumulative_time": top("cumulative_s"),
    }


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


async def claim_query_cost(ctx: Context, backlogs: tuple[int, ...]) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE of the relay's claim (one relay owning every shard) at growing backlogs.

    Statistics are fresh (ANALYZE after the insert) and the claim is rolled back, so it locks nothing.
    """
    from smartflow_runtime.outbox import sql, store

    found = []
    async with ctx.servers.database("claim") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            shards = int(await conn.fetchval("SELECT count(*) FROM outbox_shards"))
            await conn.execute(
                "UPDATE outbox_shards SET owner = 'bench', lease_until = now() + interval '1 hour'"
            )
            have = 0
            for backlog in backlogs:
                await events.write_outbox(conn, events.build_events(backlog - have, topic="claim"))
                have = backlog
                await conn.execute("ANALYZE outbox_events")
                tx = conn.transaction()
                await tx.start()
                try:
                    explained = await conn.fetchval(
                        "EXPLAIN (ANALYZE, FORMAT JSON) " + sql.CLAIM_BATCH,
                        list(range(shards)),
                        store.utcnow(),
                        500,
                        "bench",
                    )
                finally:
                    await tx.rollback()
                top = json.loads(explained)[0]
                sorts = [n for n in _plan_nodes(top["Plan"]) if n.get("Node Type") == "Sort"]
                found.append(
                    {
                        "backlog_rows": backlog,
                        "claim_limit": 500,
                        "execution_ms": round(top["Execution Time"], 2),
                        "rows_sorted": sorts[0]["Plans"][0].get("Actual Rows") if sorts else None,
                        "sort_method": sorts[0].get("Sort Method") if sorts else None,
                        "sort_space_kb": sorts[0].get("Sort Space Used") if sorts else None,
                        "sort_space_type": sorts[0].get("Sort Space Type") if sorts else None,
                    }
                )
        finally:
            await conn.close()
    return found


async def run(ctx: Context) -> Result:
    result = ctx.result("profile", "Profile of the relay and consumer processes (cProfile)")
    count = 1000 if ctx.smoke else 5000
    result.settings.update({"events": count, "profiler": "cProfile (bench.launch --profile)", "top": TOP})
    out = ctx.work_dir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    relay_prof, consumer_prof = out / "relay.prof", out / "consumer.prof"
    for stale in (relay_prof, consumer_prof):
        stale.unlink(missing_ok=True)
    async with (
        ctx.servers.database("profile") as dsn,
        ctx.servers.topic("profile", partitions=relay_section.PARTITIONS) as topic,
    ):
        ctx.say(f"profile: relay, {count} events")
        relay_figures, pairs = await relay_section.one_relay_run(
            ctx, dsn, topic, 1, count, 120.0, profile=relay_prof
        )
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE outbox_events SET published_at = now()")
        finally:
            await conn.close()
        ctx.say(f"profile: consumer, {count} events")
        consumer_figures = await consumer_section.real_run(ctx, dsn, pairs, 1, 120.0, profile=consumer_prof)
    result.figures = {
        "relay": {
            "events_per_second_under_profiler": relay_figures["events_per_second"],
            **summarise(relay_prof, count),
        },
        "consumer": {
            "events_per_second_under_profiler": consumer_figures["events_per_second"],
            **summarise(consumer_prof, count),
        },
        "envelope_mean_bytes": events.mean_size(pairs),
        "relay_claim_query": await claim_query_cost(ctx, (500, 2000) if ctx.smoke else (1000, 5000, 20000)),
    }
    return result
