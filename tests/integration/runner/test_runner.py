"""The local runner against the real kube-apiserver: Deployments in, local processes and Deployment
status out (start, env resolution, scale, crash restart, rollout, deletion, clean shutdown)."""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from smartflow_devstack.process import alive
from smartflow_devstack.runner import endpoints

from .conftest import CRASHER_IMAGE, Harness, fake_deployment, wait_for


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def log_text(replica: dict[str, Any]) -> str:
    return Path(replica["log"]).read_text(errors="replace")


def test_runs_the_replicas_with_their_resolved_env_and_reports_them_ready(harness: Harness) -> None:
    ns = harness.namespace
    harness.core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "db"},
            "data": {"dsn": base64.b64encode(b"postgresql://u:p@127.0.0.1/db").decode()},
        },
    )
    harness.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "tuning"}, "data": {"LOG_LEVEL": "DEBUG"}}
    )
    harness.create(
        fake_deployment(
            "shop-api",
            replicas=2,
            env=[
                {
                    "name": "SMARTFLOW_DATABASE_DSN",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
                },
                {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            env_from=[{"configMapRef": {"name": "tuning"}, "prefix": "SMARTFLOW_"}],
        )
    )
    harness.create(fake_deployment("not-ours", labels={}))  # no managed-by label: ignored

    replicas = harness.wait_ready("shop-api", 2)

    status = harness.status("shop-api")
    assert status["availableReplicas"] == 2
    kinds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert kinds["Available"] == ("True", "MinimumReplicasAvailable")
    assert kinds["Progressing"] == ("True", "NewReplicaSetAvailable")
    ports = [r["admin_port"] for r in replicas] + [r["http_port"] for r in replicas]
    assert len(set(ports)) == 4, "every replica listens on ports of its own"
    for replica in replicas:
        assert alive(replica["pid"])
        seen = get_json(f"http://127.0.0.1:{replica['admin_port']}/env")
        assert seen["pid"] == replica["pid"]
        assert seen["argv"] == ["run", "--role", "api"]
        env = seen["env"]
        assert env["SMARTFLOW_DATABASE_DSN"] == "postgresql://u:p@127.0.0.1/db"
        assert env["SMARTFLOW_LOG_LEVEL"] == "DEBUG"
        assert env["MY_POD"] == env["HOSTNAME"] == replica["name"]
        assert env["SMARTFLOW_ADMIN_PORT"] == str(replica["admin_port"])
        assert env["SMARTFLOW_HTTP_PORT"] == str(replica["http_port"])
        assert env["SMARTFLOW_BIND_HOST"] == "127.0.0.1"
        assert get_json(f"http://127.0.0.1:{replica['http_port']}/env")["pid"] == replica["pid"]
    urls = endpoints.ready_urls(harness.runner.endpoints(), ns, "shop-api")
    assert sorted(urls) == sorted(f"http://127.0.0.1:{r['http_port']}" for r in replicas)
    assert harness.replicas("not-ours") == []
    assert not harness.status("not-ours").get("observedGeneration")


def test_a_settled_deployment_is_not_written_again(harness: Harness) -> None:
    harness.create(fake_deployment("quiet", replicas=1, http=False))
    harness.wait_ready("quiet", 1)
    version = harness.apps.read_namespaced_deployment("quiet", harness.namespace).metadata.resource_version

    time.sleep(3)  # several passes of the runner (interval 0.5 s)

    assert (
        harness.apps.read_namespaced_deployment("quiet", harness.namespace).metadata.resource_version
        == version
    )


def test_scaling_down_stops_replicas_with_sigterm_and_scaling_up_adds_them(harness: Harness) -> None:
    harness.create(fake_deployment("relay", replicas=3, http=False, role="relay"))
    before = harness.wait_ready("relay", 3)
    assert all(r["http_port"] is None for r in before)

    harness.scale("relay", 1)
    after = harness.wait_ready("relay", 1)

    stopped = [r for r in before if r["pid"] not in {a["pid"] for a in after}]
    assert len(stopped) == 2
    for replica in stopped:
        wait_for(lambda r=replica: not alive(r["pid"]), what=f"pid {replica['pid']} to exit")
        text = log_text(replica)
        assert "SIGTERM received" in text
        assert "fake_workload: stopped" in text  # a clean exit, not a SIGKILL

    harness.scale("relay", 2)
    assert len(harness.wait_ready("relay", 2)) == 2


def test_a_killed_process_is_restarted_and_its_restarts_counted(harness: Harness) -> None:
    harness.create(fake_deployment("consumer", replicas=2, http=False, role="consumer"))
    victim = harness.wait_ready("consumer", 2)[0]

    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        again = next((r for r in harness.replicas("consumer") if r["name"] == victim["name"]), None)
        return again if again and again["pid"] not in (None, victim["pid"]) and again["ready"] else None

    again = wait_for(restarted, what="the killed replica to come back")
    assert again["restarts"] == 1
    harness.wait_ready("consumer", 2)


def test_a_template_change_rolls_every_replica_to_the_new_template(harness: Harness) -> None:
    harness.create(
        fake_deployment("worker", replicas=2, http=False, role="worker", env=[{"name": "V", "value": "1"}])
    )
    old = harness.wait_ready("worker", 2)
    old_hash = harness.runner.endpoints()["deployments"][f"{harness.namespace}/worker"]["template_hash"]  # type: ignore[index]

    template = fake_deployment("worker", role="worker", env=[{"name": "V", "value": "2"}])["spec"]["template"]
    harness.patch("worker", {"spec": {"template": template}})
    new = harness.wait_ready("worker", 2)

    new_hash = harness.runner.endpoints()["deployments"][f"{harness.namespace}/worker"]["template_hash"]  # type: ignore[index]
    assert new_hash != old_hash
    assert all(new_hash in r["name"] for r in new)
    assert not {r["pid"] for r in new} & {r["pid"] for r in old}
    for replica in old:
        wait_for(lambda r=replica: not alive(r["pid"]), what="old replicas to exit")
    for replica in new:
        assert get_json(f"http://127.0.0.1:{replica['admin_port']}/env")["env"]["V"] == "2"


def test_a_missing_secret_is_reported_and_the_replica_starts_once_it_exists(harness: Harness) -> None:
    env = [{"name": "SMARTFLOW_DATABASE_DSN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "dsn"}}}]
    harness.create(fake_deployment("late-api", replicas=1, env=env))

    def failure() -> dict[str, Any] | None:
        conditions = harness.status("late-api").get("conditions") or []
        return next((c for c in conditions if c["type"] == "ReplicaFailure"), None)

    condition = wait_for(failure, what="a ReplicaFailure condition")
    assert condition["reason"] == "CreateContainerConfigError"
    assert 'secret "late" not found' in condition["message"]
    assert not harness.status("late-api").get("readyReplicas")
    assert harness.replicas("late-api")[0]["pid"] is None

    harness.core.create_namespaced_secret(
        harness.namespace, {"metadata": {"name": "late"}, "stringData": {"dsn": "x"}}
    )
    harness.wait_ready("late-api", 1)
    assert failure() is None


def test_a_process_ignoring_sigterm_is_killed_after_its_grace_period(harness: Harness) -> None:
    env = [{"name": "FAKE_IGNORE_SIGTERM", "value": "1"}]
    harness.create(fake_deployment("stubborn", replicas=1, http=False, env=env, grace=1))
    replica = harness.wait_ready("stubborn", 1)[0]

    started = time.monotonic()
    harness.scale("stubborn", 0)
    wait_for(lambda: not alive(replica["pid"]), what="the stubborn process to be killed", timeout=15)

    assert time.monotonic() - started >= 1.0, "killed before its grace period ended"
    assert "SIGTERM received (ignored)" in log_text(replica)
    assert "fake_workload: stopped" not in log_text(replica)
    harness.wait_ready("stubborn", 0)


def test_deleting_the_deployment_stops_its_processes(harness: Harness) -> None:
    harness.create(fake_deployment("doomed", replicas=2, http=False))
    replicas = harness.wait_ready("doomed", 2)

    harness.apps.delete_namespaced_deployment("doomed", harness.namespace)

    for replica in replicas:
        wait_for(lambda r=replica: not alive(r["pid"]), what="the deleted Deployment's processes to exit")
        assert "SIGTERM received" in log_text(replica)
    wait_for(
        lambda: f"{harness.namespace}/doomed" not in harness.runner.endpoints()["deployments"], what="cleanup"
    )  # type: ignore[index]


def test_stopping_the_runner_leaves_no_process_behind(harness: Harness) -> None:
    harness.create(fake_deployment("one", replicas=2))
    harness.create(fake_deployment("two", replicas=1, http=False, role="relay"))
    pids = [r["pid"] for r in harness.wait_ready("one", 2) + harness.wait_ready("two", 1)]

    harness.runner.stop(timeout=30)

    assert not harness.runner.alive()
    assert [pid for pid in pids if alive(pid)] == []
    document = endpoints.load(harness.runner.state)
    assert document is not None and document["running"] is False
    assert all(not entry["replicas"] for entry in document["deployments"].values())
    status = harness.status("one")
    assert not status.get("readyReplicas"), "the status no longer claims ready replicas"


def test_a_killed_runner_takes_its_processes_with_it(harness: Harness) -> None:
    harness.create(fake_deployment("orphans", replicas=2, http=False))
    replicas = harness.wait_ready("orphans", 2)

    os.kill(harness.runner.pid, signal.SIGKILL)  # no chance to clean up: the kernel tells the children

    for replica in replicas:
        wait_for(
            lambda r=replica: not alive(r["pid"]), what="replicas of a killed runner to exit", timeout=15
        )
        assert "SIGTERM received" in log_text(replica)


def test_a_crashing_process_is_restarted_with_backoff_and_reported(harness: Harness) -> None:
    harness.create(fake_deployment("crasher", replicas=1, http=False, image=CRASHER_IMAGE))

    def crash_looping() -> dict[str, Any] | None:
        replicas = harness.replicas("crasher")
        return replicas[0] if replicas and replicas[0]["restarts"] >= 3 else None

    started = time.monotonic()
    replica = wait_for(crash_looping, what="three restarts", timeout=30)
    assert time.monotonic() - started >= 1 + 2, "restarts are spaced by the backoff (1 s, then 2 s)"
    assert Path(replica["log"]).read_text().count("crashing") >= 3
    status = harness.status("crasher")
    assert not status.get("readyReplicas")
    kinds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert kinds["Available"] == ("False", "MinimumReplicasUnavailable")
    wait_for(
        lambda: any(
            c["type"] == "ReplicaFailure" and c["reason"] == "CrashLoopBackOff"
            for c in harness.status("crasher").get("conditions") or []
        ),
        what="a CrashLoopBackOff ReplicaFailure condition",
    )


@pytest.mark.parametrize("runner_args", [["--interval", "30"]])
def test_a_watch_event_wakes_the_runner_before_its_interval(harness: Harness, runner_args: list[str]) -> None:
    harness.create(fake_deployment("prompt", replicas=1, http=False))

    started = time.monotonic()
    wait_for(lambda: any(r["pid"] for r in harness.replicas("prompt")), what="a process", timeout=10)

    assert time.monotonic() - started < 10 < float(runner_args[1])
