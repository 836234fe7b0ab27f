"""A Kubernetes control plane on loopback: etcd, kube-apiserver (Node + RBAC authorization),
kube-controller-manager with all its default controllers, and kube-scheduler.

Pods run on the stack's one real node (``node/``), which reaches the apiserver at
``network.NODE_IP`` (the apiserver's advertise address, so the in-cluster ``kubernetes``
Service points there too). Identities: an admin token in ``system:masters``, a static non-admin
user, the node's and kube-proxy's tokens, and ServiceAccount tokens minted through the
TokenRequest API for least-privilege tests.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .node import network
from .pki import SERVER_SANS, authority, issue
from .process import free_port, free_ports, run, spawn, tcp_open, wait_until
from .versions import etcd_bin, kube_bin

ADMIN_TOKEN = "smartflow-admin-token"
DEVELOPER_TOKEN = "smartflow-developer-token"
DEVELOPER_USER = "developer"
NODE_TOKEN = "smartflow-node-token"
PROXY_TOKEN = "smartflow-kube-proxy-token"


@dataclass(frozen=True)
class KubeInfo:
    etcd_pid: int
    apiserver_pid: int
    controller_manager_pid: int
    server: str
    kubeconfig: str
    ca_file: str
    etcd_port: int
    scheduler_pid: int = 0

    @property
    def home(self) -> Path:
        """The control plane's directory: ``tokens.csv`` and ``pki/`` (apiserver and ServiceAccount keys)."""
        return Path(self.kubeconfig).parent

    def pids(self) -> list[int]:
        """Control-plane processes, in the order they should be stopped."""
        return [
            p
            for p in (self.scheduler_pid, self.controller_manager_pid, self.apiserver_pid, self.etcd_pid)
            if p
        ]


def _make_certs(state: Path, pki: Path) -> Path:
    """The apiserver's serving and kubelet-client certificates and the ServiceAccount key pair in
    ``pki``, signed by the stack's CA; returns the CA's directory."""
    ca = authority(state)
    issue(
        state, pki, "apiserver", subject="/CN=kube-apiserver", server=True,
        sans=(*SERVER_SANS, f"IP:{network.KUBERNETES_SERVICE_IP}",
              "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc"),
    )  # fmt: skip
    # kube-apiserver's client certificate towards the kubelet (logs, exec); system:masters so the
    # kubelet's webhook authorization allows it.
    issue(
        state,
        pki,
        "kubelet-client",
        subject="/O=system:masters/CN=kube-apiserver-kubelet-client",
        client=True,
    )
    run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], what="openssl genrsa")
    run(
        ["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
        what="openssl rsa",
    )
    return ca


def write_kubeconfig(path: Path, *, server: str, ca_file: str, token: str, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "smartflow-local", "cluster": {"server": server, "certificate-authority": ca_file}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "smartflow-local", "user": user}}],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2))


def start(state: Path) -> KubeInfo:
    for binary in (
        etcd_bin(),
        kube_bin("kube-apiserver"),
        kube_bin("kube-controller-manager"),
        kube_bin("kube-scheduler"),
    ):
        if not binary.exists():
            raise StackError(f"{binary} is missing; run `make deps` to build the control plane")
    home = state / "kube"
    if home.exists():
        shutil.rmtree(home)
    pki = home / "pki"
    ca = _make_certs(state, pki)
    logs = state / "logs"

    etcd_port, peer_port = free_ports(2)
    etcd_log = logs / "etcd.log"
    etcd_pid = spawn(
        [
            str(etcd_bin()),
            "--name=local",
            f"--data-dir={home / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        log=etcd_log,
    )
    wait_until(lambda: tcp_open(etcd_port), what="etcd", timeout=60, pid=etcd_pid, log=etcd_log)

    tokens = home / "tokens.csv"
    tokens.write_text(
        f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n{DEVELOPER_TOKEN},{DEVELOPER_USER},developer-uid\n'
        f'{NODE_TOKEN},system:node:{network.NODE_NAME},node-uid,"system:nodes"\n'
        f"{PROXY_TOKEN},system:kube-proxy,kube-proxy-uid\n"
    )
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    api_log = logs / "kube-apiserver.log"
    apiserver_pid = spawn(
        [
            str(kube_bin("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            # The address pods (and the node) reach this apiserver at, through the node's forwarder.
            f"--advertise-address={network.NODE_IP}",
            f"--secure-port={port}",
            f"--cert-dir={home / 'certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--service-cluster-ip-range={network.SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--token-auth-file={tokens}",
            f"--client-ca-file={ca / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=false",
            "--v=1",
        ],
        log=api_log,
    )
    ca_file = str(ca / "ca.crt")
    wait_until(
        lambda: _healthy(server, ca_file), what="kube-apiserver", timeout=120, pid=apiserver_pid, log=api_log
    )
    kubeconfig = home / "admin.kubeconfig"
    write_kubeconfig(kubeconfig, server=server, ca_file=ca_file, token=ADMIN_TOKEN, user="admin")

    kcm_log = logs / "kube-controller-manager.log"
    kcm_pid = spawn(
        [
            str(kube_bin("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={ca / 'ca.crt'}",
            f"--cluster-signing-cert-file={ca / 'ca.crt'}",
            f"--cluster-signing-key-file={ca / 'ca.key'}",
            f"--flex-volume-plugin-dir={home / 'flex-volume'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={home / 'kcm-certs'}",
            "--v=1",
        ],
        log=kcm_log,
    )
    wait_until(
        lambda: (
            "Started" in kcm_log.read_text(errors="replace")
            or "garbage" in kcm_log.read_text(errors="replace")
        ),
        what="kube-controller-manager",
        timeout=60,
        pid=kcm_pid,
        log=kcm_log,
    )
    scheduler_log = logs / "kube-scheduler.log"
    scheduler_pid = spawn(
        [
            str(kube_bin("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--v=1",
        ],
        log=scheduler_log,
    )
    return KubeInfo(
        scheduler_pid=scheduler_pid,
        etcd_pid=etcd_pid,
        apiserver_pid=apiserver_pid,
        controller_manager_pid=kcm_pid,
        server=server,
        kubeconfig=str(kubeconfig),
        ca_file=ca_file,
        etcd_port=etcd_port,
    )


def _healthy(server: str, ca_file: str) -> bool:
    context = ssl.create_default_context(cafile=ca_file)
    request = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, context=context, timeout=2) as response:
        return bool(response.status == 200)
