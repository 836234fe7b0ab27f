"""The operator image the chart runs: python:3.11-slim, non-root uid 10001, the CLI as entrypoint."""

from __future__ import annotations

import json

from smartflow_devstack.versions import REPO_ROOT

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"


def _stages() -> list[list[tuple[str, str]]]:
    """(instruction, argument) pairs per stage, with continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), argument.strip()))
    return stages


def _one(stage: list[tuple[str, str]], instruction: str) -> str:
    values = [argument for name, argument in stage if name == instruction]
    assert len(values) == 1, f"expected exactly one {instruction}, got {values}"
    return values[0]


def test_every_stage_is_python_311_slim() -> None:
    assert [_one(stage, "FROM").split()[0] for stage in _stages()] == ["python:3.11-slim"] * len(_stages())


def test_runs_as_numeric_non_root_uid_10001() -> None:
    # Numeric, so the chart's runAsNonRoot can be verified by the kubelet without /etc/passwd.
    assert _one(_stages()[-1], "USER").split(":")[0] == "10001"


def test_entrypoint_is_the_operator_cli_and_the_chart_passes_run_args() -> None:
    final = _stages()[-1]
    assert json.loads(_one(final, "ENTRYPOINT")) == ["smartflow-operator"]
    assert json.loads(_one(final, "CMD"))[0] == "run"


def test_exposes_the_chart_default_ports() -> None:
    assert set(_one(_stages()[-1], "EXPOSE").split()) == {"8080", "8081"}


def test_the_installed_wheel_provides_the_operator_entry_point() -> None:
    # The final stage installs the project wheel; its console script must be smartflow-operator.
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert 'smartflow-operator = "smartflow_operator.cli:main"' in pyproject
    install = " ".join(argument for name, argument in _stages()[-1] if name == "RUN")
    assert "smartflow_runtime_operator-*.whl" in install
