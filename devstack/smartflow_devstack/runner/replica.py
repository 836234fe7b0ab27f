"""One local process standing in for one pod, with a kubelet-like lifecycle: start, readiness
probes, restart with backoff after a crash (``restartPolicy: Always``), SIGTERM then SIGKILL after
the grace period. Owned and driven by :mod:`.loop`, one pass at a time; nothing here blocks.

Each process runs in a session of its own (SIGTERM/SIGKILL reach its whole process group, as
stopping a container would) and, on Linux, is told to get SIGTERM if the runner dies, so a killed
runner leaves no replica behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from .spec import ProcessSpec

log = logging.getLogger(__name__)

# Replica states, named like a container's (reasons are the kubelet's where one exists).
WAITING = "Waiting"
RUNNING = "Running"
TERMINATING = "Terminating"
REASON_STARTING = "ContainerCreating"
REASON_CRASH_LOOP = "CrashLoopBackOff"
REASON_RUN_ERROR = "RunContainerError"

BACKOFF_RESET_SECONDS = 60.0  # a process that ran this long before crashing restarts at once

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Revision:
    """Which Deployment (uid) and template (hash) a replica was made from."""

    uid: str
    template_hash: str


def crash_backoff(crashes: int, *, base: float, cap: float) -> float:
    """Delay before restart number ``crashes`` in a row: ``base``, doubled each time, at most ``cap``."""
    if crashes <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(crashes - 1, 30)))


class Replica:
    """A replica slot: its name and log survive restarts of its process; its ports are picked
    afresh at each start (a port kept through a long backoff could be taken meanwhile)."""

    def __init__(self, *, name: str, index: int, seq: int, revision: Revision, log_path: Path) -> None:
        self.name = name
        self.index = index
        self.seq = seq
        self.revision = revision
        self.log_path = log_path
        self.state = WAITING
        self.reason: str | None = REASON_STARTING
        self.message = ""
        self.restarts = 0
        self.spec: ProcessSpec | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.next_start = 0.0
        self.crashes = 0  # in a row, for the backoff
        self.ready = False
        self.ready_since: float | None = None
        self._successes = 0
        self._failures = 0
        self.kill_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def admin_port(self) -> int | None:
        return self.spec.admin_port if self.spec is not None and self.process is not None else None

    @property
    def http_port(self) -> int | None:
        return self.spec.http_port if self.spec is not None and self.process is not None else None

    def available(self, now: float, min_ready_seconds: float) -> bool:
        return self.ready_since is not None and now - self.ready_since >= min_ready_seconds

    def due(self, now: float) -> bool:
        return self.state == WAITING and now >= self.next_start

    def launch(self, spec: ProcessSpec, *, cwd: Path, now: float) -> None:
        """Start the process; an exec failure is recorded like a kubelet's ``RunContainerError``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(f"--- local runner: {stamp} starting {self.name}: {' '.join(spec.argv)}\n".encode())
            out.flush()
            try:
                self.process = subprocess.Popen(
                    list(spec.argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=dict(spec.env),
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent
                    if sys.platform == "linux"
                    else None,  # why: see _die_with_parent
                )
            except OSError as error:
                self.fail(
                    REASON_RUN_ERROR, f"cannot start {spec.argv[0]}: {error}", now=now, base=1.0, cap=1.0
                )
                return
        self.spec = spec
        self.state, self.reason, self.message = RUNNING, None, ""
        self.started_at = now
        self._reset_probe()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def fail(self, reason: str, message: str, *, now: float, base: float, cap: float) -> None:
        """Could not start: wait (with backoff) and try again."""
        self.crashes += 1
        self.state, self.reason, self.message = WAITING, reason, message
        self.next_start = now + crash_backoff(self.crashes, base=base, cap=cap)

    def check_exit(self, *, now: float, base: float, cap: float) -> int | None:
        """If the running process exited, count a restart and schedule it; returns its exit code."""
        if self.state != RUNNING or self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        _kill_group(self.process.pid)  # whatever it left behind in its group goes with it
        self.process = None
        self.restarts += 1
        if now - self.started_at >= BACKOFF_RESET_SECONDS:
            self.crashes = 0
        self.crashes += 1
        self.state, self.reason = WAITING, REASON_CRASH_LOOP
        self.message = f"exited with code {code}; restart {self.restarts}"
        self.next_start = now + crash_backoff(self.crashes, base=base, cap=cap)
        self._reset_probe()
        log.warning("%s %s", self.name, self.message)
        return code

    def terminate(self, *, now: float, grace_seconds: float) -> None:
        """SIGTERM now, SIGKILL once ``grace_seconds`` have passed (see :meth:`finish`)."""
        if self.state == TERMINATING:
            return
        self.state, self.reason, self.message = TERMINATING, None, ""
        self._reset_probe()
        if self.process is None:
            return
        self.kill_at = now + grace_seconds
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        log.info("stopping %s (pid %d), grace %.0fs", self.name, self.process.pid, grace_seconds)

    def finish(self, now: float) -> bool:
        """Progress a termination; true once the process (and its group) is gone."""
        if self.process is None:
            return True
        if self.process.poll() is not None:
            _kill_group(self.process.pid)
            self.process = None
            return True
        if self.kill_at is not None and now >= self.kill_at:
            log.warning("%s did not stop within its grace period: SIGKILL", self.name)
            _kill_group(self.process.pid)
            self.kill_at = None  # sent; the next pass reaps it
        return False

    def observe_probe(self, ok: bool, now: float) -> None:
        """Readiness as the kubelet counts it: ``successThreshold`` / ``failureThreshold`` in a row."""
        probe = self.spec.readiness if self.spec is not None else None
        success, failure = (probe.success_threshold, probe.failure_threshold) if probe else (1, 1)
        if ok:
            self._successes, self._failures = self._successes + 1, 0
            if not self.ready and self._successes >= success:
                self.ready, self.ready_since = True, now
        else:
            self._successes, self._failures = 0, self._failures + 1
            if self.ready and self._failures >= failure:
                self.ready, self.ready_since = False, None

    def _reset_probe(self) -> None:
        self.ready, self.ready_since, self._successes, self._failures = False, None, 0, 0


async def probe(replica: Replica, *, session: aiohttp.ClientSession, now: float) -> bool | None:
    """One readiness check of a running replica; ``None`` while its initial delay lasts.

    Without a readiness probe a running process is ready, as a container is.
    """
    spec = replica.spec
    if replica.state != RUNNING or spec is None:
        return None
    readiness = spec.readiness
    if readiness is None:
        return True
    if now - replica.started_at < readiness.initial_delay_seconds:
        return None
    port = spec.probe_port()
    try:
        if readiness.kind == "tcp":
            _, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), timeout=readiness.timeout_seconds
            )
            writer.close()
            return True
        url = f"http://127.0.0.1:{port}{readiness.path}"
        timeout = aiohttp.ClientTimeout(total=readiness.timeout_seconds)
        async with session.get(url, timeout=timeout, allow_redirects=False) as response:
            return 200 <= response.status < 400
    except (OSError, TimeoutError, aiohttp.ClientError):
        return False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _libc_prctl() -> Callable[[int, int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the runner (its parent) dies."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
