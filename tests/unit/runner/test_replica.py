"""Restart backoff, readiness counting and endpoints.json helpers of the local runner."""

from __future__ import annotations

from pathlib import Path

from smartflow_devstack.runner import endpoints
from smartflow_devstack.runner.replica import Replica, Revision, crash_backoff
from smartflow_devstack.runner.spec import Probe, ProcessSpec


def test_crash_backoff_doubles_up_to_the_cap() -> None:
    delays = [crash_backoff(n, base=1.0, cap=10.0) for n in range(6)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert crash_backoff(10_000, base=1.0, cap=300.0) == 300.0


def replica_with_probe(success: int, failure: int) -> Replica:
    replica = Replica(name="r-0", index=0, seq=1, revision=Revision("u", "h"), log_path=Path("/dev/null"))
    probe = Probe(
        kind="http", port="admin", path="/readyz", success_threshold=success, failure_threshold=failure
    )
    replica.spec = ProcessSpec(
        pod_name="r-0", argv=("x",), env={}, admin_port=1, http_port=None, readiness=probe, grace_seconds=1
    )
    return replica


def test_readiness_needs_success_threshold_and_is_lost_after_failure_threshold() -> None:
    replica = replica_with_probe(success=2, failure=3)
    replica.observe_probe(True, now=1.0)
    assert not replica.ready
    replica.observe_probe(True, now=2.0)
    assert replica.ready
    assert replica.available(now=7.0, min_ready_seconds=5.0)
    assert not replica.available(now=6.0, min_ready_seconds=5.0)
    replica.observe_probe(False, now=3.0)
    replica.observe_probe(False, now=4.0)
    assert replica.ready
    replica.observe_probe(False, now=5.0)
    assert not replica.ready
    assert not replica.available(now=100.0, min_ready_seconds=0.0)


def test_ready_urls_lists_ready_replicas_of_one_deployment(tmp_path: Path) -> None:
    document = {
        "runner_pid": 1,
        "deployments": {
            "shop/shop-api": {
                "replicas": [
                    {"name": "a", "ready": True, "admin_port": 10, "http_port": 11},
                    {"name": "b", "ready": False, "admin_port": 12, "http_port": 13},
                ]
            }
        },
    }
    endpoints.write(tmp_path, document)
    loaded = endpoints.load(tmp_path)
    assert endpoints.ready_urls(loaded, "shop", "shop-api") == ["http://127.0.0.1:11"]
    assert endpoints.ready_urls(loaded, "shop", "shop-api", port="admin") == ["http://127.0.0.1:10"]
    assert endpoints.ready_urls(loaded, "shop", "other") == []
    assert endpoints.load(tmp_path / "missing") is None
