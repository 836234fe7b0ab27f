"""The consumer-group conflict check (pure): which of two runtimes sharing a group is refused."""

from __future__ import annotations

import base64
from typing import Any

from smartflow_operator.conflicts import (
    ConsumerGroups,
    ConsumerIdentity,
    conflict_message,
    conflicting_runtime,
    identity_of,
)

from .conftest import make_runtime, with_spec


def identity(name: str, created: str, dsn: str | None, **kafka: Any) -> ConsumerIdentity:
    spec = with_spec(
        kafka={"bootstrapServers": "kafka:9092", "topic": "outbox", "consumerGroup": "g", **kafka}
    )
    runtime = make_runtime(spec, name=name)
    ref = runtime.spec.database.dsn_secret_ref
    fetched = (
        {} if dsn is None else {("Secret", ref.name): {ref.key: base64.b64encode(dsn.encode()).decode()}}
    )
    return identity_of(runtime, fetched, created=created)


FIRST = identity("first", "2026-01-01T00:00:00Z", "postgresql://a/db1")


def test_the_newer_runtime_on_another_database_conflicts_with_the_older() -> None:
    second = identity("second", "2026-01-02T00:00:00Z", "postgresql://a/db2")
    assert conflicting_runtime(second, [FIRST, second]) == FIRST
    assert conflicting_runtime(FIRST, [FIRST, second]) is None  # the first keeps running
    message = conflict_message(second, FIRST)
    assert "spec.kafka" in message and "/first" in message and "'g'" in message


def test_the_same_database_may_share_a_group() -> None:
    same = identity("second", "2026-01-02T00:00:00Z", "postgresql://a/db1")
    assert conflicting_runtime(same, [FIRST, same]) is None


def test_another_group_topic_or_cluster_does_not_conflict() -> None:
    for kafka in ({"consumerGroup": "h"}, {"topic": "other"}, {"bootstrapServers": "kafka-b:9092"}):
        other = identity("second", "2026-01-02T00:00:00Z", "postgresql://a/db2", **kafka)
        assert conflicting_runtime(other, [FIRST, other]) is None, kafka


def test_bootstrap_lists_compare_as_sets_of_brokers() -> None:
    a = identity("a", "2026-01-01T00:00:00Z", "x", bootstrapServers="k1:9092,k2:9092")
    b = identity("b", "2026-01-02T00:00:00Z", "y", bootstrapServers="K2:9092,k1:9092")
    assert conflicting_runtime(b, [a, b]) == a


def test_the_dsn_is_fingerprinted_never_kept() -> None:
    assert "db1" not in FIRST.database and FIRST.database.startswith("dsn:")
    unknown = identity("x", "2026-01-03T00:00:00Z", None)
    assert unknown.database.startswith("secret:")


def test_the_registry_compares_a_runtime_with_its_own_group_only_and_forgets() -> None:
    groups = ConsumerGroups()
    a = identity("a", "2026-01-01T00:00:00Z", "postgresql://a/db1", consumerGroup="g1")
    b = identity("b", "2026-01-01T00:00:01Z", "postgresql://a/db2", consumerGroup="g1")
    c = identity("c", "2026-01-01T00:00:02Z", "postgresql://a/db3", consumerGroup="g2")
    for one in (a, b, c):
        groups.record(one)
    assert {i.name for i in groups.in_group_of(a)} == {"a", "b"}
    assert conflicting_runtime(b, groups.in_group_of(b)) == a
    groups.record(identity("b", "2026-01-01T00:00:01Z", "postgresql://a/db2", consumerGroup="g2"))  # moved
    assert {i.name for i in groups.in_group_of(a)} == {"a"}
    assert {i.name for i in groups.in_group_of(c)} == {"b", "c"}
    groups.forget(c.namespace, "c")
    assert {i.name for i in groups.in_group_of(c)} == {"b"} and len(groups) == 2
