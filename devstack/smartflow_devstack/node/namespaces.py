"""The node's network and mount namespaces, held open by an anchor process.

``ip netns exec`` remounts /sys and hides the cgroup mounts, so we do not use it: an anchor
(``unshare --net --mount``) holds both namespaces, the stack prepares them once (veth, addresses,
a fresh sysfs with the cgroup tree bound back, private /run, /var and /tmp from the state dir,
shadow files over host-wide /proc/sys knobs), and node processes enter them with ``nsenter``.
When the last process inside is gone the kernel drops both namespaces, their mounts, the pods'
namespaces and the veth pair (with the host's routes through it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import StackError
from ..process import alive, run, spawn, wait_until
from . import network
from .config import KERNEL_TUNABLES, NodeDirs

# Host directories the node sees replaced by folders of the state dir: kubelet and containerd write
# there whatever no setting moves (/var/log/containers, the CNI cache in /var/lib/cni, shim sockets
# and runc state in /run).
HIDDEN = (Path("/run"), Path("/var/log"), Path("/var/lib/cni"))
# A mount point the host may lack; created empty when missing and removed again when empty.
CNI_CACHE = Path("/var/lib/cni")


def enter(anchor_pid: int) -> list[str]:
    """The command prefix that runs a program inside the node's namespaces."""
    return ["nsenter", "-t", str(anchor_pid), "--net", "--mount", "--"]


def ctr(anchor_pid: int, socket: Path, *args: str, what: str) -> str:
    """containerd's own client on the node's CRI namespace (``k8s.io``), run inside the mount
    namespace: its socket and fifos live there."""
    return run([*enter(anchor_pid), "ctr", "--address", str(socket), "-n", "k8s.io", *args], what=what)


def netns_path(anchor_pid: int) -> str:
    return f"/proc/{anchor_pid}/ns/net"


def create(dirs: NodeDirs, *, log: Path) -> int:
    """Start the anchor, wire the veth and prepare the mounts; returns the anchor's pid."""
    if Path(f"/sys/class/net/{network.HOST_LINK}").exists():
        raise StackError(
            f"host link {network.HOST_LINK} exists: another local node is running (stop it with `make down`)"
        )
    home = dirs.home.resolve()
    for hidden in HIDDEN:
        if home.is_relative_to(hidden):
            raise StackError(
                f"the stack's state dir {home} is under {hidden}, which the node replaces; use another"
            )
    for path in (dirs.var / "cni", dirs.var / "log", dirs.run, dirs.shadow, dirs.tmp):
        path.mkdir(parents=True, exist_ok=True)
    CNI_CACHE.mkdir(exist_ok=True)
    for knob, value in KERNEL_TUNABLES.items():
        shadow = dirs.shadow / knob.replace("/", ".")
        shadow.write_text(value + "\n")
    anchor = spawn(["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"], log=log)
    own = os.stat("/proc/self/ns/net").st_ino
    wait_until(
        lambda: os.stat(netns_path(anchor)).st_ino != own,
        what="node namespace anchor",
        timeout=10,
        pid=anchor,
    )
    try:
        run(
            [
                "ip",
                "link",
                "add",
                network.HOST_LINK,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                str(anchor),
            ],
            what="veth",
        )
        run(
            ["ip", "addr", "add", f"{network.HOST_SIDE_IP}/{network.LINK_PREFIX}", "dev", network.HOST_LINK],
            what="host link address",
        )
        run(["ip", "link", "set", network.HOST_LINK, "up"], what="host link up")
        run([*enter(anchor), "sh", "-euc", _inside_script(dirs)], what="node namespace setup")
        for cidr in (network.POD_CIDR, network.SERVICE_CIDR):
            run(["ip", "route", "add", cidr, "via", network.NODE_IP, "dev", network.HOST_LINK], what="route")
    except BaseException:
        destroy(anchor)
        raise
    return anchor


def _inside_script(dirs: NodeDirs) -> str:
    cgroup_tmp = dirs.home / "cgroup-bind"
    lines = [
        "mount --make-rprivate /",
        f"mkdir -p {cgroup_tmp}",
        f"mount --rbind /sys/fs/cgroup {cgroup_tmp}",
        # A sysfs of this network namespace (CNI and kubelet read /sys/class/net), the cgroup tree back.
        "mount -t sysfs sysfs /sys",
        f"mount --rbind {cgroup_tmp} /sys/fs/cgroup",
        f"umount -l {cgroup_tmp}",
    ]
    for knob in KERNEL_TUNABLES:
        lines.append(f"mount --bind {dirs.shadow / knob.replace('/', '.')} /proc/sys/{knob}")
    lines += [
        f"mount --bind {dirs.run} /run",
        f"mount --bind {dirs.var / 'log'} /var/log",
        f"mount --bind {dirs.var / 'cni'} {CNI_CACHE}",
        "ip link set lo up",
        f"ip addr add {network.NODE_IP}/{network.LINK_PREFIX} dev eth0",
        "ip link set eth0 up",
        # Both are per network namespace: the host's values are not touched.
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
    ]
    return "\n".join(lines)


def processes_inside(anchor_pid: int) -> list[int]:
    """Every process sharing the anchor's mount namespace (node daemons and containerd shims)."""
    try:
        target = os.stat(f"/proc/{anchor_pid}/ns/mnt").st_ino
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == anchor_pid:
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            if os.stat(f"/proc/{entry}/ns/mnt").st_ino == target:
                found.append(int(entry))
    return found


def destroy(anchor_pid: int) -> None:
    """Kill everything inside the namespaces, then the anchor: the kernel removes the rest."""
    for _ in range(50):
        pids = processes_inside(anchor_pid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    if alive(anchor_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(anchor_pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(anchor_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # The veth goes when the namespace does; wait for it so a next start finds the name free.
    deadline = time.monotonic() + 10
    while Path(f"/sys/class/net/{network.HOST_LINK}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if Path(f"/sys/class/net/{network.HOST_LINK}").exists():
        subprocess.run(["ip", "link", "del", network.HOST_LINK], check=False, capture_output=True)
    with contextlib.suppress(OSError):
        CNI_CACHE.rmdir()  # only when empty: nothing of ours was ever written to the host's copy
