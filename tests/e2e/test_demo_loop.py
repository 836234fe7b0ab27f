"""The whole loop, as `make demo` runs it, with short windows: CR -> role workloads -> burst ->
relay and consumer scale up -> lag drained -> scale down, every event exactly one effect."""

from __future__ import annotations

from pathlib import Path

from smartflow_devstack import kafka, kube, postgres, stack
from smartflow_devstack.demo import DemoSettings, run_demo


def test_burst_scales_relay_and_consumer_up_then_down(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    kube_server: kube.KubeInfo,
    tmp_path: Path,
    unique_name: str,
) -> None:
    servers = stack.Stack(state=str(tmp_path), postgres=postgres_server, kafka=kafka_server, kube=kube_server)
    lines: list[str] = []
    settings = DemoSettings(
        messages=600,
        concurrency=8,
        namespace=f"e2e-{unique_name}",
        relay_target=50,
        consumer_target=50,
        relay_max=3,
        consumer_max=4,
        poll_interval=1,
        scale_down_window=5,
        timeout=240,
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
    # Lag drained, then both roles came back to their minimum.
    assert summary.drain_seconds is not None, transcript
    assert summary.scale_down_seconds is not None, transcript
    assert (summary.relay_end, summary.consumer_end) == (0, 1), transcript
    # Every event had exactly one effect: 3 events per message, all consumed, none dead,
    # one stored chat message and one memory job per message sent.
    assert summary.events_written == 3 * 600, transcript
    assert summary.events_consumed == summary.events_written, transcript
    assert summary.events_dead == 0, transcript
    assert summary.chat_messages_stored == 600 and summary.memory_jobs == 600, transcript
    # Runner, operator and every runtime process the runner started are gone.
    assert summary.processes_left == [], transcript
