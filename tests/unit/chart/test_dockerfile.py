"""The operator image the chart runs: python:3.11-slim, non-root uid 10001, the CLI as entrypoint."""

from __future__ import annotations

import json

from smartflow_devstack.versions import REPO_ROOT
from tests.dockerfile import Stage, one, stages

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"


def _stages() -> list[Stage]:
    return stages(DOCKERFILE)


def test_every_stage_is_python_311_slim() -> None:
    assert [one(stage, "FROM").split()[0] for stage in _stages()] == ["python:3.11-slim"] * len(_stages())


def test_runs_as_numeric_non_root_uid_10001() -> None:
    # Numeric, so the chart's runAsNonRoot can be verified by the kubelet without /etc/passwd.
    assert one(_stages()[-1], "USER").split(":")[0] == "10001"


def test_entrypoint_is_the_operator_cli_and_the_chart_passes_run_args() -> None:
    final = _stages()[-1]
    assert json.loads(one(final, "ENTRYPOINT")) == ["smartflow-operator"]
    assert json.loads(one(final, "CMD"))[0] == "run"


def test_exposes_the_chart_default_ports() -> None:
    assert set(one(_stages()[-1], "EXPOSE").split()) == {"8080", "8081"}


def test_the_installed_wheel_provides_the_operator_entry_point() -> None:
    # The final stage installs the project wheel; its console script must be smartflow-operator.
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'smartflow-operator = "smartflow_operator.cli:main"' in pyproject
    install = " ".join(argument for name, argument in _stages()[-1] if name == "RUN")
    assert "smartflow_runtime_operator-*.whl" in install
