"""The schema gate (pure): when the roles may roll, when a Job is started, what status says."""

from __future__ import annotations

from typing import Any

import pytest

from smartflow_operator import conditions as c
from smartflow_operator.names import Role
from smartflow_operator.runtime_status import compute_status, status_patch
from smartflow_operator.schema_gate import (
    JobPhase,
    JobState,
    SchemaGate,
    SchemaVersion,
    decide_schema,
    job_state,
    needs_version_read,
    quote_log,
)
from smartflow_operator.status import SchemaStatus, SmartflowRuntimeStatus

IMAGE = "registry.example.com/smartflow/runtime:1.5.0"
JOB = "demo-migrate-aaaa1111"


def _decide(**kwargs: Any) -> SchemaGate:
    options: dict[str, Any] = {
        "enabled": True,
        "image": IMAGE,
        "job_name": JOB,
        "inputs_hash": "aaaa1111",
        "recorded": None,
        "job": None,
    }
    options.update(kwargs)
    return decide_schema(**options)


def _job(*conditions: dict[str, str], owner: str = "uid-1") -> dict[str, Any]:
    return {
        "metadata": {"name": JOB, "ownerReferences": [{"uid": owner, "controller": True}]},
        "status": {"conditions": list(conditions)},
    }


class TestJobState:
    def test_reads_the_job_controllers_conditions(self) -> None:
        assert job_state(None, owner_uid="uid-1").phase is JobPhase.ABSENT
        assert job_state(_job(), owner_uid="uid-1").phase is JobPhase.RUNNING
        complete = _job({"type": "Complete", "status": "True"})
        assert job_state(complete, owner_uid="uid-1").phase is JobPhase.SUCCEEDED
        failed = _job({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"})
        assert job_state(failed, owner_uid="uid-1") == JobState(JobPhase.FAILED, "BackoffLimitExceeded", "m")
        # A condition that is not True yet says nothing (e.g. FailureTarget being evaluated).
        assert (
            job_state(_job({"type": "Failed", "status": "False"}), owner_uid="uid-1").phase
            is JobPhase.RUNNING
        )

    def test_a_job_another_object_controls_is_not_ours(self) -> None:
        complete = _job({"type": "Complete", "status": "True"}, owner="uid-of-a-deleted-runtime")
        assert job_state(complete, owner_uid="uid-1").phase is JobPhase.FOREIGN


class TestDecideSchema:
    def test_a_fresh_runtime_starts_the_job_and_waits(self) -> None:
        gate = _decide(job=JobState(JobPhase.ABSENT))
        assert (gate.open, gate.create_job, gate.ready, gate.reason) == (False, True, False, c.MIGRATING)
        assert gate.problem is None
        assert gate.status == {"jobName": JOB, "hash": "aaaa1111"}

    def test_a_running_job_is_waited_for_not_started_again(self) -> None:
        gate = _decide(job=JobState(JobPhase.RUNNING))
        assert (gate.open, gate.create_job, gate.reason) == (False, False, c.MIGRATING)
        assert JOB in gate.message and IMAGE in gate.message

    def test_success_opens_the_gate_and_records_the_hash(self) -> None:
        gate = _decide(job=JobState(JobPhase.SUCCEEDED), version=SchemaVersion(5))
        assert (gate.open, gate.create_job, gate.ready, gate.reason) == (True, False, True, c.MIGRATED)
        assert gate.status == {"version": 5, "jobName": JOB, "hash": "aaaa1111", "migratedHash": "aaaa1111"}
        assert gate.event is not None and gate.event[:2] == ("Normal", c.MIGRATED)
        assert gate.message.startswith("schema version 5: ")

    def test_a_migrated_hash_needs_no_job_even_when_it_is_gone(self) -> None:
        recorded = SchemaStatus(version=5, job_name=JOB, hash="aaaa1111", migrated_hash="aaaa1111")
        gate = _decide(recorded=recorded, job=None)
        assert (gate.open, gate.create_job, gate.ready) == (True, False, True)
        assert gate.event is None  # said once, when it succeeded
        assert gate.status["version"] == 5

    def test_a_new_hash_after_a_migrated_one_closes_the_gate_again(self) -> None:
        recorded = SchemaStatus(
            version=5, job_name="demo-migrate-old00000", hash="old00000", migrated_hash="old00000"
        )
        gate = _decide(recorded=recorded, job=JobState(JobPhase.ABSENT))
        assert (gate.open, gate.create_job) == (False, True)
        # Until the new Job succeeded, the old migration stays recorded (and the version last read).
        assert gate.status == {"version": 5, "jobName": JOB, "hash": "aaaa1111", "migratedHash": "old00000"}

    def test_a_failed_job_is_a_problem_quoting_reason_and_log(self) -> None:
        failed = JobState(
            JobPhase.FAILED, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )
        gate = _decide(job=failed, log_quote="migration failed: permission denied for schema public")
        assert (gate.open, gate.create_job, gate.ready, gate.reason) == (
            False,
            False,
            False,
            c.MIGRATION_FAILED,
        )
        assert gate.problem is not None and gate.problem.reason == c.MIGRATION_FAILED
        assert gate.problem.message == gate.message
        assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in gate.message
        assert "last log lines: migration failed: permission denied for schema public" in gate.message

    def test_a_failure_without_a_pod_log_still_names_the_reason(self) -> None:
        gate = _decide(job=JobState(JobPhase.FAILED, "DeadlineExceeded", ""))
        assert f"migration Job {JOB} failed (DeadlineExceeded)" in gate.message
        assert "log" not in gate.message

    def test_a_job_of_that_name_we_do_not_control_is_not_replaced(self) -> None:
        gate = _decide(job=JobState(JobPhase.FOREIGN))
        assert (gate.open, gate.create_job, gate.reason) == (False, False, c.MIGRATING)

    def test_disabled_never_asks_for_a_job_and_reports_what_it_reads(self) -> None:
        gate = _decide(enabled=False, job=None, version=SchemaVersion(4))
        assert (gate.open, gate.create_job, gate.ready, gate.reason) == (
            True,
            False,
            True,
            c.MIGRATIONS_DISABLED,
        )
        assert gate.status == {"version": 4}
        assert "the database reports schema version 4" in gate.message
        unreadable = _decide(enabled=False, version=SchemaVersion(None, "DatabaseUnavailable: refused"))
        assert unreadable.open and "could not be read (DatabaseUnavailable: refused)" in unreadable.message

    def test_disabling_forgets_the_migrated_hash_so_re_enabling_migrates(self) -> None:
        recorded = SchemaStatus(version=5, job_name=JOB, hash="aaaa1111", migrated_hash="aaaa1111")
        disabled = _decide(enabled=False, recorded=recorded)
        assert "migratedHash" not in disabled.status
        again = _decide(recorded=SchemaStatus.model_validate(disabled.status), job=JobState(JobPhase.ABSENT))
        assert again.create_job and not again.open


class TestNeedsVersionRead:
    @pytest.mark.parametrize(
        ("enabled", "recorded", "job", "expected"),
        [
            (False, None, None, True),  # someone else migrates: read every pass
            (True, SchemaStatus(version=5, migrated_hash="h"), None, False),  # steady: no query
            (True, SchemaStatus(version=None, migrated_hash="h"), None, True),  # unknown: try again
            (True, None, JobState(JobPhase.SUCCEEDED), True),  # just migrated
            (True, None, JobState(JobPhase.RUNNING), False),
            (True, None, JobState(JobPhase.FAILED), False),
        ],
    )
    def test_reads_only_when_the_version_may_have_changed(
        self, enabled: bool, recorded: SchemaStatus | None, job: JobState | None, expected: bool
    ) -> None:
        assert needs_version_read(enabled=enabled, inputs_hash="h", recorded=recorded, job=job) is expected


class TestQuoteLog:
    def test_last_lines_on_one_line_bounded(self) -> None:
        log = 'line 1\n{"level": "ERROR"}\n\nsmartflow-runtime: migrate failed: permission denied\n'
        assert (
            quote_log(log)
            == 'line 1 | {"level": "ERROR"} | smartflow-runtime: migrate failed: permission denied'
        )
        assert quote_log("") is None and quote_log("\n\n") is None
        long = quote_log("x" * 5000)
        assert long is not None and len(long) == 803 and long.startswith("...")


class TestStatusWithTheGate:
    def _status(
        self, gate: SchemaGate, deployments: list[dict[str, Any]], problem: Any = None
    ) -> dict[str, Any]:
        return compute_status(
            generation=2,
            mode="split",
            expected_roles=(Role.API,),
            deployments=deployments,
            previous=SmartflowRuntimeStatus(),
            problem=problem,
            now="2026-01-01T00:00:00Z",
            schema=gate,
        )

    @staticmethod
    def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
        return next(cond for cond in status["conditions"] if cond["type"] == type_)

    def _ready_api(self) -> dict[str, Any]:
        return {
            "kind": "Deployment",
            "metadata": {
                "name": "demo-api",
                "generation": 1,
                "labels": {"app.kubernetes.io/component": "api"},
            },
            "spec": {
                "replicas": 1,
                "template": {"spec": {"containers": [{"name": "runtime", "image": "i:1"}]}},
            },
            "status": {"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1},
        }

    def test_ready_requires_schema_ready(self) -> None:
        waiting = _decide(job=JobState(JobPhase.RUNNING))
        status = self._status(waiting, [self._ready_api()])
        assert self._condition(status, c.SCHEMA_READY)["status"] == "False"
        assert self._condition(status, c.READY)["status"] == "False"
        assert self._condition(status, c.READY)["reason"] == c.SCHEMA_NOT_READY
        assert self._condition(status, c.PROGRESSING)["reason"] == c.MIGRATING
        assert self._condition(status, c.DEGRADED)["status"] == "False"
        assert status["schema"] == waiting.status

        migrated = _decide(job=JobState(JobPhase.SUCCEEDED), version=SchemaVersion(5))
        status = self._status(migrated, [self._ready_api()])
        assert self._condition(status, c.SCHEMA_READY)["reason"] == c.MIGRATED
        assert self._condition(status, c.READY)["status"] == "True"

    def test_a_failed_migration_is_degraded_and_the_roles_are_judged_as_they_run(self) -> None:
        failed = _decide(job=JobState(JobPhase.FAILED, "BackoffLimitExceeded", "m"))
        status = self._status(failed, [self._ready_api()], problem=failed.problem)
        assert self._condition(status, c.DEGRADED)["reason"] == c.MIGRATION_FAILED
        assert self._condition(status, c.SCHEMA_READY)["reason"] == c.MIGRATION_FAILED
        assert self._condition(status, c.READY)["reason"] == c.SCHEMA_NOT_READY
        assert status["roles"]["api"]["replicas"] == "1/1"  # the running role is still reported

    def test_the_schema_patch_clears_keys_that_went(self) -> None:
        current = {"schema": {"version": 5, "jobName": JOB, "hash": "h", "migratedHash": "h"}}
        patch = status_patch(current, {"schema": {"version": 5}})
        assert patch == {"schema": {"jobName": None, "hash": None, "migratedHash": None, "version": 5}}
        assert status_patch({"schema": {"version": 5}}, {"schema": {"version": 5}}) == {}
