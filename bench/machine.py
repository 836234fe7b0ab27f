"""What a result was measured on: the machine, its load, and the versions of every component.

Every section's JSON carries :func:`describe_machine` and :func:`versions`, so a figure never
travels without the hardware and software it came from.
"""

from __future__ import annotations

import os
import platform
import sys
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
