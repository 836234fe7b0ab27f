"""The consumer lag probe against a real Kafka broker, checked against Kafka's own tool."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from smartflow_devstack import kafka as kafka_stack
from smartflow_devstack.process import free_port, pause, stop
from smartflow_operator.autoscaling.errors import KafkaUnavailable, TopicNotFound
from smartflow_operator.autoscaling.probes import OFFSETS_MAX_AGE_SECONDS, ConsumerProbe, Probes

from .conftest import commit, create_topic, describe_group, established_connections_to, produce, tool_lag


async def test_lag_equals_what_kafkas_consumer_groups_tool_prints(
    bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("lag"), names("group")
    await create_topic(bootstrap_servers, topic, 4)
    await produce(bootstrap_servers, topic, {0: 10, 1: 20, 2: 5, 3: 7})
    await commit(bootstrap_servers, topic, group, {0: 4, 1: 20, 2: 0, 3: 6})

    async with ConsumerProbe(bootstrap_servers) as probe:
        reading = await probe.read(topic=topic, group=group)
    printed = tool_lag(await asyncio.to_thread(describe_group, bootstrap_servers, group), topic)

    ours = {p.partition: p.lag for p in reading.partitions}
    assert printed == {0: 6, 1: 0, 2: 5, 3: 1}  # the tool's LAG column, per partition
    assert ours == printed
    assert reading.metric == sum(v for v in printed.values() if v is not None) == 12
    assert reading.cap == 4
    assert {p.partition: p.committed for p in reading.partitions} == {0: 4, 1: 20, 2: 0, 3: 6}


async def test_partitions_without_a_commit_count_from_the_log_start(
    bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("partial"), names("group")
    await create_topic(bootstrap_servers, topic, 3)
    await produce(bootstrap_servers, topic, {0: 8, 1: 9, 2: 10})
    await commit(bootstrap_servers, topic, group, {0: 3})  # only partition 0 ever committed

    async with ConsumerProbe(bootstrap_servers) as probe:
        reading = await probe.read(topic=topic, group=group)
    printed = tool_lag(await asyncio.to_thread(describe_group, bootstrap_servers, group), topic)

    # The tool agrees on the committed partition and prints nothing (or "-") for the others ...
    assert printed[0] == 5
    assert all(printed.get(p) is None for p in (1, 2))
    # ... which the probe counts from the log start: everything a new consumer still has to read.
    assert {p.partition: (p.committed, p.lag) for p in reading.partitions} == {
        0: (3, 5),
        1: (None, 9),
        2: (None, 10),
    }
    assert reading.metric == 24


async def test_a_group_with_no_commits_has_the_whole_retained_log_as_lag(
    bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("fresh"), names("never-committed")
    await create_topic(bootstrap_servers, topic, 2)
    await produce(bootstrap_servers, topic, {0: 12, 1: 6})
    # Records deleted (as retention would): the log start moves, and so does the lag.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=5)})
    finally:
        await admin.close()

    async with ConsumerProbe(bootstrap_servers) as probe:
        reading = await probe.read(topic=topic, group=group)
    described = await asyncio.to_thread(describe_group, bootstrap_servers, group)

    assert tool_lag_or_empty(described, topic) == {}  # the tool: "Consumer group ... does not exist."
    assert {p.partition: (p.log_start, p.log_end, p.lag) for p in reading.partitions} == {
        0: (5, 12, 7),
        1: (0, 6, 6),
    }
    assert reading.metric == 13


def tool_lag_or_empty(output: str, topic: str) -> dict[int, int | None]:
    return tool_lag(output, topic) if "PARTITION" in output else {}


async def test_missing_topic_is_an_error_and_is_not_created(
    bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic = names("absent")
    async with ConsumerProbe(bootstrap_servers) as probe:
        with pytest.raises(TopicNotFound):
            await probe.read(topic=topic, group=names("group"))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


async def test_unreachable_broker_is_a_typed_error_and_fails_fast() -> None:
    probe = ConsumerProbe(f"127.0.0.1:{free_port()}", timeout=2.0)
    started = time.monotonic()
    try:
        for _ in range(2):  # and again on the next poll: no half-started client is kept
            with pytest.raises(KafkaUnavailable):
                await probe.read(topic="t", group="g")
    finally:
        await probe.stop()
    assert time.monotonic() - started < 10


async def test_clients_are_reused_across_polls_and_runtimes(
    bootstrap_servers: str, kafka_server: object, names: Callable[[str], str]
) -> None:
    topic, group = names("reuse"), names("group")
    await create_topic(bootstrap_servers, topic, 2)
    port = int(bootstrap_servers.rsplit(":", 1)[1])
    probes = Probes()
    try:
        probe = probes.consumer(bootstrap_servers, user="ns/a")
        assert probes.consumer(bootstrap_servers, user="ns/b") is probe
        await probe.read(topic=topic, group=group)
        after_first = established_connections_to(port)
        assert after_first >= 1
        for _ in range(15):
            await probe.read(topic=topic, group=group)
        assert established_connections_to(port) == after_first
    finally:
        await probes.close()


async def _connections_settle_at(port: int, expected: int) -> int:
    """This process's connections to ``port`` once they reach ``expected`` (closing takes a moment),
    or as they are after 10 s."""
    held = established_connections_to(port)
    for _ in range(100):
        if held == expected:
            break
        await asyncio.sleep(0.1)
        held = established_connections_to(port)
    return held


async def test_many_runtimes_polling_one_bootstrap_list_at_once_share_one_client_pair(
    bootstrap_servers: str, kafka_server: object, names: Callable[[str], str]
) -> None:
    """20 runtimes' first polls at the same moment make one client pair (the start is locked), and
    nothing stays open after the probes close."""
    topic, group = names("shared"), names("group")
    await create_topic(bootstrap_servers, topic, 2)
    await produce(bootstrap_servers, topic, {0: 3, 1: 4})
    await commit(bootstrap_servers, topic, group, {0: 0})  # the group's coordinator is up
    port = int(bootstrap_servers.rsplit(":", 1)[1])
    baseline = established_connections_to(port)
    async with ConsumerProbe(bootstrap_servers) as single:
        await single.read(topic=topic, group=group)
        one_pair = established_connections_to(port) - baseline
    assert one_pair >= 1
    assert await _connections_settle_at(port, baseline) == baseline

    probes = Probes()
    try:
        users = [f"ns/runtime-{i}" for i in range(20)]
        readings = await asyncio.gather(
            *(probes.consumer(bootstrap_servers, user=user).read(topic=topic, group=group) for user in users)
        )
        assert {reading.metric for reading in readings} == {7}
        assert probes.consumer(bootstrap_servers, user=users[0]).open_clients == 1
        held = established_connections_to(port) - baseline
        print(f"one client pair: {one_pair} connections; 20 runtimes polling at once: {held}")
        assert held == one_pair
    finally:
        await probes.close()
    assert await _connections_settle_at(port, baseline) == baseline


async def test_a_failed_read_does_not_tear_down_the_clients_of_reads_in_flight(
    tmp_path: Path, names: Callable[[str], str]
) -> None:
    """A broker that stops answering (SIGSTOP) makes the first runtime's read time out while a
    second runtime's read is in flight on the same client pair. The failure retires the pair: the
    in-flight read still completes once the broker answers again (SIGCONT), the next read gets a
    fresh pair, and the retired pair is closed (no leak)."""
    broker = await asyncio.to_thread(kafka_stack.start, tmp_path, partitions=2)
    try:
        topic, group = names("stall"), names("group")
        await create_topic(broker.bootstrap_servers, topic, 2)
        await produce(broker.bootstrap_servers, topic, {0: 5})
        await commit(broker.bootstrap_servers, topic, group, {0: 1})
        probes = Probes(timeout=3.0)
        try:
            probe = probes.consumer(broker.bootstrap_servers, user="ns/first")
            assert probes.consumer(broker.bootstrap_servers, user="ns/second") is probe
            assert (await probe.read(topic=topic, group=group)).metric == 4
            await asyncio.to_thread(pause, broker.pid)  # every broker thread stopped, not just signalled
            try:
                first = asyncio.create_task(probe.read(topic=topic, group=group))
                await asyncio.sleep(1.5)
                second = asyncio.create_task(probe.read(topic=topic, group=group))
                with pytest.raises(KafkaUnavailable):
                    await first  # timed out after 3 s: the pair is retired, not closed
                assert probe.open_clients == 1  # still open for the second read
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert (await second).metric == 4  # finished on the retired pair, which then closed
            assert probe.open_clients == 0
            assert (await probe.read(topic=topic, group=group)).metric == 4  # a fresh pair
            assert probe.open_clients == 1
        finally:
            await probes.close()
        assert await _connections_settle_at(broker.port, 0) == 0
    finally:
        stop(broker.pid)


async def test_runtimes_on_one_topic_share_one_read_of_its_log_range(
    bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    """Each group's lag is its own, but the topic's start/end offsets are read once for all of them
    while fresh (``OFFSETS_MAX_AGE_SECONDS``), and read again once that age has passed."""
    topic = names("shared")
    groups = [names(f"group-{i}") for i in range(5)]
    await create_topic(bootstrap_servers, topic, 2)
    await produce(bootstrap_servers, topic, {0: 10, 1: 4})
    for i, group in enumerate(groups):
        await commit(bootstrap_servers, topic, group, {0: i, 1: 4})

    async with ConsumerProbe(bootstrap_servers) as probe:
        await probe.read(topic=topic, group=groups[0])  # connected, metadata known
        clients = probe._clients
        assert clients is not None
        asked: list[float] = []
        end_offsets = clients.offsets.end_offsets

        async def counted(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
            asked.append(time.monotonic())
            return dict(await end_offsets(partitions))

        clients.offsets.end_offsets = counted
        await asyncio.sleep(OFFSETS_MAX_AGE_SECONDS)  # the first read's range is too old now
        readings = await asyncio.gather(*(probe.read(topic=topic, group=group) for group in groups))
        assert [r.metric for r in readings] == [10 - i for i in range(5)]
        assert len(asked) == 1
        await produce(bootstrap_servers, topic, {0: 3})
        await asyncio.sleep(OFFSETS_MAX_AGE_SECONDS)
        again = await probe.read(topic=topic, group=groups[0])
        assert (again.metric, len(asked)) == (13, 2)
