"""Run the pinned ``helm`` on the repository's charts and parse what it renders.

Shared by the pure chart tests (here) and the integration tests in tests/integration/chart/.
``helm template`` needs no cluster, so rendering is a unit-level check; a missing helm binary is a
failure with the command that installs it, never a skip.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartflow_devstack.versions import REPO_ROOT, helm_bin

CHARTS = REPO_ROOT / "charts"
OPERATOR_CHART = CHARTS / "smartflow-operator"
RUNTIME_CHART = CHARTS / "smartflow-runtime"
GENERATED_CRD = REPO_ROOT / "crds" / "smartflow.io_smartflowruntimes.yaml"
CHART_CRD = OPERATOR_CHART / "crds" / "smartflow.io_smartflowruntimes.yaml"

Manifest = dict[str, Any]


def helm(
    *args: str, check: bool = True, timeout: float = 120.0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = helm_bin()
    if not binary.exists():
        pytest.fail(f"{binary} is missing; run `make deps` to fetch helm", pytrace=False)
    result = subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}", pytrace=False)
    return result


def template_args(
    chart: Path,
    *,
    release: str = "sfo",
    namespace: str = "smartflow-system",
    include_crds: bool = False,
) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    return args


def _values_input(values: Mapping[str, Any] | None) -> tuple[list[str], str | None]:
    """``-f -`` plus the values as stdin (JSON is YAML), so no temporary files are left behind."""
    if not values:
        return [], None
    return ["-f", "-"], json.dumps(dict(values))


def render_text(chart: Path, *, values: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    extra, stdin = _values_input(values)
    return helm(*template_args(chart, **kwargs), *extra, stdin=stdin).stdout


def render(chart: Path, **kwargs: Any) -> list[Manifest]:
    """The rendered objects (CRDs only with ``include_crds=True``)."""
    return [doc for doc in yaml.safe_load_all(render_text(chart, **kwargs)) if doc]


def render_error(chart: Path, *, values: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """What helm says when rendering fails (the test fails if it renders)."""
    extra, stdin = _values_input(values)
    result = helm(*template_args(chart, **kwargs), *extra, stdin=stdin, check=False)
    assert result.returncode != 0, f"expected helm template to fail, it rendered:\n{result.stdout[:2000]}"
    return result.stderr


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def rule_set(rules: Sequence[Mapping[str, Sequence[str]]]) -> set[tuple[str, str, str]]:
    """RBAC rules flattened to (apiGroup, resource, verb) triples: equal sets grant the same."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
