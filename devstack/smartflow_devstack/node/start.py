"""Start and stop the node: namespaces, forwarders, containerd, kubelet and kube-proxy.

Called by the stack (``make up``) and the pytest ``node`` fixture after PostgreSQL, Kafka and the
control plane are up. Every daemon runs inside the node's namespaces (``namespaces.enter``) and
logs to the stack's ``logs/`` folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import images, kube
from ..errors import StackError
from ..process import run, spawn, stop, wait_until
from ..versions import kube_bin
from . import cgroups, config, namespaces, network


@dataclass(frozen=True)
class NodeInfo:
    anchor_pid: int
    forwarder_pid: int
    containerd_pid: int
    kubelet_pid: int
    proxy_pid: int
    home: str
    node_ip: str = network.NODE_IP

    def daemon_pids(self) -> list[int]:
        return [self.proxy_pid, self.kubelet_pid, self.containerd_pid, self.forwarder_pid, self.anchor_pid]


def start(state: Path, *, control_plane: kube.KubeInfo, forward_ports: list[int]) -> NodeInfo:
    """Bring the node up and wait until it is Ready; ``forward_ports`` are host-loopback server ports."""
    for binary in ("kubelet", "kube-proxy"):
        if not kube_bin(binary).exists():
            raise StackError(f"{kube_bin(binary)} is missing; run `make deps`")
    _require_packages()
    dirs = config.NodeDirs(state / "node")
    logs = state / "logs"
    for path in (
        dirs.containerd_root,
        dirs.containerd_state,
        dirs.cni_conf,
        dirs.cni_ipam,
        dirs.kubelet_root,
        dirs.volume_plugins,
        dirs.pod_logs,
    ):
        path.mkdir(parents=True, exist_ok=True)
    env = {"TMPDIR": str(dirs.tmp)}
    cgroups.create()
    anchor = namespaces.create(dirs, log=logs / "node-anchor.log")
    started: list[int] = [anchor]
    try:
        api_port = urlsplit(control_plane.server).port
        assert api_port is not None
        forwarder = spawn(
            [
                sys.executable,
                "-m",
                "smartflow_devstack.node.forward",
                "--netns",
                namespaces.netns_path(anchor),
                "--address",
                network.NODE_IP,
                *[f"--port={p}" for p in [api_port, *forward_ports]],
            ],
            log=logs / "node-forward.log",
        )
        started.append(forwarder)
        wait_until(
            lambda: "forwarding" in (logs / "node-forward.log").read_text(),
            what="forwarder",
            timeout=10,
            pid=forwarder,
            log=logs / "node-forward.log",
        )

        (dirs.home / "containerd.toml").write_text(config.containerd_config(dirs))
        (dirs.cni_conf / "10-smartflow.conflist").write_text(config.cni_config(dirs))
        containerd_log = logs / "containerd.log"
        containerd = spawn(
            [*namespaces.enter(anchor), "containerd", "--config", str(dirs.home / "containerd.toml")],
            log=containerd_log,
            env=env,
        )
        started.append(containerd)
        wait_until(
            lambda: dirs.containerd_socket.exists(),
            what="containerd",
            timeout=30,
            pid=containerd,
            log=containerd_log,
        )
        images.import_into_node(images.node_base_archives(), anchor_pid=anchor, socket=dirs.containerd_socket)

        server = f"https://{network.NODE_IP}:{api_port}"
        kubelet_kubeconfig = dirs.home / "kubelet.kubeconfig"
        kube.write_kubeconfig(
            kubelet_kubeconfig,
            server=server,
            ca_file=control_plane.ca_file,
            token=kube.NODE_TOKEN,
            user=f"system:node:{network.NODE_NAME}",
        )
        resolv = dirs.home / "resolv.conf"
        # Pods resolve nothing: their DNS goes to their own loopback, where nothing listens.
        resolv.write_text("nameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n")
        (dirs.home / "kubelet.json").write_text(
            config.kubelet_config(dirs, client_ca=Path(control_plane.ca_file), resolv_conf=resolv)
        )
        kubelet_log = logs / "kubelet.log"
        kubelet = spawn(
            [
                *namespaces.enter(anchor),
                str(kube_bin("kubelet")),
                f"--config={dirs.home / 'kubelet.json'}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={dirs.kubelet_root}",
                f"--cert-dir={dirs.home / 'kubelet-pki'}",
                f"--node-ip={network.NODE_IP}",
                f"--hostname-override={network.NODE_NAME}",
                "--v=1",
            ],
            log=kubelet_log,
            env=env,
        )
        started.append(kubelet)

        proxy_kubeconfig = dirs.home / "kube-proxy.kubeconfig"
        kube.write_kubeconfig(
            proxy_kubeconfig,
            server=server,
            ca_file=control_plane.ca_file,
            token=kube.PROXY_TOKEN,
            user="system:kube-proxy",
        )
        (dirs.home / "kube-proxy.json").write_text(config.kube_proxy_config(kubeconfig=proxy_kubeconfig))
        proxy = spawn(
            [
                *namespaces.enter(anchor),
                str(kube_bin("kube-proxy")),
                f"--config={dirs.home / 'kube-proxy.json'}",
                "--v=1",
            ],
            log=logs / "kube-proxy.log",
            env=env,
        )
        started.append(proxy)
        wait_until(
            lambda: node_ready(control_plane.kubeconfig),
            what="node Ready",
            timeout=90,
            pid=kubelet,
            log=kubelet_log,
        )
    except BaseException:
        _teardown(started[0], started[1:])
        raise
    return NodeInfo(
        anchor_pid=anchor,
        forwarder_pid=forwarder,
        containerd_pid=containerd,
        kubelet_pid=kubelet,
        proxy_pid=proxy,
        home=str(dirs.home),
    )


def node_ready(kubeconfig: str) -> bool:
    out = run(
        [
            str(kube_bin("kubectl")),
            f"--kubeconfig={kubeconfig}",
            "get",
            "node",
            network.NODE_NAME,
            "-o",
            "json",
        ],
        what="kubectl get node",
    )
    conditions = json.loads(out).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _teardown(anchor: int, daemons: list[int]) -> None:
    for pid in reversed(daemons):
        stop(pid, timeout=5)
    namespaces.destroy(anchor)
    cgroups.remove()


def stop_node(info: NodeInfo) -> None:
    """Stop every daemon, kill what is left of the pods, drop the namespaces and the cgroup root."""
    _teardown(info.anchor_pid, info.daemon_pids()[:-1])


def _require_packages() -> None:
    from ..build import NODE_BINARIES  # one list of what `make deps` installs for the node

    missing = [binary for binary in NODE_BINARIES if not Path(binary).exists()]
    if missing:
        raise StackError(f"node packages missing ({', '.join(missing)}); run `make deps`")


def node_images(info: NodeInfo) -> set[str]:
    socket = config.NodeDirs(Path(info.home)).containerd_socket
    return set(namespaces.ctr(info.anchor_pid, socket, "images", "ls", "-q", what="list node images").split())


def ensure_images(info: NodeInfo) -> dict[str, str]:
    """Build the runtime and operator images if their inputs changed and import what the node lacks.

    Returns ``{"runtime": reference, "operator": reference}``.
    """
    built = images.build_all()
    present = node_images(info)
    missing = [Path(image.archive) for image in built if image.reference not in present]
    if missing:
        images.import_into_node(
            missing, anchor_pid=info.anchor_pid, socket=config.NodeDirs(Path(info.home)).containerd_socket
        )
    return {image.name: image.reference for image in built}


def tag_image(info: NodeInfo, source: str, target: str) -> None:
    images.tag_in_node(
        source, target, anchor_pid=info.anchor_pid, socket=config.NodeDirs(Path(info.home)).containerd_socket
    )
