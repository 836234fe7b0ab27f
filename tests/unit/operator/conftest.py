"""Shared values for the operator's pure tests: a parsed runtime built from a plain dict."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from smartflow_operator.resource import SmartflowRuntime

BASE_SPEC: dict[str, Any] = {
    "image": "registry.example.com/smartflow/runtime:1.4.2",
    "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
    "kafka": {"bootstrapServers": "kafka-0:9092,kafka-1:9092"},
}


def make_runtime(
    spec: dict[str, Any] | None = None, *, name: str = "demo", namespace: str = "team"
) -> SmartflowRuntime:
    body = {
        "apiVersion": "smartflow.io/v1alpha1",
        "kind": "SmartflowRuntime",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-1", "generation": 3},
        "spec": copy.deepcopy(spec if spec is not None else BASE_SPEC),
    }
    return SmartflowRuntime.from_object(body)


def with_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(changes)
    return spec


@pytest.fixture
def runtime_factory() -> Callable[..., SmartflowRuntime]:
    return make_runtime
