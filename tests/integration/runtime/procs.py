"""Runtime services as separate OS processes, for tests that kill them (SIGKILL) or stop them (SIGTERM).

Usage: ``python -m tests.integration.runtime.procs relay|memory-worker --dsn ... [options]``.
Prints ``ready`` once started; on SIGTERM stops the service gracefully and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import asyncpg
from prometheus_client import CollectorRegistry

from smartflow_runtime.memory.store import Fact
from smartflow_runtime.memory.worker import MemoryWorker
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox.model import BackoffPolicy
from smartflow_runtime.outbox.relay import Relay


class SlowExtractor:
    """Takes ``seconds`` per job, so a test can kill the worker while a job is in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def extract(self, text: str) -> Sequence[Fact]:
        print("extracting", flush=True)
        await asyncio.sleep(self.seconds)
        return [Fact(kind="slow", text=text)]


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("service", choices=["relay", "memory-worker"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--id", required=True)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--extract-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    pool = await asyncpg.create_pool(args.dsn, min_size=1, max_size=4)
    metrics = RuntimeMetrics(CollectorRegistry())
    service: Relay | MemoryWorker
    if args.service == "relay":
        service = Relay(
            pool=pool,
            bootstrap_servers=args.bootstrap,
            metrics=metrics,
            relay_id=args.id,
            batch_size=args.batch,
            lease_seconds=args.lease,
            poll_interval_seconds=0.5,
            backoff=BackoffPolicy(0.1, 0.5),
            producer_options={"linger_ms": args.linger_ms},
        )
    else:
        service = MemoryWorker(
            pool=pool,
            metrics=metrics,
            extractor=SlowExtractor(args.extract_seconds),
            worker_id=args.id,
            lease_seconds=args.lease,
            poll_interval_seconds=0.2,
        )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await service.start()
    print("ready", flush=True)
    await stop.wait()
    await service.stop()
    await pool.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
