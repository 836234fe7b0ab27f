"""Starting, waiting for and stopping the server processes of the local stack.

Servers run detached in their own session so that ``make up`` can return while they keep
running; every one of them writes to a log file in the stack's ``logs/`` folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import StackError


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports. Each socket stays bound until all are drawn: one
    :func:`free_port` after another may hand out the same port twice (a CI run saw a broker
    refuse its config with two listeners on one port)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start a detached server process and return its pid; output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    if user is not None:
        # PostgreSQL refuses to run as root; drop to its own system user.
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def pause(pid: int, *, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and return once every one of its threads has stopped.

    ``kill`` only queues the stop: one thread takes it and then stops the others, and on a busy
    machine a thread may run on for a while. A CI run saw a broker answer a request sent just
    after its SIGSTOP; callers that then expect silence must wait for the stop to land.
    """
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not set(thread_states(pid)) <= {"T", "t", "Z", "X"}:  # stopped (or ended)
        if time.monotonic() > deadline:
            raise StackError(f"process {pid} not stopped {timeout:.0f}s after SIGSTOP")
        time.sleep(0.01)


def thread_states(pid: int) -> list[str]:
    """The scheduler state letter of each of ``pid``'s threads (``/proc/PID/task/TID/stat``)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            # The state follows the command name, which may itself hold ") ".
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
    return states


def wait_until(
    check: Callable[[], bool], *, what: str, timeout: float, pid: int | None = None, log: Path | None = None
) -> None:
    """Poll ``check`` until it is true; fail early if ``pid`` died, with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise StackError(f"{what} exited during start-up{_tail(log)}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise StackError(f"{what} not ready after {timeout:.0f}s{_tail(log)}")


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def stop(pid: int, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Stop a server (its whole process group) politely, then forcefully."""
    if not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)


def run(argv: Sequence[str], *, what: str, env: dict[str, str] | None = None, user: str | None = None) -> str:
    """Run a short command to completion; a non-zero exit is a StackError with its output."""
    command = list(argv)
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


def _tail(log: Path | None, lines: int = 25) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log}:\n" + "\n".join(text)
