"""Two runtimes on one Kafka consumer group with different databases: the second is refused
(Degraded/ConsumerGroupConflict naming the first, a Warning Event, nothing of it created or scaled)
while the first keeps running and scaling. The real operator in-process against the real apiserver
and Kafka."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from .conftest import create_topic, produce
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

pytestmark = pytest.mark.timeout(180)


def _runtime(name: str, secret: str, *, bootstrap_servers: str, topic: str, group: str) -> dict[str, Any]:
    body = runtime_body(
        name,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        group=group,
        consumer=fast_autoscaling(maxReplicas=4),
    )
    body["spec"]["database"]["dsnSecretRef"]["name"] = secret
    return body


def _kopf_retry_due(runtime: dict[str, Any]) -> float | None:
    """When kopf next retries the runtime's failed change handler (epoch seconds), from its
    progress annotation (``smartflow.io/<handler id>``, the operator's progress storage; the id is
    ``register.<locals>.runtime_changed``, sanitized)."""
    for key, value in ((runtime.get("metadata") or {}).get("annotations") or {}).items():
        if key.startswith("smartflow.io/") and "runtime_changed" in key:
            delayed = json.loads(value).get("delayed")
            if delayed:
                return datetime.fromisoformat(delayed).timestamp()
    return None


async def test_a_second_runtime_in_the_same_group_on_another_database_is_degraded(
    cluster: Cluster, kubeconfig: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("outbox"), names("shared-group")
    await create_topic(bootstrap_servers, topic, 4)
    cluster.create_secret("db-one", {"dsn": "postgresql://smartflow@127.0.0.1:1/one"})
    cluster.create_secret("db-two", {"dsn": "postgresql://smartflow@127.0.0.1:1/two"})
    kafka = {"bootstrap_servers": bootstrap_servers, "topic": topic, "group": group}
    with running_operator(kubeconfig, cluster.namespace):
        cluster.create_runtime(_runtime("first", "db-one", **kafka))
        eventually(lambda: cluster.replicas("first-consumer") == 1, timeout=30, what="first reconciled")
        cluster.create_runtime(_runtime("second", "db-two", **kafka))

        degraded = eventually(
            lambda: (c := cluster.condition("second", "Degraded")) and c["status"] == "True" and c,
            timeout=30,
            what="second Degraded",
        )
        assert degraded["reason"] == "ConsumerGroupConflict"
        assert f"{cluster.namespace}/first" in degraded["message"] and "spec.kafka" in degraded["message"]
        # The pass posts its Warning right after the status write that made it Degraded.
        events = eventually(
            lambda: cluster.events("ConsumerGroupConflict"), timeout=10, what="the conflict's Event"
        )
        assert events[0]["involvedObject"]["name"] == "second"
        assert events[0]["type"] == "Warning"

        # The first keeps running and scaling; nothing of the second is created or scaled.
        await produce(bootstrap_servers, topic, {0: 10, 1: 10})
        eventually(lambda: cluster.replicas("first-consumer") == 2, timeout=20, what="first scaled to 2")
        first = cluster.condition("first", "Degraded")
        assert first is not None and first["status"] == "False"
        for role in ("api", "relay", "consumer", "memory-worker"):
            assert cluster.deployment(f"second-{role}") is None

        # Its own consumer group: the fix is reconciled when it arrives, not when kopf's backoff of
        # the refused handler (10 s, 20 s, 40 s, ...) ends. Patched once that backoff is long.
        retry_due = eventually(
            lambda: (due := _kopf_retry_due(cluster.runtime("second"))) and due - time.time() > 15 and due,
            timeout=40,
            what="kopf's retry of the refused pass 15 s or more away",
        )
        cluster.patch_runtime("second", {"spec": {"kafka": {"consumerGroup": names("own-group")}}})
        eventually(lambda: cluster.replicas("second-consumer") == 1, timeout=12, what="second reconciled")
        assert time.time() < retry_due, "reconciled by kopf's retry, not when the fix arrived"
        eventually(
            lambda: (c := cluster.condition("second", "Degraded")) is not None and c["status"] == "False",
            timeout=15,
            what="second no longer Degraded",
        )
