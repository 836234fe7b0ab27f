"""Build or fetch every server binary the local stack needs, into the cache (reused when present).

Each build is a script in ``devstack/build/`` so that it can also be run by hand; this module
only passes the pinned versions and the cache root.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import images, postgres
from .errors import StackError
from .process import run
from .versions import (
    BUILD_SCRIPTS,
    ETCD_VERSION,
    HELM_VERSION,
    KAFKA_VERSION,
    KUBE_VERSION,
    PROMETHEUS_OPERATOR_VERSION,
    PROMETHEUS_VERSION,
    cache_root,
)

STEPS = [
    ("fetch-kafka.sh", KAFKA_VERSION),
    ("build-etcd.sh", ETCD_VERSION),
    ("build-helm.sh", HELM_VERSION),
    ("build-kube.sh", KUBE_VERSION),
    ("build-prometheus.sh", PROMETHEUS_VERSION),
    ("fetch-monitoring-crds.sh", PROMETHEUS_OPERATOR_VERSION),
]


# Debian packages the node and the image builds need (containerd 1.6, runc, CNI plugins, buildah).
NODE_PACKAGES = [
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "buildah",
    "mmdebstrap",
    "uidmap",
]
NODE_BINARIES = [
    "/usr/bin/containerd",
    "/usr/sbin/runc",
    "/usr/lib/cni/bridge",
    "/usr/sbin/iptables",
    "/usr/sbin/conntrack",
    "/usr/bin/buildah",
    "/usr/bin/mmdebstrap",
]


def ensure_node_packages() -> None:
    if all(Path(binary).exists() for binary in NODE_BINARIES):
        return
    if os.geteuid() != 0:
        raise StackError(f"the local node needs root and these Debian packages: {' '.join(NODE_PACKAGES)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], what="apt-get update", env=env)
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *NODE_PACKAGES],
        what="apt-get install",
        env=env,
    )


def build_all() -> None:
    postgres.ensure_installed()
    ensure_node_packages()
    root = cache_root()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    for script, version in STEPS:
        result = subprocess.run([str(BUILD_SCRIPTS / script), str(root), version], check=False)
        if result.returncode != 0:
            raise StackError(f"{script} {version} failed (exit {result.returncode})")
    images.build_base()
