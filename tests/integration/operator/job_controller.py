"""INTERIM stand-in for the Job controller and the kubelet, for the migration Job tests.

The local stack has no node yet (no kubelet, and kube-controller-manager runs only the garbage
collector and namespace controllers), so nothing runs a Job. Until the real node lands as a
fixture, :func:`complete_job_as_job_controller` does what they would: it creates the Job's pod
from its template (as the Job controller does; the apiserver's `restricted` admission checks it),
optionally runs ``smartflow-runtime migrate`` against the DSN (what that pod would do), and writes
the Job's status through the status subresource exactly as the Job controller writes it
(``SuccessCriteriaMet``+``Complete`` with ``succeeded``, or ``FailureTarget``+``Failed`` with
``failed``). There is no pod log without a kubelet: for a failure run against a database, the
output of ``migrate`` goes where the kubelet would put it (the container's termination message,
``FallbackToLogsOnError``), which the operator quotes when the log cannot be read.

When the real node is there, replace the body with waiting for the real Job to finish: this
module is the only place the tests play the Job controller. It also works next to a running Job
controller without a node (it then uses that controller's pod and writes the end it cannot reach).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _migrate(dsn: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """What the Job's pod runs (its args), from the host; the Kafka topic step is left out here."""
    cli = Path(sys.executable).with_name("smartflow-runtime")
    return subprocess.run(
        [str(cli), *args, "--skip-topic"],
        env={**os.environ, "SMARTFLOW_DATABASE_DSN": dsn, "SMARTFLOW_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _terminate_pod(core: client.CoreV1Api, namespace: str, pod: Any, log: str) -> None:
    """The kubelet's report of the failed container: with ``FallbackToLogsOnError`` the last log
    lines become its termination message (at most 80 lines / 2048 bytes)."""
    now = _now()
    container = pod.spec.containers[0]
    message = "\n".join(log.splitlines()[-80:])[-2048:]
    status = {
        "phase": "Failed",
        "startTime": now,
        "containerStatuses": [
            {
                "name": container.name,
                "image": container.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
        ],
    }
    core.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": status})


def _job_pod(core: client.CoreV1Api, namespace: str, job: Any) -> Any:
    """The Job's pod: the one a running Job controller made (if there is one, it does so at once),
    else one made here from the Job's template, as the Job controller would."""
    selector = f"{JOB_UID_LABEL}={job.metadata.uid}"
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if pods:
            return max(pods, key=lambda pod: pod.metadata.creation_timestamp)
        time.sleep(0.2)
    return _create_pod(core, namespace, job)


def _create_pod(core: client.CoreV1Api, namespace: str, job: Any) -> Any:
    template = client.ApiClient().sanitize_for_serialization(job.spec.template)  # type: ignore[no-untyped-call]
    uid = job.metadata.uid
    labels = {
        **(template["metadata"].get("labels") or {}),
        JOB_UID_LABEL: uid,
        JOB_NAME_LABEL: job.metadata.name,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{job.metadata.name}-",
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job.metadata.name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": template["spec"],
    }
    return core.create_namespaced_pod(namespace, pod)


def _complete_sync(
    api: client.ApiClient,
    namespace: str,
    name: str,
    succeeded: bool,
    reason: str,
    message: str,
    dsn: str | None,
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job = batch.read_namespaced_job(name, namespace)
    try:  # no service-account controller in the stack either; pods need their ServiceAccount
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    except client.ApiException as error:
        if error.status != 409:
            raise
    pod = _job_pod(core, namespace, job)
    output: str | None = None
    if dsn is not None:
        result = _migrate(dsn, list(job.spec.template.spec.containers[0].args))
        output = result.stdout + result.stderr
        if succeeded:
            assert result.returncode == 0, f"smartflow-runtime migrate failed: {output}"
        else:
            assert result.returncode != 0, f"smartflow-runtime migrate was to fail: {output}"
    now = _now()
    # A start time set by a real Job controller stays (the apiserver refuses to move it).
    started = {} if job.status and job.status.start_time else {"startTime": now}
    if succeeded:
        status: dict[str, Any] = {
            **started,
            "completionTime": now,
            "active": 0,
            "ready": 0,
            "succeeded": 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": now,
                 "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "message": "Reached expected number of succeeded pods", "lastProbeTime": now,
                 "lastTransitionTime": now},
            ],
        }  # fmt: skip
    else:
        status = {
            **started,
            "active": 0,
            "ready": 0,
            "failed": int(job.spec.backoff_limit or 0) + 1,
            "terminating": 0,
            "uncountedTerminatedPods": {},
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
                 "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastProbeTime": now, "lastTransitionTime": now},
            ],
        }  # fmt: skip
    batch.patch_namespaced_job_status(name, namespace, {"status": status})
    if output is not None and not succeeded:
        # After the Job is failed, so that no controller starts another pod first.
        _terminate_pod(core, namespace, pod, output)


async def complete_job_as_job_controller(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    succeeded: bool = True,
    migrate_dsn: str | None = None,
    reason: str = "BackoffLimitExceeded",
    message: str = "Job has reached the specified backoff limit",
) -> None:
    """INTERIM (no node yet): finish migration Job ``name`` as the Job controller would, after
    running the Job's ``migrate`` against ``migrate_dsn`` as its pod would (skipped when None). A
    failure with a DSN expects ``migrate`` to fail and reports its output as the kubelet would
    (the container's termination message; there is no log to read without a kubelet)."""
    await asyncio.to_thread(_complete_sync, api, namespace, name, succeeded, reason, message, migrate_dsn)


def complete_next_job_as_job_controller(
    api: client.ApiClient, namespace: str, *, migrate_dsn: str | None = None, timeout: float = 30
) -> str:
    """INTERIM: wait for the operator to create a migration Job that has not finished, then finish
    it with :func:`complete_job_as_job_controller`; returns its name. For tests running the
    operator in the background."""
    batch = client.BatchV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        for job in batch.list_namespaced_job(namespace).items:
            if not (job.status and job.status.conditions):
                asyncio.run(
                    complete_job_as_job_controller(api, namespace, job.metadata.name, migrate_dsn=migrate_dsn)
                )
                return str(job.metadata.name)
        assert time.monotonic() < deadline, f"no unfinished migration Job in {namespace} within {timeout} s"
        time.sleep(0.3)
