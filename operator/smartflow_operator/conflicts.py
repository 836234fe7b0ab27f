"""Two runtimes in one Kafka consumer group on different databases: the newer one is refused. Pure.

Runtimes that share bootstrap servers, topic and consumer group join one group and split its
partitions, so each consumes events whose outbox rows live in the other's database (and marks
nothing, or fails). The reconciler (``reconcile``) computes each runtime's
:class:`ConsumerIdentity` from its spec and the DSN it fetched; the controller keeps the latest
identity of every runtime it reconciled and passes them to the next pass. The runtime created
later (by ``creationTimestamp``, then namespace/name) is ``Degraded`` with reason
``ConsumerGroupConflict`` naming the other, gets a Warning Event and is not changed (so nothing of
it is created or scaled); the first keeps running. Two runtimes on the same database may share a
group: that is scaling one application, not mixing two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .config_refs import FetchedConfig
from .resource import SmartflowRuntime

CONSUMER_GROUP_CONFLICT = "ConsumerGroupConflict"


@dataclass(frozen=True)
class ConsumerIdentity:
    namespace: str
    name: str
    created: str  # creationTimestamp (RFC 3339 sorts as text)
    bootstrap: tuple[str, ...]  # sorted, lower-cased host:port entries
    topic: str
    group: str
    database: str  # a fingerprint of the DSN (never the DSN itself), else where it comes from

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)

    def shares_group_with(self, other: ConsumerIdentity) -> bool:
        return (self.bootstrap, self.topic, self.group) == (other.bootstrap, other.topic, other.group)


def identity_of(runtime: SmartflowRuntime, fetched: FetchedConfig, *, created: str) -> ConsumerIdentity:
    kafka, ref = runtime.spec.kafka, runtime.spec.database.dsn_secret_ref
    bootstrap = tuple(
        sorted(part.strip().lower() for part in kafka.bootstrap_servers.split(",") if part.strip())
    )
    value = (fetched.get(("Secret", ref.name)) or {}).get(ref.key)
    database = (
        "dsn:" + hashlib.sha256(str(value).encode()).hexdigest()[:16]
        if value is not None
        else f"secret:{runtime.namespace}/{ref.name}/{ref.key}"
    )
    return ConsumerIdentity(
        namespace=runtime.namespace,
        name=runtime.name,
        created=created,
        bootstrap=bootstrap,
        topic=kafka.topic,
        group=kafka.consumer_group,
        database=database,
    )


GroupKey = tuple[tuple[str, ...], str, str]  # (bootstrap, topic, group)


class ConsumerGroups:
    """Every runtime's latest identity, indexed by consumer group: a pass compares its runtime with
    the runtimes in its own group only (comparing with every runtime made convergence quadratic in
    the number of runtimes)."""

    def __init__(self) -> None:
        self._by_runtime: dict[tuple[str, str], ConsumerIdentity] = {}
        self._by_group: dict[GroupKey, dict[tuple[str, str], ConsumerIdentity]] = {}

    def record(self, identity: ConsumerIdentity) -> None:
        self.forget(identity.namespace, identity.name)
        key = (identity.namespace, identity.name)
        self._by_runtime[key] = identity
        self._by_group.setdefault(_group_of(identity), {})[key] = identity

    def forget(self, namespace: str, name: str) -> None:
        old = self._by_runtime.pop((namespace, name), None)
        if old is not None:
            members = self._by_group.get(_group_of(old), {})
            members.pop((namespace, name), None)
            if not members:
                self._by_group.pop(_group_of(old), None)

    def in_group_of(self, identity: ConsumerIdentity) -> list[ConsumerIdentity]:
        return list(self._by_group.get(_group_of(identity), {}).values())

    def __len__(self) -> int:
        return len(self._by_runtime)


def _group_of(identity: ConsumerIdentity) -> GroupKey:
    return (identity.bootstrap, identity.topic, identity.group)


def conflicting_runtime(me: ConsumerIdentity, others: Iterable[ConsumerIdentity]) -> ConsumerIdentity | None:
    """The earliest runtime created before ``me`` in ``me``'s consumer group on another database."""
    earlier = [
        other
        for other in others
        if (other.namespace, other.name) != (me.namespace, me.name)
        and other.shares_group_with(me)
        and other.database != me.database
        and other.order < me.order
    ]
    return min(earlier, key=lambda other: other.order, default=None)


def conflict_message(me: ConsumerIdentity, other: ConsumerIdentity) -> str:
    return (
        f"spec.kafka: consumer group {me.group!r} on topic {me.topic!r} at {','.join(me.bootstrap)} is "
        f"already used by runtime {other.namespace}/{other.name} with a different database; in one group "
        "the two would consume each other's events. Give this runtime its own kafka.consumerGroup "
        "(or topic)"
    )
