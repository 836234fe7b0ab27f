"""The runtime image: one image for every role, non-root, the CLI as entrypoint."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dockerfile import Stage, one, stages

DOCKERFILE = Path(__file__).resolve().parents[3] / "runtime" / "Dockerfile"


def _final_stage() -> Stage:
    found = stages(DOCKERFILE)
    return found[-1] if found else []


def test_base_image_is_python_311_slim() -> None:
    froms = [line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)


def test_runs_as_non_root_uid_10001() -> None:
    user = one(_final_stage(), "USER")
    uid = user.split(":")[0]
    assert uid == "10001", "numeric uid so Kubernetes runAsNonRoot can verify it"


def test_entrypoint_is_the_cli_and_roles_come_from_args() -> None:
    stage = _final_stage()
    assert json.loads(one(stage, "ENTRYPOINT")) == ["smartflow-runtime"]
    cmd = json.loads(one(stage, "CMD"))
    assert cmd[:2] == ["run", "--role"]


def test_exposes_http_and_admin_ports() -> None:
    assert set(one(_final_stage(), "EXPOSE").split()) == {"8080", "9090"}


def test_read_only_root_friendly() -> None:
    env = " ".join(arg for inst, arg in _final_stage() if inst == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    # Nothing is installed or written after switching to the unprivileged user.
    stage = _final_stage()
    user_at = [inst for inst, _ in stage].index("USER")
    assert not [arg for inst, arg in stage[user_at:] if inst == "RUN"]
