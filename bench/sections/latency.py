"""Section 3: end-to-end latency, api write -> handler committed, at fixed request rates.

Split deployment on one machine: one ``api``, one ``relay`` and one ``consumer`` process. An
open-loop generator in the bench process POSTs ``/v1/tasks/{id}/urgency`` (one 1 KB
``task.urgency.promote.requested`` event per request) at R requests/s. A trigger added to the
bench database NOTIFYs when a row turns ``consumed``; PostgreSQL delivers it at the consumer's
commit, and a separate listener process (:mod:`bench.listener`) timestamps its arrival.
Latency = arrival - the moment the request was sent (both wall clock, same machine).

Two wake-up modes: ``notify`` (the runtime as shipped: LISTEN/NOTIFY plus a fallback poll) and
``polling`` (``SMARTFLOW_RELAY_LISTEN_NOTIFY=false``: the relay opens no LISTEN session and wakes
only on its fallback poll).

CPU per event: each component's CPU seconds over the run (``/proc``; PostgreSQL counts the bench
database's backends, the broker is the whole Kafka process) divided by the accepted events.
Saturation: the highest offered rate's accepted rate and its end-to-end rate (events consumed per
second, first request sent -> last consumed): the lower of the two is what the trio sustains.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smartflow_devstack.versions import REPO_ROOT

from ..context import Context
from ..machine import (
    QUIET_BUSY_CORES,
    QUIET_LIMIT_SECONDS,
    QUIET_WINDOW_SECONDS,
    busy_cores,
    cpu_times,
    wait_quiet_before_measuring,
)
from ..procs import LOG_DIR, CpuMeter, RuntimeProcess, postgres_backends, running
from ..results import Result, Target
from ..stats import summary
from .relay import relay_defaults

CHANNEL = "bench_consumed"
PARTITIONS = 6
KEYS = 500
MAX_IN_FLIGHT = 512
WARM_UP_SECONDS = 4.0
REASON = "r" * 850  # makes the stored payload and the Kafka envelope about 1 KB

TRIGGER_SQL = f"""
CREATE FUNCTION bench_consumed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_consumed AFTER UPDATE OF status ON outbox_events FOR EACH ROW
WHEN (NEW.status = 'consumed' AND OLD.status IS DISTINCT FROM 'consumed')
EXECUTE FUNCTION bench_consumed_notify();
"""


def ready_backend(path: Path) -> int | None:
    """The listener's PostgreSQL backend pid once its ready file is complete (newline-terminated)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


class Listener:
    """The :mod:`bench.listener` process; :meth:`stop` returns {outbox id: arrival time}."""

    def __init__(self, dsn: str) -> None:
        self.out = LOG_DIR / f"notify-{uuid.uuid4().hex[:6]}.txt"
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.listener", dsn, CHANNEL, str(self.out)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def wait_ready(self) -> int:
        """Until the listener listens; returns its PostgreSQL backend's pid (bench cost, not the
        pipeline's)."""
        ready = Path(str(self.out) + ".ready")
        for _ in range(200):
            backend = ready_backend(ready)
            if backend is not None:
                return backend
            if self.proc.poll() is not None:
                raise RuntimeError("notification listener exited")
            await asyncio.sleep(0.05)
        raise RuntimeError("notification listener not ready")

    async def stop(self) -> dict[int, float]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 5)
        arrivals: dict[int, float] = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                at, payload = line.split(" ", 1)
                arrivals.setdefault(int(payload), float(at))
        for path in (self.out, Path(str(self.out) + ".ready")):
            path.unlink(missing_ok=True)
        return arrivals


async def generate(base_url: str, rate: float, seconds: float) -> dict[str, Any]:
    """POST at ``rate``/s for ``seconds`` (open loop); returns {outbox id: send time} and counters."""
    total = max(1, int(rate * seconds))
    sent: dict[int, float] = {}
    http_seconds: list[float] = []
    lags: list[float] = []
    errors: list[str] = []
    skipped = 0
    in_flight: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    run_id = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(i: int, intended: float) -> None:
            body = {"user_id": f"user-{i % KEYS}", "urgency": i % 101, "reason": REASON}
            started = time.time()
            lags.append(started - intended)
            try:
                async with session.post(f"{base_url}/v1/tasks/t-{run_id}-{i}/urgency", json=body) as response:
                    data = await response.json()
                    if response.status != 202:
                        errors.append(f"HTTP {response.status}")
                        return
                http_seconds.append(time.time() - started)
                sent[int(data["outbox_ids"][0])] = started
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
                errors.append(type(error).__name__)

        begin = time.time() + 0.05
        i = 0
        while i < total:
            due = min(total, int((time.time() - begin) * rate) + 1)
            while i < due:
                if len(in_flight) >= MAX_IN_FLIGHT:
                    skipped += 1
                else:
                    task = asyncio.create_task(one(i, begin + i / rate))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                i += 1
            await asyncio.sleep(0.001)
        if in_flight:
            await asyncio.wait(in_flight, timeout=30)
        elapsed = time.time() - begin
    return {
        "sent": sent,
        "requested": total,
        "accepted": len(sent),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "skipped_generator_saturated": skipped,
        "achieved_rate": round(len(sent) / elapsed, 1),
        "http_ms": summary(http_seconds, scale=1000),
        "generator_lag_ms": summary(lags, scale=1000),
    }


BATCH_METRICS = {"relay": "smartflow_relay_batch_size", "consumer": "smartflow_consumer_batch_size"}


async def batch_counters(procs: list[RuntimeProcess]) -> dict[str, tuple[float, float]]:
    """(sum, count) of the relay's and the consumer's batch-size histograms, from their /metrics."""
    found: dict[str, tuple[float, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for proc in procs:
            name = BATCH_METRICS.get(proc.role)
            if name is None:
                continue
            try:
                async with session.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            values = {}
            for line in text.splitlines():
                for suffix in ("_sum", "_count"):
                    if line.startswith(name + suffix + " "):
                        values[suffix] = float(line.split()[1])
            found[proc.role] = (values.get("_sum", 0.0), values.get("_count", 0.0))
    return found


def mean_batches(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float | None]:
    means: dict[str, float | None] = {}
    for role, (total, count) in after.items():
        old_total, old_count = before.get(role, (0.0, 0.0))
        batches = count - old_count
        means[role] = round((total - old_total) / batches, 1) if batches else None
    return means


async def wait_all_consumed(conn: asyncpg.Connection, within: float) -> int:
    deadline = time.monotonic() + within
    left = 0
    while time.monotonic() < deadline:
        left = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status <> 'consumed'")
        if left == 0:
            return 0
        await asyncio.sleep(0.2)
    return int(left)


async def stage_breakdown(conn: asyncpg.Connection, ids: list[int]) -> dict[str, Any]:
    """From the rows' own timestamps: api write -> published_at, published_at -> consumed_at."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM published_at - created_at)::float8 AS relay, "
        "extract(epoch FROM consumed_at - published_at)::float8 AS consume "
        "FROM outbox_events WHERE id = ANY($1::bigint[]) AND consumed_at IS NOT NULL",
        ids,
    )
    return {
        "write_to_published_ms": summary([r["relay"] for r in rows], scale=1000),
        "published_to_consumer_start_ms": summary([r["consume"] for r in rows], scale=1000),
    }


PIPELINE = ("api_process", "relay_process", "consumer_process", "postgres_backends", "kafka_broker")
"""The components whose CPU an event costs (the generator and the listener are the bench's own)."""


def cpu_ms_per_event(cpu_seconds: dict[str, float], events: int) -> dict[str, float | None]:
    """CPU milliseconds per accepted event, per component and for the pipeline in total."""
    if events <= 0:
        return {k: None for k in (*cpu_seconds, "pipeline_total")}
    per = {k: round(v * 1000 / events, 3) for k, v in cpu_seconds.items()}
    per["pipeline_total"] = round(sum(per.get(k, 0.0) for k in PIPELINE), 3)
    return per


def consumed_rate(sent: dict[int, float], arrivals: dict[int, float]) -> float | None:
    """Events consumed per second: count / (first request sent -> last consumed NOTIFY)."""
    done = [arrivals[i] for i in sent if i in arrivals]
    if not done:
        return None
    span = max(done) - min(sent.values())
    return round(len(done) / span, 1) if span > 0 else None


def saturation(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """At the highest offered notify rate: accepted and consumed ev/s; the lower is sustained."""
    notify = [r for r in runs if r["mode"] == "notify"]
    if not notify:
        return None
    top = max(notify, key=lambda r: r["rate"])
    rates = [x for x in (top["achieved_rate"], top.get("consumed_per_second")) if x is not None]
    return {
        "offered_events_per_second": top["rate"],
        "accepted_events_per_second": top["achieved_rate"],
        "consumed_events_per_second": top.get("consumed_per_second"),
        "sustained_events_per_second": min(rates) if rates else None,
        "capped_by_offer": bool(rates) and min(rates) >= 0.95 * top["rate"],
        "skipped_generator_saturated": top["skipped_generator_saturated"],
    }


async def one_mode(ctx: Context, mode: str, rates: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    async with (
        ctx.servers.database(f"latency_{mode}") as dsn,
        ctx.servers.topic(f"latency{mode}", partitions=PARTITIONS) as topic,
    ):
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(TRIGGER_SQL)
            env = {
                "SMARTFLOW_DATABASE_DSN": dsn,
                "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": ctx.servers.bootstrap_servers,
                "SMARTFLOW_KAFKA_TOPIC": topic,
                "SMARTFLOW_KAFKA_CONSUMER_GROUP": f"bench-latency-{uuid.uuid4().hex[:8]}",
            }
            procs = [
                RuntimeProcess("consumer", env),
                RuntimeProcess(
                    "relay", {**env, "SMARTFLOW_RELAY_LISTEN_NOTIFY": str(mode != "polling").lower()}
                ),
                RuntimeProcess("api", env),
            ]
            listener = Listener(dsn)
            try:
                listener_backend = await listener.wait_ready()
                async with running(procs):
                    base = f"http://127.0.0.1:{procs[2].http_port}"
                    database = dsn.rsplit("/", 1)[1]
                    # The bench's own backends (this connection, the listener's) are not the pipeline's.
                    own = [conn.get_server_pid(), listener_backend]
                    for rate in rates:
                        # Warm-up at the rate itself, not measured (its events are in no run's
                        # ``sent``): the broker's JIT, PostgreSQL's buffers and the processes' pools
                        # meet this traffic before the clock runs. Without it, 500 ev/s measured right
                        # after the relay section's millions of rows (a full bench) cost the broker
                        # 1.8x and PostgreSQL 1.4x their CPU of a run on a warmed stack.
                        await generate(base, rate, WARM_UP_SECONDS if not ctx.smoke else 0.2)
                        if await wait_all_consumed(conn, 60.0):
                            raise RuntimeError(f"{mode}: warm-up at {rate} ev/s was not consumed within 60s")
                        quiet = await wait_quiet_before_measuring(smoke=ctx.smoke)
                        if not quiet["quiet"]:
                            ctx.say(f"latency: the machine stayed busy ({quiet['busy_cores_before']} cores)")
                        ctx.say(f"latency: {mode}, {rate} ev/s for {seconds:.0f}s")
                        machine_before = cpu_times()
                        meter = CpuMeter(
                            groups={
                                "api_process": [procs[2].pid],
                                "relay_process": [procs[1].pid],
                                "consumer_process": [procs[0].pid],
                                "kafka_broker": [ctx.servers.kafka.pid],
                            }
                        )
                        meter.add("postgres_backends", postgres_backends(database, exclude=own))
                        batches_before = await batch_counters(procs)
                        meter.start()
                        began = time.monotonic()
                        load = await generate(base, rate, seconds)
                        wall = time.monotonic() - began
                        load["machine_busy_cores"] = busy_cores(machine_before, cpu_times())
                        load["quiet_wait"] = quiet
                        meter.add(
                            "postgres_backends",
                            postgres_backends(database, exclude=own),
                            started_during_run=True,
                        )
                        cpu = meter.stop()
                        cpu["bench_generator"] = cpu.pop("bench_process")
                        load["cpu_cores_used"] = {k: round(v / wall, 3) for k, v in cpu.items()}
                        waits = dict(meter.waits)
                        waits["bench_generator"] = waits.pop("bench_process")
                        load["cpu_wait_cores"] = {k: round(v / wall, 3) for k, v in waits.items()}
                        load["cpu_ms_per_event"] = cpu_ms_per_event(cpu, load["accepted"])
                        batches_after = await batch_counters(procs)
                        load["mean_batch"] = mean_batches(batches_before, batches_after)
                        left = await wait_all_consumed(conn, 60.0)
                        load["not_consumed_after_60s"] = left
                        load["rate"] = rate
                        runs.append(load)
            finally:
                arrivals = await listener.stop()
            for load in runs:
                sent: dict[int, float] = load.pop("sent")
                latencies = [arrivals[i] - t for i, t in sent.items() if i in arrivals]
                load["consumed_per_second"] = consumed_rate(sent, arrivals)
                load["mode"] = mode
                load["e2e_ms"] = summary(latencies, scale=1000)
                load["stages"] = await stage_breakdown(conn, list(sent))
                ctx.say(f"latency: {mode} {load['rate']} ev/s -> e2e {load['e2e_ms']}")
        finally:
            await conn.close()
    return runs


async def run(ctx: Context) -> Result:
    result = ctx.result("latency", "End-to-end latency: api write -> handler committed")
    rates = (100,) if ctx.smoke else (100, 500, 2000)
    seconds = 2.0 if ctx.smoke else 15.0
    result.settings.update(
        {
            "rates_events_per_second": list(rates),
            "seconds_per_rate": seconds,
            "processes": "1 api + 1 relay + 1 consumer (split roles), bench generator + listener",
            "request": "POST /v1/tasks/{id}/urgency, one ~1 KB event per request, 500 keys",
            "clock": "request sent (generator) -> NOTIFY from an AFTER UPDATE trigger, delivered at commit",
            "relay_defaults": relay_defaults(),
            "polling_mode": "SMARTFLOW_RELAY_LISTEN_NOTIFY=false (no LISTEN; fallback poll only)",
            "warm_up_seconds_per_rate": WARM_UP_SECONDS,
            "quiet_before_each_rate": f"< {QUIET_BUSY_CORES} cores busy over {QUIET_WINDOW_SECONDS:.0f} s,"
            " waited for at most"
            f" {QUIET_LIMIT_SECONDS:.0f} s",
            "max_in_flight": MAX_IN_FLIGHT,
            "pid": os.getpid(),
        }
    )
    runs: list[dict[str, Any]] = []
    for mode in ("notify", "polling"):
        runs += await one_mode(ctx, mode, rates, seconds)
    sat = saturation(runs)
    result.figures = {"runs": runs, "saturation": sat}
    at500 = next((r for r in runs if r["mode"] == "notify" and r["rate"] == 500), None)
    p50 = at500["e2e_ms"]["p50"] if at500 else None
    p99 = at500["e2e_ms"]["p99"] if at500 else None
    result.targets.append(Target("e2e p50 at 500 ev/s (notify)", 20.0, "<=", "ms", p50))
    result.targets.append(Target("e2e p99 at 500 ev/s (notify)", 100.0, "<=", "ms", p99))
    result.targets.append(
        Target(
            "saturation of 1 api + 1 relay + 1 consumer (notify)",
            1500.0,
            ">=",
            "ev/s",
            sat["sustained_events_per_second"] if sat else None,
            f"offered {sat['offered_events_per_second']} ev/s" if sat else "",
        )
    )
    return result
