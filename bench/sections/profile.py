"""Section 6: where the time goes. One relay, one consumer and one api process run under cProfile
(the api at a fixed request rate from the latency section's open-loop generator).

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
from ..procs import RuntimeProcess, running
from ..results import Result
from . import consumer as consumer_section
from . import latency as latency_section
from . import relay as relay_section

TOP = 15
API_RATE, API_SECONDS = 500, 10.0  # the e2e target's rate


# Start-up work (imports, class creation) is not the hot path; leave it out of the top lists.
STARTUP = ("<frozen", "importlib", "builtins.exec", "marshal", "builtins.compile", "__build_class__", "_ssl.")


def summarise(stats: pstats.Stats, events: int) -> dict[str, Any]:
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


# Own time by layer: which library a request's or event's CPU goes to. A frame belongs to the
# first layer whose marker its file path contains; stdlib frames are named by module.
LAYERS = (
    ("event loop idle (epoll wait)", ("'poll' of 'select.epoll'", "select.select")),
    ("aiohttp (HTTP server, yarl, multidict)", ("/aiohttp/", "/yarl/", "/multidict/", "/propcache/")),
    ("pydantic (request/response models)", ("/pydantic/", "/pydantic_core/")),
    ("asyncpg (PostgreSQL protocol, pool)", ("/asyncpg/",)),
    ("aiokafka", ("/aiokafka/", "/kafka/")),
    ("prometheus_client (metrics)", ("/prometheus_client/",)),
    ("smartflow_runtime (our code)", ("/smartflow_runtime/",)),
    ("asyncio (loop, transports, tasks)", ("/asyncio/", "selectors.py")),
    ("logging", ("/logging/",)),
    ("json", ("/json/", "_json")),
    ("sockets (send/recv)", ("_socket.socket",)),
)


def by_layer(stats: pstats.Stats, requests: int) -> list[dict[str, Any]]:
    """Own CPU time per layer, in seconds and in microseconds per request (or event)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in raw.items():
        where = f"{filename}:{func}"
        if any(marker in where for marker in STARTUP):
            continue
        layer = next((name for name, markers in LAYERS if any(m in where for m in markers)), "other")
        totals[layer] = totals.get(layer, 0.0) + tt
    order = [name for name, _ in LAYERS] + ["other"]
    return [
        {
            "layer": name,
            "own_s": round(totals[name], 3),
            "us_per_request": round(totals[name] * 1e6 / requests, 1) if requests else None,
        }
        for name in order
        if totals.get(name)
    ]


async def api_profile(
    ctx: Context, dsn: str, topic: str, path: Path, rate: int, seconds: float
) -> dict[str, Any]:
    """One api process under cProfile at ``rate`` requests/s for ``seconds`` (after a warm-up at
    the same rate): where a request's own time goes, by layer and by function."""
    env = {
        "SMARTFLOW_DATABASE_DSN": dsn,
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": ctx.servers.bootstrap_servers,
        "SMARTFLOW_KAFKA_TOPIC": topic,
    }
    api = RuntimeProcess("api", env, profile=path)
    async with running([api]):
        base = f"http://127.0.0.1:{api.http_port}"
        warm = await latency_section.generate(base, rate, 1.0)
        load = await latency_section.generate(base, rate, seconds)
    requests = warm["accepted"] + load["accepted"]
    stats = pstats.Stats(str(path))  # read once for both views
    return {
        "rate": rate,
        "seconds": seconds,
        "requests_profiled": requests,
        "achieved_rate": load["achieved_rate"],
        "http_ms": load["http_ms"],
        "errors": load["errors"] + warm["errors"],
        "by_layer": by_layer(stats, requests),
        **summarise(stats, requests),
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
    result = ctx.result("profile", "Profile of the relay, consumer and api processes (cProfile)")
    count = 1000 if ctx.smoke else 5000
    result.settings.update({"events": count, "profiler": "cProfile (bench.launch --profile)", "top": TOP})
    out = ctx.work_dir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    relay_prof, consumer_prof, api_prof = out / "relay.prof", out / "consumer.prof", out / "api.prof"
    for stale in (relay_prof, consumer_prof, api_prof):
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
        api_rate, api_seconds = (100, 1.0) if ctx.smoke else (API_RATE, API_SECONDS)
        ctx.say(f"profile: api, {api_rate} requests/s for {api_seconds:.0f}s")
        api_figures = await api_profile(ctx, dsn, topic, api_prof, api_rate, api_seconds)
    result.figures = {
        "relay": {
            "events_per_second_under_profiler": relay_figures["events_per_second"],
            **summarise(pstats.Stats(str(relay_prof)), count),
        },
        "consumer": {
            "events_per_second_under_profiler": consumer_figures["events_per_second"],
            **summarise(pstats.Stats(str(consumer_prof)), count),
        },
        "api": api_figures,
        "envelope_mean_bytes": events.mean_size(pairs),
        "relay_claim_query": await claim_query_cost(ctx, (500, 2000) if ctx.smoke else (1000, 5000, 20000)),
    }
    return result
