"""The node's cgroup root (cgroup v1, one directory per controller), created and removed by the stack.

kubelet puts every pod under ``cgroupRoot``; making that root ours means ``make down`` can kill
what is left in it and remove it, leaving no cgroup behind on the host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from . import network

CGROUP_FS = Path("/sys/fs/cgroup")


def _controllers() -> list[Path]:
    if not CGROUP_FS.exists():
        return []
    return [path for path in CGROUP_FS.iterdir() if path.is_dir() and not path.is_symlink()]


def create() -> None:
    for controller in _controllers():
        root = controller / network.CGROUP_ROOT
        root.mkdir(exist_ok=True)
        if controller.name == "cpuset":
            # A new cpuset starts empty; a task cannot join it until cpus and mems are set.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (root / knob).write_text((controller / knob).read_text())


def _tree(root: Path) -> list[Path]:
    """Directories under ``root``, deepest first."""
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        found.extend(Path(dirpath) / name for name in dirnames)
    return [*sorted(found, key=lambda path: len(path.parts), reverse=True), root]


def remove() -> list[str]:
    """Kill every task left under the root and remove it; returns what could not be removed."""
    left: list[str] = []
    for controller in _controllers():
        root = controller / network.CGROUP_ROOT
        if not root.exists():
            continue
        for _ in range(50):
            pids: set[int] = set()
            for group in _tree(root):
                with contextlib.suppress(FileNotFoundError):
                    pids.update(int(p) for p in (group / "cgroup.procs").read_text().split())
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for group in _tree(root):
            for _ in range(20):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                left.append(str(group))
    return left
