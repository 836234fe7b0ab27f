"""Runtime processes started by the bench (``smartflow-runtime run --role R`` via :mod:`bench.launch`),
and CPU / memory readings of processes from ``/proc``.

Every process binds to 127.0.0.1 on free ports, logs to ``.local/bench/logs``, and is stopped
(SIGTERM, then SIGKILL after a grace period) by the pid this module recorded; nothing else is
ever signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from smartflow_devstack.process import free_port
from smartflow_devstack.versions import REPO_ROOT

from .servers import WORK_ROOT

LOG_DIR = WORK_ROOT / "logs"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_queue_seconds(pid: int) -> float:
    """Seconds the threads of one process spent runnable but waiting for a core (the second field
    of each thread's ``/proc/PID/task/TID/schedstat``; 0 when it is gone). Threads that ended
    before the reading are not counted."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def peak_rss_mib(pid: int) -> float | None:
    """``VmHWM``: the kernel's record of the process's peak resident set, in MiB."""
    return _status_kib(pid, "VmHWM")


def rss_mib(pid: int) -> float | None:
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def postgres_backends(database: str, exclude: Iterable[int] = ()) -> list[int]:
    """Pids of PostgreSQL backends serving ``database`` (their title names the database), except
    ``exclude`` (the bench's own connections, whose work is not the product's)."""
    skip = set(exclude)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title and int(entry.name) not in skip:
            found.append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    """CPU seconds spent by groups of processes between :meth:`start` and :meth:`stop`."""

    groups: dict[str, list[int]] = field(default_factory=dict)
    _before: dict[int, float] = field(default_factory=dict)
    _waits_before: dict[int, float] = field(default_factory=dict)
    _self_before: float = 0.0
    _self_wait_before: float = 0.0
    result: dict[str, float] = field(default_factory=dict)
    # Seconds each group was runnable but waiting for a core (run queue), between start and stop.
    waits: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        pids = [pid for pids in self.groups.values() for pid in pids]
        self._before = {pid: cpu_seconds(pid) for pid in pids}
        self._waits_before = {pid: run_queue_seconds(pid) for pid in pids}
        self._self_before = time.process_time()
        self._self_wait_before = run_queue_seconds(os.getpid())

    def add(self, group: str, pids: Iterable[int], *, started_during_run: bool = False) -> None:
        """Count more processes. Ones that already ran count from now; ones ``started_during_run``
        (e.g. database backends a pool opened meanwhile) count all their CPU time."""
        for pid in pids:
            if pid not in self._before:
                self._before[pid] = 0.0 if started_during_run else cpu_seconds(pid)
                self._waits_before[pid] = 0.0 if started_during_run else run_queue_seconds(pid)
                self.groups.setdefault(group, []).append(pid)

    def stop(self) -> dict[str, float]:
        self.result = {
            group: round(sum(max(0.0, cpu_seconds(p) - self._before.get(p, 0.0)) for p in pids), 3)
            for group, pids in self.groups.items()
        }
        self.result["bench_process"] = round(time.process_time() - self._self_before, 3)
        self.waits = {
            group: round(
                sum(max(0.0, run_queue_seconds(p) - self._waits_before.get(p, 0.0)) for p in pids), 3
            )
            for group, pids in self.groups.items()
        }
        self.waits["bench_process"] = round(run_queue_seconds(os.getpid()) - self._self_wait_before, 3)
        return self.result


@dataclass
class RuntimeProcess:
    """One ``smartflow-runtime run --role ROLE`` process with its own admin (and HTTP) port."""

    role: str
    env: Mapping[str, str]
    profile: Path | None = None
    admin_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOG_DIR / f"{self.role}-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "bench.launch"]
        if self.profile is not None:
            argv += ["--profile", str(self.profile)]
        argv += ["--", "run", "--role", self.role]
        env = {
            **os.environ,
            "SMARTFLOW_BIND_HOST": "127.0.0.1",
            "SMARTFLOW_ADMIN_PORT": str(self.admin_port),
            "SMARTFLOW_HTTP_PORT": str(self.http_port),
            "SMARTFLOW_LOG_LEVEL": "WARNING",
            "SMARTFLOW_LOG_FORMAT": "text",
            "SMARTFLOW_SHUTDOWN_GRACE_SECONDS": "10",
            **self.env,
        }
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    async def wait_ready(self, within: float = 60.0) -> None:
        """Until ``/readyz`` answers 200; fails early (with the log's tail) if the process exits."""
        deadline = time.monotonic() + within
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"{self.role} process exited during start-up:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.role} process not ready after {within:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (the role drains), SIGKILL after ``grace``; returns the exit code."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        return proc.returncode


async def start_all(processes: Iterable[RuntimeProcess], within: float = 60.0) -> list[RuntimeProcess]:
    started = list(processes)
    for proc in started:
        proc.start()
    await asyncio.gather(*(p.wait_ready(within) for p in started))
    return started


async def stop_all(processes: Iterable[RuntimeProcess]) -> list[int | None]:
    return list(await asyncio.gather(*(p.stop() for p in processes)))


@contextlib.asynccontextmanager
async def running(
    processes: Iterable[RuntimeProcess], within: float = 60.0
) -> AsyncIterator[list[RuntimeProcess]]:
    """Start the processes, wait until all are ready, and always stop them on the way out."""
    started = list(processes)
    try:
        for proc in started:
            proc.start()
        await asyncio.gather(*(p.wait_ready(within) for p in started))
        yield started
    finally:
        await stop_all(started)
