"""What a result was measured on: the machine, its load, and the versions of every component.

Every section's JSON carries :func:`describe_machine` and :func:`versions`, so a figure never
travels without the hardware and software it came from.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any


def _meminfo_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe_machine() -> dict[str, Any]:
    total = _meminfo_kib("MemTotal")
    available = _meminfo_kib("MemAvailable")
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mib": None if total is None else total // 1024,
        "memory_available_mib": None if available is None else available // 1024,
        "kernel": platform.release(),
        "load_average_1_5_15": load_average(),
    }


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(*, postgres: str | None = None, kube: str | None = None) -> dict[str, Any]:
    """Library versions from the installed distributions; server versions as the servers reported them."""
    from smartflow_devstack import versions as pinned

    return {
        "python": sys.version.split()[0],
        "kafka": pinned.KAFKA_VERSION,
        "postgres": postgres,
        "kube": kube or pinned.KUBE_VERSION,
        "aiokafka": _package("aiokafka"),
        "asyncpg": _package("asyncpg"),
        "aiohttp": _package("aiohttp"),
        "kopf": _package("kopf"),
        "kubernetes_client": _package("kubernetes"),
    }


# A measurement starts on a quiet machine: the idle stack (control plane, node, idle runtimes)
# keeps about 0.2-0.3 of the 2 cores busy; work left by an earlier section (a namespace of 4,000
# Deployments being garbage-collected kept the apiserver at ~1 core for minutes) would be measured
# as the pipeline's latency. Bounded: after the limit the run goes ahead and its result says so.
QUIET_BUSY_CORES = 0.5
QUIET_LIMIT_SECONDS = 120.0
QUIET_WINDOW_SECONDS = 3.0


def cpu_times() -> tuple[float, float]:
    """The machine's (busy, total) CPU seconds since boot, all cores (``/proc/stat``; idle and
    iowait count as not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - values[3] - values[4]) / ticks, total / ticks


def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Cores busy on average between two :func:`cpu_times` readings (2.0 = two cores busy)."""
    busy, total = after[0] - before[0], after[1] - before[1]
    cores = os.cpu_count() or 1
    return round(busy / total * cores, 3) if total > 0 else 0.0


async def wait_quiet(
    *, max_busy_cores: float, window: float = QUIET_WINDOW_SECONDS, limit: float = QUIET_LIMIT_SECONDS
) -> dict[str, float]:
    """Wait until the machine is quiet: fewer than ``max_busy_cores`` busy over ``window`` seconds
    (e.g. a garbage collection of thousands of objects an earlier section left to the control
    plane, or a node still starting). Gives up after ``limit`` seconds: a measurement on a
    machine that never settles goes ahead, and says so. Returns the seconds waited and the busy
    cores of the last window."""
    started = time.monotonic()
    while True:
        before = cpu_times()
        await asyncio.sleep(window)
        busy = busy_cores(before, cpu_times())
        waited = time.monotonic() - started
        if busy < max_busy_cores or waited >= limit:
            quiet = busy < max_busy_cores
            return {"waited_seconds": round(waited, 1), "busy_cores_before": busy, "quiet": quiet}


async def wait_quiet_before_measuring(*, smoke: bool) -> dict[str, float]:
    """:func:`wait_quiet` with the bench's bound; a smoke run (inside ``make test``, beside other
    tests, so never quiet) only takes one short reading."""
    return await wait_quiet(
        max_busy_cores=QUIET_BUSY_CORES,
        window=1.0 if smoke else QUIET_WINDOW_SECONDS,
        limit=0.0 if smoke else QUIET_LIMIT_SECONDS,
    )
