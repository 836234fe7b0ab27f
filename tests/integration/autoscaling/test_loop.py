"""The autoscaler end to end: the real operator against the real apiserver, Postgres and Kafka.

Each test runs the operator in-process (kopf, reconcile, the autoscaling daemon), creates a
SmartflowRuntime and changes the outbox backlog or the Kafka lag underneath it, then watches
the relay and consumer Deployments' replicas, the status, conditions and Events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from smartflow_devstack import kafka as kafka_stack
from smartflow_devstack.process import stop

from .conftest import commit, create_topic, insert_events, produce
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

NAME = "demo"
RELAY, CONSUMER = f"{NAME}-relay", f"{NAME}-consumer"


async def test_relay_and_consumer_scale_independently_and_come_down_after_the_window(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("outbox"), names("consumers")
    await create_topic(bootstrap_servers, topic, 4)
    cluster.create_secret("db", {"dsn": outbox_dsn})
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group=group,
            relay=fast_autoscaling(),
            consumer=fast_autoscaling(maxReplicas=10),
        )
    )
    with running_operator(kubeconfig, cluster.namespace) as controller:
        eventually(
            lambda: cluster.replicas(RELAY) == 1 and cluster.replicas(CONSUMER) == 1,
            timeout=30,
            what="both roles start at 1",
        )

        # A backlog of due outbox rows raises the relay within one poll interval; the consumer stays.
        await insert_events(outbox_dsn, 45)
        started = time.monotonic()
        eventually(lambda: cluster.replicas(RELAY) == 5, timeout=10, what="relay scaled to ceil(45/10)")
        relay_reaction = time.monotonic() - started
        assert cluster.replicas(CONSUMER) == 1

        # Kafka lag raises the consumer (4 partitions cap it at 4); the relay keeps its count.
        await produce(bootstrap_servers, topic, {0: 20, 1: 20, 2: 20, 3: 20})
        started = time.monotonic()
        eventually(
            lambda: cluster.replicas(CONSUMER) == 4, timeout=10, what="consumer scaled to the partition cap"
        )
        consumer_reaction = time.monotonic() - started
        assert cluster.replicas(RELAY) == 5

        # The status is written right after the replicas, in the same pass: it may land just after.
        status = eventually(
            lambda: (s := cluster.runtime(NAME)["status"]["roles"])["consumer"]["lag"] == 80 and s,
            timeout=5,
            what="the consumer's lag of 80 in status",
        )
        assert status["relay"]["lag"] == 45
        assert status["relay"]["autoscaling"]["cap"] == 8  # outbox shards
        assert status["consumer"]["autoscaling"]["cap"] == 4
        assert status["consumer"]["autoscaling"]["desiredReplicas"] == 4
        assert cluster.condition(NAME, "RelayAutoscaling")["status"] == "True"
        assert {e["reason"] for e in cluster.events()} >= {"ScaledUp"} or {
            e["reason"] for e in cluster.events()
        } >= {"Activated"}

        # Drained: down only after the 3 s window, then to minReplicas.
        conn = await asyncpg.connect(outbox_dsn)
        try:
            await conn.execute("UPDATE outbox_events SET status = 'published', published_at = now()")
        finally:
            await conn.close()
        drained = time.monotonic()
        await asyncio.sleep(1.0)
        assert cluster.replicas(RELAY) == 5, "scaled down before the stabilization window passed"
        eventually(lambda: cluster.replicas(RELAY) == 1, timeout=15, what="relay back to min")
        relay_down = time.monotonic() - drained
        # The 3 s window counts from the last poll that still saw the backlog, which can precede
        # the drain by one 1 s interval plus that poll's own time on a loaded machine.
        assert relay_down >= 1.5
        assert cluster.replicas(CONSUMER) == 4

        await commit(bootstrap_servers, topic, group, {0: 20, 1: 20, 2: 20, 3: 20})
        eventually(lambda: cluster.replicas(CONSUMER) == 1, timeout=15, what="consumer back to min")

        def reasons() -> list[str]:
            return [e["reason"] for e in cluster.events() if e["involvedObject"]["name"] == NAME]

        # The Event follows the replica write, so it may land just after the count is seen.
        eventually(
            lambda: reasons().count("ScaledUp") >= 2 and reasons().count("ScaledDown") >= 2,
            timeout=5,
            what=f"ScaledUp and ScaledDown Events for both roles (got {reasons()})",
        )
        assert (
            controller.metrics.registry.get_sample_value(
                "smartflow_operator_autoscaling_scale_events_total", {"role": "relay", "direction": "up"}
            )
            >= 1
        )
    print(
        f"reaction: relay {relay_reaction:.1f} s, consumer {consumer_reaction:.1f} s, down {relay_down:.1f} s"
    )


async def test_consumer_holds_its_replicas_and_says_why_when_kafka_is_down(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, tmp_path: Path, names: Callable[[str], str]
) -> None:
    broker = await asyncio.to_thread(kafka_stack.start, tmp_path, partitions=4)
    try:
        topic, group = names("outbox"), names("consumers")
        await create_topic(broker.bootstrap_servers, topic, 4)
        await produce(broker.bootstrap_servers, topic, {0: 10, 1: 10, 2: 10})
        cluster.create_secret("db", {"dsn": outbox_dsn})
        cluster.create_runtime(
            runtime_body(
                NAME,
                bootstrap_servers=broker.bootstrap_servers,
                topic=topic,
                group=group,
                consumer=fast_autoscaling(),
            )
        )
        with running_operator(kubeconfig, cluster.namespace):
            eventually(lambda: cluster.replicas(CONSUMER) == 3, timeout=20, what="consumer at ceil(30/10)")
            stop(broker.pid)
            condition = eventually(
                lambda: (
                    (c := cluster.condition(NAME, "ConsumerAutoscaling")) and c["status"] == "False" and c
                ),
                timeout=30,
                what="condition says the probe fails",
            )
            assert condition["reason"] == "LagProbeFailed"
            assert "KafkaUnavailable" in condition["message"] and "holding 3 replicas" in condition["message"]
            # Longer than the 3 s scale-down window: a failed probe is not zero lag.
            await asyncio.sleep(6)
            assert cluster.replicas(CONSUMER) == 3
            autoscaling = cluster.runtime(NAME)["status"]["roles"]["consumer"]["autoscaling"]
            assert autoscaling["probeError"]["reason"] == "KafkaUnavailable"
            assert autoscaling["desiredReplicas"] == 3
            assert autoscaling["history"]["consecutiveFailures"] >= 3
            assert cluster.events("KafkaUnavailable"), "a Warning Event names the failure"
    finally:
        stop(broker.pid)


def _owns_replicas(deployment: dict[str, object], manager: str) -> bool:
    for entry in deployment["metadata"].get("managedFields") or []:  # type: ignore[attr-defined]
        if entry["manager"] == manager and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {}):
            return True
    return False


async def test_paused_and_external_mode_write_no_replicas(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("outbox"), names("consumers")
    await create_topic(bootstrap_servers, topic, 2)
    cluster.create_secret("db", {"dsn": outbox_dsn})
    cluster.create_runtime(
        runtime_body(
            NAME, bootstrap_servers=bootstrap_servers, topic=topic, group=group, relay=fast_autoscaling()
        )
    )
    with running_operator(kubeconfig, cluster.namespace):
        await insert_events(outbox_dsn, 30)
        eventually(lambda: cluster.replicas(RELAY) == 3, timeout=20, what="relay at ceil(30/10)")

        # Paused: the count stays (it is not reset to 1 when the field leaves our apply) ...
        cluster.patch_runtime(NAME, {"spec": {"roles": {"relay": {"autoscaling": {"paused": True}}}}})
        eventually(
            lambda: not _owns_replicas(cluster.deployment(RELAY) or {"metadata": {}}, "smartflow-operator"),
            timeout=15,
            what="the operator no longer owns spec.replicas",
        )
        assert cluster.replicas(RELAY) == 3
        # ... more lag changes nothing, and a count set by someone else is left alone.
        await insert_events(outbox_dsn, 50)
        cluster.scale(RELAY, 2)
        cluster.patch_runtime(NAME, {"spec": {"roles": {"api": {"replicas": 2}}}})  # forces a reconcile pass
        eventually(lambda: cluster.replicas(f"{NAME}-api") == 2, timeout=15, what="api reconciled")
        await asyncio.sleep(3)
        assert cluster.replicas(RELAY) == 2
        status = cluster.runtime(NAME)["status"]["roles"]["relay"]
        assert status["autoscaling"]["reason"] == "Paused"
        # 80 due rows, counted only up to what could change a decision: 10 per replica x max 6.
        assert (status["lag"], status["autoscaling"]["metricTruncated"]) == (60, True)

        # External (an HPA or KEDA owns replicas through the scale subresource): not fought either.
        cluster.patch_runtime(
            NAME, {"spec": {"roles": {"relay": {"autoscaling": {"paused": False, "mode": "External"}}}}}
        )
        cluster.scale(RELAY, 5)
        cluster.patch_runtime(NAME, {"spec": {"roles": {"api": {"replicas": 1}}}})
        eventually(lambda: cluster.replicas(f"{NAME}-api") == 1, timeout=15, what="api reconciled")
        await asyncio.sleep(3)
        assert cluster.replicas(RELAY) == 5
        assert not _owns_replicas(cluster.deployment(RELAY) or {}, "smartflow-operator")
        eventually(
            lambda: cluster.runtime(NAME)["status"]["roles"]["relay"]["autoscaling"]["reason"] == "External",
            timeout=10,
            what="status says External",
        )

        # Back to the operator: it takes the field over again and scales from the lag (80 -> max 6).
        cluster.patch_runtime(NAME, {"spec": {"roles": {"relay": {"autoscaling": {"mode": "Operator"}}}}})
        eventually(lambda: cluster.replicas(RELAY) == 6, timeout=20, what="operator scales again")
