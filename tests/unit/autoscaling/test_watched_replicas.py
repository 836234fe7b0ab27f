"""Deployment replicas as the watch last saw them (pure)."""

from __future__ import annotations

from smartflow_operator.autoscaling.watched_replicas import WatchedReplicas


def deployment(name: str, replicas: int | None) -> dict[str, object]:
    spec = {} if replicas is None else {"replicas": replicas}
    return {"metadata": {"namespace": "ns", "name": name}, "spec": spec}


def test_the_latest_event_wins_with_its_arrival_time_and_a_deletion_forgets() -> None:
    now = [10.0]
    watched = WatchedReplicas(clock=lambda: now[0])
    watched.observe(None, deployment("a-relay", 1))  # the initial listing
    now[0] = 12.0
    watched.observe("MODIFIED", deployment("a-relay", 3))
    seen = watched.get("ns", "a-relay")
    assert seen is not None and (seen.replicas, seen.at) == (3, 12.0)
    assert watched.get("ns", "a-consumer") is None and watched.get("other", "a-relay") is None
    watched.observe("DELETED", deployment("a-relay", 3))
    assert watched.get("ns", "a-relay") is None and len(watched) == 0


def test_a_deployment_without_replicas_counts_as_one_like_the_apiserver_default() -> None:
    watched = WatchedReplicas(clock=lambda: 0.0)
    watched.observe("ADDED", deployment("a-api", None))
    seen = watched.get("ns", "a-api")
    assert seen is not None and seen.replicas == 1
