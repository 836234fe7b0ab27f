"""Build or fetch every server binary the local stack needs, into the cache (reused when present).

Each build is a script in ``devstack/build/`` so that it can also be run by hand; this module
only passes the pinned versions and the cache root.
"""

from __future__ import annotations

import subprocess

from . import postgres
from .errors import StackError
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


def build_all() -> None:
    postgres.ensure_installed()
    root = cache_root()
    (root / "logs").mkdir(parents=True, exist_ok=True)
    for script, version in STEPS:
        result = subprocess.run([str(BUILD_SCRIPTS / script), str(root), version], check=False)
        if result.returncode != 0:
            raise StackError(f"{script} {version} failed (exit {result.returncode})")
