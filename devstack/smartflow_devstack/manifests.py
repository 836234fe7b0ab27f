"""SmartflowRuntime manifests for the tests and benchmarks (development only).

One place for the API coordinates and a small split-mode runtime, so the test harness and the
benchmarks build the same object.
"""

from __future__ import annotations

from typing import Any

GROUP, VERSION, PLURAL = "smartflow.io", "v1alpha1", "smartflowruntimes"


def split_runtime(
    name: str,
    *,
    bootstrap_servers: str,
    topic: str,
    group: str,
    relay: dict[str, Any] | None = None,
    consumer: dict[str, Any] | None = None,
    image: str = "ghcr.io/smartflow/runtime:0.1.0",
    migrations: bool = True,
) -> dict[str, Any]:
    """A split-mode runtime (api, relay, consumer, memory-worker) with the DSN from Secret ``db``;
    ``relay``/``consumer`` are their ``autoscaling`` blocks (default: disabled); ``migrations=False``
    turns the operator's migration Job off (the caller migrates the database itself)."""

    def scalable(autoscaling: dict[str, Any] | None) -> dict[str, Any]:
        return {"replicas": 1, "autoscaling": autoscaling or {"enabled": False}}

    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SmartflowRuntime",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "mode": "split",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "kafka": {"bootstrapServers": bootstrap_servers, "topic": topic, "consumerGroup": group},
            "roles": {"relay": scalable(relay), "consumer": scalable(consumer)},
            **({} if migrations else {"migrations": {"enabled": False}}),
        },
    }
