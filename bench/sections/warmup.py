"""Before the first section that uses Kafka: warm the broker until its CPU per message settles.

Not a measurement of the product. A broker JVM a few minutes old runs much of its request path
interpreted or in early JIT tiers: in a full run started right after ``make up`` (2026-12-02) the
broker spent 25 ms CPU per 1k relayed events in the relay section and 0.75 ms per event at
500 ev/s in the latency section, against 5 ms and 0.29 ms in the same sections re-run 15 minutes
later; the e2e p50 at 500 ev/s read 33 ms, then 12 ms. Each section's own short warm-up did not
cover that. So this step sends bursts through the broker on the paths the sections use (bulk
produce, one-message produce requests awaited one by one, a group consumer committing after every
fetch) and measures the broker's CPU per 1k messages of each burst; it stops once two bursts in a
row differ by less than ``SETTLED``, or after ``LIMIT_SECONDS``. The burst costs go into
``results/warmup.json`` and the report, so a run on a broker that never settled says so.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from smartflow_runtime.outbox.kafka import build_producer

from ..context import Context
from ..kafka_tools import group_consumer
from ..procs import cpu_seconds
from ..results import Result

BULK, SINGLE, SENDERS = 20_000, 2_000, 10  # messages per burst: bulk sends, awaited one by one, by N tasks
SMOKE_BULK, SMOKE_SINGLE = 500, 50
PAYLOAD = b"w" * 1000  # the sections' ~1 KB events
SETTLED = 0.15  # two bursts in a row within 15 % of each other
LIMIT_SECONDS, SMOKE_LIMIT_SECONDS = 120.0, 10.0
PARTITIONS = 6


def settled(costs: list[float]) -> bool:
    """The last two bursts' CPU per 1k messages are within ``SETTLED`` of each other."""
    if len(costs) < 2 or costs[-2] <= 0:
        return False
    return abs(costs[-1] - costs[-2]) / costs[-2] < SETTLED


async def burst(
    producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str, bulk: int, single: int
) -> int:
    """One burst; returns the messages it sent (all of them read back and committed)."""
    futures = [await producer.send(topic, value=PAYLOAD, key=str(i).encode()) for i in range(bulk)]
    await asyncio.gather(*futures)

    async def sender(n: int, offset: int) -> None:
        for i in range(n):
            await producer.send_and_wait(topic, value=PAYLOAD, key=str(offset + i).encode())

    per = single // SENDERS
    await asyncio.gather(*(sender(per, k * per) for k in range(SENDERS)))
    sent, read = bulk + per * SENDERS, 0
    deadline = time.monotonic() + 60.0
    while read < sent:
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up: read {read} of {sent} messages back within 60 s")
        batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
        read += sum(len(records) for records in batches.values())
        if batches:
            await consumer.commit()
    return sent


async def run(ctx: Context) -> Result:
    result = ctx.result("warmup", "Broker warm-up before the sections (not a measurement)")
    bulk, single = (SMOKE_BULK, SMOKE_SINGLE) if ctx.smoke else (BULK, SINGLE)
    limit = SMOKE_LIMIT_SECONDS if ctx.smoke else LIMIT_SECONDS
    result.settings.update(
        {
            "messages_per_burst": {"bulk": bulk, "one_by_one": single, "senders": SENDERS},
            "settled_when_within": SETTLED,
            "limit_seconds": limit,
        }
    )
    broker = ctx.servers.kafka.pid
    costs: list[float] = []
    began = time.monotonic()
    async with ctx.servers.topic("warmup", partitions=PARTITIONS) as topic:
        producer = build_producer(ctx.servers.bootstrap_servers, "bench-warmup", None)
        consumer = group_consumer(ctx.servers.bootstrap_servers, topic, "bench-warmup")
        await producer.start()
        await consumer.start()
        try:
            while not settled(costs) and time.monotonic() - began < limit:
                before = cpu_seconds(broker)
                sent = await burst(producer, consumer, topic, bulk, single)
                costs.append(round((cpu_seconds(broker) - before) * 1e6 / sent, 1))
                ctx.say(f"warm-up: burst {len(costs)}: broker {costs[-1]} ms CPU per 1k messages")
        finally:
            await consumer.stop()
            await producer.stop()
    result.figures = {
        "broker_cpu_ms_per_1k_messages_by_burst": costs,
        "settled": settled(costs),
        "seconds": round(time.monotonic() - began, 1),
    }
    return result
