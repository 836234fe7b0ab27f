"""Fixtures for the charts against the real kube-apiserver: kubectl/helm with the admin kubeconfig,
throwaway namespaces, Helm releases that are uninstalled afterwards, and the chart's CRD applied
the way docs/helm.md tells users to upgrade it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from smartflow_devstack.versions import kube_bin
from tests.unit.chart.helm import CHART_CRD, GENERATED_CRD, OPERATOR_CHART, helm

CRD_NAME = "smartflowruntimes.smartflow.io"
# Pod Security "restricted", enforced: a pod template that violates it is reported as a warning
# when its Deployment is created (and its pods would be rejected).
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


def kubectl(
    kubeconfig: str, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    binary = kube_bin("kubectl")
    if not binary.exists():
        pytest.fail(f"{binary} is missing; run `make deps`", pytrace=False)
    result = subprocess.run(
        [str(binary), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)} failed:\n{result.stdout}{result.stderr}", pytrace=False)
    return result


def get_json(kubeconfig: str, *args: str) -> dict[str, Any] | None:
    """``kubectl get ... -o json``; None when the object does not exist."""
    result = kubectl(kubeconfig, "get", *args, "-o", "json", "--ignore-not-found", check=True)
    return json.loads(result.stdout) if result.stdout.strip() else None


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = 30.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})", pytrace=False)


def apply_chart_crd(kubeconfig: str) -> None:
    """The documented CRD upgrade path: the chart's CRD, server-side applied, then Established."""
    crds = helm("show", "crds", str(OPERATOR_CHART)).stdout
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=crds)
    kubectl(kubeconfig, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


@pytest.fixture(scope="session")
def chart_crd(kubeconfig: str) -> str:
    """The chart's CRD is in the cluster (a release installs it only if it is missing).

    Only a current copy is applied: a stale chart CRD must not overwrite a newer one that other
    tests on the shared apiserver rely on."""
    if CHART_CRD.read_bytes() != GENERATED_CRD.read_bytes():
        pytest.fail(
            "charts/smartflow-operator/crds is stale; run "
            ".venv/bin/smartflow-operator crds --output charts/smartflow-operator/crds",
            pytrace=False,
        )
    apply_chart_crd(kubeconfig)
    return CRD_NAME


@dataclass
class Namespaces:
    kubeconfig: str
    created: list[str] = field(default_factory=list)

    def create(self, name: str, labels: Mapping[str, str] = RESTRICTED) -> str:
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(labels)},
        }
        kubectl(self.kubeconfig, "create", "-f", "-", stdin=json.dumps(manifest))
        self.created.append(name)
        return name

    def delete_all(self) -> None:
        for name in self.created:
            kubectl(
                self.kubeconfig,
                "delete",
                "namespace",
                name,
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )


@pytest.fixture
def namespaces(kubeconfig: str) -> Iterator[Namespaces]:
    made = Namespaces(kubeconfig)
    yield made
    made.delete_all()


@dataclass
class Releases:
    """Helm releases of the operator chart; whatever is still installed is uninstalled afterwards."""

    kubeconfig: str
    installed: dict[str, str] = field(default_factory=dict)  # release -> namespace

    def _run(
        self, *args: str, values: Mapping[str, Any] | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        extra: list[str] = ["--kubeconfig", self.kubeconfig]
        stdin = None
        if values is not None:
            extra += ["-f", "-"]
            stdin = json.dumps(dict(values))
        return helm(*args, *extra, stdin=stdin, check=check)

    def install(
        self,
        release: str,
        namespace: str,
        values: Mapping[str, Any] | None = None,
        *,
        chart: str = str(OPERATOR_CHART),
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = self._run("install", release, chart, "--namespace", namespace, values=values, check=check)
        if result.returncode == 0:
            self.installed[release] = namespace
        return result

    def upgrade(
        self,
        release: str,
        values: Mapping[str, Any],
        *,
        extra: Sequence[str] = (),
        chart: str = str(OPERATOR_CHART),
    ) -> subprocess.CompletedProcess[str]:
        namespace = self.installed[release]
        return self._run(
            "upgrade", release, chart, "--namespace", namespace, *extra, values=values, check=True
        )

    def uninstall(self, release: str) -> subprocess.CompletedProcess[str]:
        namespace = self.installed.pop(release)
        return helm("uninstall", release, "--namespace", namespace, "--wait", "--kubeconfig", self.kubeconfig)

    def uninstall_all(self) -> None:
        for release in list(self.installed):
            namespace = self.installed.pop(release)
            helm("uninstall", release, "--namespace", namespace, "--kubeconfig", self.kubeconfig, check=False)


@pytest.fixture
def releases(kubeconfig: str, chart_crd: str) -> Iterator[Releases]:
    made = Releases(kubeconfig)
    yield made
    made.uninstall_all()


def manifests_of(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]
