"""Prometheus metrics of the data layer, held by one object built on a caller-owned registry.

The process layer creates one :class:`RuntimeMetrics` per process with the registry it serves
on ``/metrics`` and passes it to every service (relay, consumer, memory worker, stats sampler).
No module-level metrics: tests build their own registry and read exact values from it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from .outbox.store import OutboxStats

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def process_registry() -> CollectorRegistry:
    """The registry a role process serves on ``/metrics``: with the standard ``process_*`` series
    (start time, CPU, memory, open files), so a restarted container shows as a new start time."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


class RuntimeMetrics:
    """Counters, gauges and histograms of the outbox, its services and the memory worker."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_published = Counter(
            "smartflow_outbox_events_published_total",
            "Outbox events the relay sent to Kafka and marked published.",
            ["event_type"],
            registry=registry,
        )
        self.events_consumed = Counter(
            "smartflow_outbox_events_consumed_total",
            "Outbox events whose handler ran and that were marked consumed.",
            ["event_type"],
            registry=registry,
        )
        self.events_skipped = Counter(
            "smartflow_outbox_events_skipped_total",
            "Kafka messages the consumer skipped without effect (redelivered, unknown row, foreign).",
            ["reason"],
            registry=registry,
        )
        self.events_failed = Counter(
            "smartflow_outbox_events_failed_total",
            "Failed attempts sent back to pending with backoff, by stage (relay or consumer).",
            ["stage", "event_type"],
            registry=registry,
        )
        self.events_dead = Counter(
            "smartflow_outbox_events_dead_total",
            "Events that went dead, by stage (relay or consumer).",
            ["stage", "event_type"],
            registry=registry,
        )
        self.relay_batch_size = Histogram(
            "smartflow_relay_batch_size",
            "Rows claimed per relay batch.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.relay_shards_owned = Gauge(
            "smartflow_relay_shards_owned",
            "Outbox shards this process's relay currently leases.",
            registry=registry,
        )
        self.relay_shards = Gauge(
            "smartflow_relay_shards",
            "Outbox shards in the database (fixed at migrate time), as the relay last read them.",
            registry=registry,
        )
        self.consumer_batch_size = Histogram(
            "smartflow_consumer_batch_size",
            "Kafka records handled per consumer poll.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.consumer_rebalances = Counter(
            "smartflow_consumer_rebalances_total",
            "Consumer-group assignments this process's consumer received (one per completed rebalance).",
            registry=registry,
        )
        self.consumer_offset_commits = Counter(
            "smartflow_consumer_offset_commits_total",
            "Offset commits this process's consumer sent, by outcome (ok, failed).",
            ["outcome"],
            registry=registry,
        )
        self.handler_latency = Histogram(
            "smartflow_handler_latency_seconds",
            "Time to lock, handle and mark one event (one DB transaction).",
            ["event_type"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "smartflow_outbox_backlog",
            "Unfinished outbox rows (pending, published, dead) by status and event type, as last sampled.",
            ["status", "event_type"],
            registry=registry,
        )
        self.outbox_consumed = Gauge(
            "smartflow_outbox_consumed_rows",
            "Consumed outbox rows kept (history until pruned), counted up to a bound, as last sampled.",
            registry=registry,
        )
        self.outbox_due = Gauge(
            "smartflow_outbox_due_pending",
            "Due outbox rows not yet published (the relay lag), as last sampled.",
            registry=registry,
        )
        self.outbox_oldest_due_age = Gauge(
            "smartflow_outbox_oldest_due_age_seconds",
            "Age of the oldest due pending outbox row (0 when none), as last sampled.",
            registry=registry,
        )
        self.memory_jobs = Counter(
            "smartflow_memory_jobs_total",
            "Memory jobs processed, by outcome (succeeded, retry, dead, lease_lost).",
            ["outcome"],
            registry=registry,
        )
        self.memory_facts = Counter(
            "smartflow_memory_facts_total",
            "Facts the memory worker stored.",
            registry=registry,
        )

    def observe_stats(self, stats: OutboxStats) -> None:
        """Set the backlog gauges from one :func:`~smartflow_runtime.outbox.store.stats` reading."""
        self.outbox_backlog.clear()
        for entry in stats.backlog:
            self.outbox_backlog.labels(entry.status, entry.event_type).set(entry.count)
        self.outbox_consumed.set(stats.consumed)
        self.outbox_due.set(stats.due_pending)
        self.outbox_oldest_due_age.set(stats.oldest_due_age_seconds or 0.0)
