"""Prometheus metrics of the operator, in their own registry (no process globals): served by
``smartflow-operator run`` on ``--metrics-port``; tests read them from the registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "smartflow_operator_reconciles_total",
            "Reconcile passes by result: unchanged, changed, degraded, error.",
            ["result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "smartflow_operator_reconcile_errors_total",
            "Reconcile passes that failed, by reason (a condition reason or the error class).",
            ["reason"],
            registry=self.registry,
        )
        self.kube_requests = Counter(
            "smartflow_operator_kube_requests_total",
            "Requests the reconciler sent to the Kubernetes API, by HTTP method (PATCH/POST/DELETE write)"
            " and resource (plural, with the subresource: smartflowruntimes/status).",
            ["method", "resource"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "smartflow_operator_reconcile_duration_seconds",
            "Wall time of one reconcile pass.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.leader = Gauge(
            "smartflow_operator_leader",
            "1 while this replica holds the leader Lease (only the leader reconciles and writes).",
            registry=self.registry,
        )
        self.lease_requests = Counter(
            "smartflow_operator_lease_requests_total",
            "Requests leader election sent to the Kubernetes API (the Lease), by HTTP method.",
            ["method"],
            registry=self.registry,
        )
