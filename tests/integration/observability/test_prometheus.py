"""A real Prometheus scrapes the real operator and a real role process on loopback, with the
chart's alert rules loaded: the lag and replicas the operator measured come back from queries,
the dead-events alert stays quiet while nothing is dead and fires once a poison event goes dead,
and a deleted runtime leaves no operator series behind.

The operator runs in-process (the real ``serve``: kopf, reconcile, autoscaler) against the real
apiserver, PostgreSQL and Kafka; its registry is served over HTTP exactly as ``smartflow-operator
run`` serves it. The role is a ``smartflow-runtime run --role worker`` process (relay + consumer +
memory worker) with the target labels the chart's PodMonitor gives role pods.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import start_http_server

from smartflow_devstack.process import free_port, spawn, stop
from smartflow_operator.names import GROUP, PLURAL, VERSION
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import NewEvent
from tests.integration.autoscaling.conftest import create_topic, insert_events
from tests.integration.autoscaling.operator_harness import (
    Cluster,
    eventually,
    fast_autoscaling,
    running_operator,
    runtime_body,
)
from tests.unit.chart import monitoring as mon

from .conftest import ScrapeJob, wait_for

NAME = "shop"
RUNTIME_CLI = str(Path(sys.executable).with_name("smartflow-runtime"))


def worker_process(
    tmp_path: Path, *, dsn: str, bootstrap_servers: str, topic: str, group: str, admin_port: int
) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTFLOW_")}
    env.update(
        {
            "SMARTFLOW_DATABASE_DSN": dsn,
            "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "SMARTFLOW_KAFKA_TOPIC": topic,
            "SMARTFLOW_KAFKA_CONSUMER_GROUP": group,
            "SMARTFLOW_BIND_HOST": "127.0.0.1",
            "SMARTFLOW_ADMIN_PORT": str(admin_port),
            "SMARTFLOW_HTTP_PORT": str(free_port()),
            "SMARTFLOW_LOG_FORMAT": "json",
        }
    )
    return spawn([RUNTIME_CLI, "run", "--role", "worker"], log=tmp_path / "worker.log", env=env)


def firing(alerts: list[dict[str, Any]], name: str, namespace: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in alerts
        if alert["labels"].get("alertname") == name
        and alert["labels"].get("namespace") == namespace
        and alert["labels"].get("name") == NAME
        and alert["state"] == "firing"
    ]


def operator_series_of(registry: Any, namespace: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, sample.labels)
        for family in registry.collect()
        for sample in family.samples
        if sample.labels.get("namespace") == namespace and sample.labels.get("name") == NAME
    ]


async def test_prometheus_sees_lag_replicas_and_the_dead_events_alert_and_forgets_a_deleted_runtime(
    cluster: Cluster,
    kubeconfig: str,
    outbox_dsn: str,
    bootstrap_servers: str,
    names: Callable[[str], str],
    prometheus_factory: Any,
    tmp_path: Path,
) -> None:
    namespace = cluster.namespace
    topic, group = names("outbox"), names("consumers")
    await create_topic(bootstrap_servers, topic, 2)
    cluster.create_secret("db", {"dsn": outbox_dsn})
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group=group,
            relay=fast_autoscaling(),
            consumer=fast_autoscaling(),
        )
    )
    await insert_events(outbox_dsn, 45)  # a due backlog, no relay running yet
    rules = mon.write_rules(tmp_path / "rules.yaml", mon.rendered())

    with running_operator(kubeconfig, namespace) as controller:
        operator_port, worker_port = free_port(), free_port()
        server, _ = start_http_server(operator_port, addr="127.0.0.1", registry=controller.metrics.registry)
        worker = None
        try:
            prometheus = prometheus_factory(
                jobs=[
                    ScrapeJob("smartflow-operator", operator_port, {}, honor_labels=True),
                    ScrapeJob(
                        "smartflow",
                        worker_port,
                        {"namespace": namespace, "name": NAME, "role": "worker", "pod": f"{NAME}-worker-0"},
                    ),
                ],
                rules=rules,
            )
            selector = f'namespace="{namespace}", name="{NAME}"'

            # What the operator measured and decided, as Prometheus scraped it.
            relay_lag = f'smartflow_operator_autoscaling_lag{{{selector}, role="relay"}}'
            assert wait_for(lambda: prometheus.value(relay_lag) == 45, what="relay lag 45 in Prometheus")
            consumer_lag = f'smartflow_operator_autoscaling_lag{{{selector}, role="consumer"}}'
            assert wait_for(lambda: prometheus.value(consumer_lag) == 0, what="consumer lag 0")
            eventually(
                lambda: cluster.replicas(f"{NAME}-relay") == 5, timeout=20, what="relay at ceil(45/10)"
            )
            desired = f'smartflow_operator_runtime_desired_replicas{{{selector}, role="relay"}}'
            assert wait_for(lambda: prometheus.value(desired) == 5, what="relay desired replicas 5")
            reason = f'smartflow_operator_runtime_scaling_reason{{{selector}, role="relay"}}'

            def reason_as_in_status() -> bool:
                status = cluster.runtime(NAME)["status"]["roles"]["relay"]["autoscaling"]["reason"]
                return {r["metric"]["reason"] for r in prometheus.query(reason)} == {status}

            assert wait_for(reason_as_in_status, what="the relay's last decision reason, as in the status")
            # No kubelet runs these Deployments: their pods never become ready, and it shows.
            ready = f'smartflow_operator_runtime_condition{{{selector}, type="Ready"}}'
            (condition,) = wait_for(lambda: prometheus.query(ready), what="the Ready condition series")
            assert (condition["metric"]["status"], condition["metric"]["reason"]) == (
                "False",
                "RolesNotReady",
            )
            ready_replicas = f'smartflow_operator_runtime_ready_replicas{{{selector}, role="relay"}}'
            assert prometheus.value(ready_replicas) == 0

            # The backlog rows are for another topic: out of the way before a worker starts.
            conn = await asyncpg.connect(outbox_dsn)
            try:
                await conn.execute("DELETE FROM outbox_events")
            finally:
                await conn.close()

            worker = worker_process(
                tmp_path,
                dsn=outbox_dsn,
                bootstrap_servers=bootstrap_servers,
                topic=topic,
                group=group,
                admin_port=worker_port,
            )
            up = 'up{job="smartflow"}'
            wait_for(lambda: prometheus.value(up) == 1, what="the worker scraped", timeout=60)
            relay_shards = f"smartflow_relay_shards{{{selector}}}"
            assert wait_for(lambda: prometheus.value(relay_shards) == 8, what="the shard count")
            # Several rule evaluations with nothing dead: the alert stays quiet.
            evaluations: list[str] = []

            def evaluated_three_times_quietly() -> bool:
                assert not firing(prometheus.alerts(), "SmartflowEventsDead", namespace)
                (group_status,) = prometheus.api("rules")["groups"]
                if not evaluations or evaluations[-1] != group_status["lastEvaluation"]:
                    evaluations.append(group_status["lastEvaluation"])
                return len(evaluations) > 3

            wait_for(evaluated_three_times_quietly, what="three quiet rule evaluations", interval=0.3)

            # A poison event: no handler knows its type, so the consumer sends it to dead.
            conn = await asyncpg.connect(outbox_dsn)
            try:
                await store.publish(
                    conn,
                    NewEvent(
                        event_type="poison.unknown",
                        aggregate_id="order-1",
                        message_key="order-1",
                        topic=topic,
                        payload={"bad": True},
                    ),
                )
            finally:
                await conn.close()
            dead = f'sum(smartflow_outbox_events_dead_total{{{selector}, stage="consumer"}})'
            assert wait_for(lambda: prometheus.value(dead) == 1, what="one dead event scraped", timeout=60)
            (alert,) = wait_for(
                lambda: firing(prometheus.alerts(), "SmartflowEventsDead", namespace),
                what="SmartflowEventsDead firing",
            )
            assert alert["labels"]["severity"] == "warning"
            assert f"{namespace}/{NAME}" in alert["annotations"]["description"]
            print(f"SmartflowEventsDead: {alert['annotations']['description']}")

            # The dashboard's queries, as Grafana sends them for this runtime, run on the real data:
            # all are accepted, and the panels fed by what ran here show it.
            board = mon.dashboard(mon.rendered())
            variables = {"$__rate_interval": "30s", "$namespace": namespace, "$name": NAME}
            results = {
                key: prometheus.query(query) for key, query in mon.panel_queries(board, variables).items()
            }
            with_data = {key for key, result in results.items() if result}
            assert {
                "Desired vs ready replicas per role/A",
                "Desired vs ready replicas per role/B",
                "Autoscaler decision (replicas)/A",
                "Last scaling decision per role/A",
                "Conditions/A",
                "Relay backlog (due outbox rows)/A",
                "Relay backlog (due outbox rows)/B",
                "Oldest due row age/A",
                "Relay shards leased/A",
                "Relay shards leased/B",
                "Consumer lag per partition/A",
                "Consumer-group lag/A",
            } <= with_data, sorted(set(results) - with_data)
            partitions = {r["metric"]["partition"] for r in results["Consumer lag per partition/A"]}
            assert partitions == {"0", "1"}

            # The runtime goes: the operator drops its series, and Prometheus sees them go stale.
            cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
            eventually(
                lambda: not operator_series_of(controller.metrics.registry, namespace),
                timeout=20,
                what=f"no operator series left for {namespace}/{NAME}",
            )
            left = f'{{job="smartflow-operator", {selector}}}'
            wait_for(lambda: not prometheus.query(left), what="no operator series in Prometheus")
        finally:
            if worker is not None:
                stop(worker)
            server.shutdown()
