"""The whole loop on the real node, as `make demo` runs it, with short windows: the operator
installed with Helm from its image, role pods from the runtime image in a `restricted` namespace,
a burst through the api Service -> relay and consumer pods scale up -> lag drained -> scale down,
every event exactly one effect, and no pod left once the runtime is deleted."""

from __future__ import annotations

from pathlib import Path

from smartflow_devstack import kafka, kube, postgres, stack
from smartflow_devstack.demo import DemoSettings, run_demo
from smartflow_devstack.node.start import NodeInfo


def test_burst_scales_relay_and_consumer_pods_up_then_down(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    kube_server: kube.KubeInfo,
    node_server: NodeInfo,
    node_images: dict[str, str],
    tmp_path: Path,
    unique_name: str,
) -> None:
    servers = stack.Stack(
        state=str(tmp_path), postgres=postgres_server, kafka=kafka_server, kube=kube_server, node=node_server
    )
    lines: list[str] = []
    settings = DemoSettings(
        messages=600,
        concurrency=8,
        namespace=f"e2e-{unique_name}",
        operator_namespace=f"e2e-operator-{unique_name}",
        relay_target=50,
        consumer_target=50,
        relay_max=3,
        consumer_max=4,
        poll_interval=1,
        scale_down_window=5,
        timeout=300,
        state=tmp_path / "demo",
        servers=servers,
        out=lines.append,
    )
    summary = run_demo(settings)
    transcript = "\n".join(lines) + "\n" + summary.render()

    assert summary.messages_sent == 600, transcript
    # Relay starts at zero (min 0) and is activated by the backlog; the consumer scales from lag.
    assert summary.relay_start == 0 and summary.relay_peak > 0, transcript
    assert summary.consumer_start == 1 and summary.consumer_peak > 1, transcript
    # Lag drained, then both roles came back to their minimum (pods, not only Deployment specs).
    assert summary.drain_seconds is not None, transcript
    assert summary.scale_down_seconds is not None, transcript
    assert (summary.relay_end, summary.consumer_end) == (0, 1), transcript
    # Every event had exactly one effect: 3 events per message, all consumed, none dead; the token
    # adjustments (one per message, additive) would show a duplicate effect.
    assert summary.events_written == 3 * 600, transcript
    assert summary.events_consumed == summary.events_written, transcript
    assert summary.events_dead == 0, transcript
    assert summary.chat_messages_stored == 600 and summary.memory_jobs == 600, transcript
    assert summary.token_adjustments == 600, transcript
    assert summary.exactly_once, transcript
    # Deleting the runtime left no role pod behind.
    assert summary.pods_left == [], transcript
