"""Start and stop the local runner as a background process: what ``make demo`` and the tests use.

    runner = start_runner(kubeconfig=..., state=Path(".local/demo/runner"), namespaces=["demo"])
    runner.wait_ready()
    urls = endpoints.ready_urls(runner.endpoints(), "demo", "shop-api")
    ...
    runner.stop()   # SIGTERM: the runner stops every replica, then exits

The runner runs ``smartflow-devstack runner`` (this interpreter), detached, logging to
``<state>/logs/runner.log``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..process import alive, spawn, stop
from . import endpoints
from .errors import RunnerError


@dataclass(frozen=True)
class RunnerProcess:
    pid: int
    state: Path

    @property
    def log(self) -> Path:
        return self.state / "logs" / "runner.log"

    def endpoints(self) -> dict[str, Any] | None:
        """The runner's latest ``endpoints.json`` (see :mod:`.endpoints`)."""
        document = endpoints.load(self.state)
        if document is None or document.get("runner_pid") != self.pid:
            return None
        return document

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the runner has made its first pass (its endpoints.json exists)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(self.pid):
                raise RunnerError(f"the local runner exited during start-up; see {self.log}")
            if self.endpoints() is not None:
                return
            time.sleep(0.1)
        raise RunnerError(f"the local runner made no pass within {timeout:.0f}s; see {self.log}")

    def alive(self) -> bool:
        return alive(self.pid)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM and wait (the runner stops its replicas first); SIGKILL after ``timeout``."""
        stop(self.pid, timeout=timeout)


def start_runner(
    *,
    kubeconfig: str,
    state: Path,
    namespaces: Sequence[str] = (),
    image_map: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    cwd: Path | None = None,
) -> RunnerProcess:
    argv = [sys.executable, "-m", "smartflow_devstack.cli", "runner", "--kubeconfig", kubeconfig]
    argv += ["--state", str(state)]
    for namespace in namespaces:
        argv += ["--namespace", namespace]
    for entry in image_map:
        argv += ["--image-map", entry]
    argv += list(extra_args)
    state.mkdir(parents=True, exist_ok=True)
    pid = spawn(argv, log=state / "logs" / "runner.log", cwd=cwd)
    return RunnerProcess(pid=pid, state=state)
