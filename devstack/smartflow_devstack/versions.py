"""Pinned versions of the servers the local stack builds or fetches, and where they are cached."""

from __future__ import annotations

import os
from pathlib import Path

KUBE_VERSION = "1.34.4"
ETCD_VERSION = "3.6.16"
HELM_VERSION = "3.22.0"
KAFKA_VERSION = "4.1.1"
POSTGRES_MAJOR = "15"
# Cache key of the locally made base and pause images (devstack/build/build-base-images.sh).
BASE_IMAGES_VERSION = "1"
# Prometheus server + promtool (module version of github.com/prometheus/prometheus) and the
# prometheus-operator release whose published CRDs check the chart's monitoring objects.
PROMETHEUS_VERSION = "0.316.0"
PROMETHEUS_OPERATOR_VERSION = "0.85.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPTS = REPO_ROOT / "devstack" / "build"


def cache_root() -> Path:
    """Where built binaries and jars live: outside the repository, reused across clones."""
    override = os.environ.get("SMARTFLOW_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smartflow"


def kube_bin(name: str) -> Path:
    return cache_root() / f"kube-{KUBE_VERSION}" / "bin" / name


def etcd_bin() -> Path:
    return cache_root() / f"etcd-{ETCD_VERSION}" / "bin" / "etcd"


def helm_bin() -> Path:
    return cache_root() / f"helm-{HELM_VERSION}" / "bin" / "helm"


def prometheus_bin(name: str = "prometheus") -> Path:
    """``prometheus`` or ``promtool``."""
    return cache_root() / f"prometheus-{PROMETHEUS_VERSION}" / "bin" / name


def monitoring_crds() -> Path:
    """The folder with prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs."""
    return cache_root() / f"prometheus-operator-crds-{PROMETHEUS_OPERATOR_VERSION}"


def kafka_libs() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "libs"


def postgres_bindir() -> Path:
    return Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")
