"""The controller's per-runtime serialization and the JSON log format."""

from __future__ import annotations

import asyncio
import json
import logging

import kopf
import pytest

from smartflow_operator.controller import Controller, first_resync_delay
from smartflow_operator.errors import ConfigurationError
from smartflow_operator.kube import KubeClient
from smartflow_operator.logs import JsonFormatter, RoutineSuccessFilter
from smartflow_operator.metrics import OperatorMetrics
from smartflow_operator.reconcile import ReconcileResult


class _NoApi:
    def close(self) -> None:
        pass


def _controller() -> Controller:
    return Controller(kube=KubeClient(_NoApi()), metrics=OperatorMetrics())  # type: ignore[arg-type]


class TestSerializedPasses:
    async def test_passes_of_one_runtime_never_overlap_and_queued_resyncs_coalesce(self) -> None:
        controller = _controller()
        running, overlaps, runs = 0, 0, 0
        release = asyncio.Event()

        async def one_pass() -> ReconcileResult:
            nonlocal running, overlaps, runs
            running += 1
            runs += 1
            overlaps = max(overlaps, running)
            await release.wait()
            running -= 1
            return ReconcileResult()

        key = ("team", "demo")
        first = asyncio.create_task(controller._serialized(key, one_pass))
        await asyncio.sleep(0)
        queued = asyncio.create_task(controller._serialized(key, one_pass, coalesce=True))
        await asyncio.sleep(0)
        dropped = await controller._serialized(key, one_pass, coalesce=True)  # one is already queued
        other = asyncio.create_task(controller._serialized(("team", "other"), one_pass))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, queued, other)
        assert dropped is None
        assert runs == 3  # first, the queued resync, and the other runtime
        assert overlaps == 2  # only across runtimes


class TestPeriodicResync:
    def test_the_first_waits_of_runtimes_resumed_together_spread_over_a_whole_interval(self) -> None:
        assert first_resync_delay(60.0, 0.0) == 30.0
        assert first_resync_delay(60.0, 0.5) == 60.0  # the mean period stays the interval
        assert first_resync_delay(60.0, 0.999) < 90.0
        delays = sorted(first_resync_delay(60.0, i / 1000) for i in range(1000))
        assert delays[-1] - delays[0] > 59.0  # over a whole interval, not in one second

    async def test_only_the_first_wait_is_spread_then_every_interval(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        controller = _controller()
        passes: list[str] = []
        waits: list[float] = []

        async def resync(namespace: str, name: str, **_: object) -> None:
            passes.append(name)

        class Flag:
            def is_set(self) -> bool:
                return len(waits) > 3

            async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (the protocol)
                waits.append(float(timeout or 0))
                return len(waits) > 3  # set after the third pass

        monkeypatch.setattr("smartflow_operator.controller.random.random", lambda: 0.25)
        monkeypatch.setattr(controller, "resync", resync)
        await controller.run_resync("ns", "rt", interval=60.0, stopped=Flag(), logger=logging.getLogger())
        assert waits == [45.0, 60.0, 60.0, 60.0]
        assert passes == ["rt", "rt", "rt"]


def _body(generation: int) -> dict[str, object]:
    return {"metadata": {"namespace": "ns", "name": "rt", "generation": generation}, "spec": {}}


class TestSpecChangeAfterAFailedPass:
    """A fixed spec is tried when its event arrives, not when kopf's backoff of the failed handler ends."""

    async def test_a_new_generation_after_a_failure_gets_one_pass_at_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        controller = _controller()
        outcomes = [ConfigurationError("ConsumerGroupConflict", "spec.kafka: taken"), None]
        passes: list[str] = []

        async def reconcile(namespace: str, name: str, **options: object) -> ReconcileResult:
            passes.append("change" if options["new"] else "resync")
            if options["new"]:  # kopf's body, not a GET
                assert options["seen"] == _body(1)
            outcome = outcomes.pop(0)
            if outcome is not None:
                raise outcome
            return ReconcileResult()

        monkeypatch.setattr("smartflow_operator.controller.reconcile", reconcile)
        log = logging.getLogger()
        with pytest.raises(kopf.TemporaryError) as refused:
            await controller.reconcile("ns", "rt", logger=log, retry=1, new=True, body=_body(1))
        assert refused.value.delay == 20.0  # kopf would wait this long before trying again
        await controller.spec_changed("ns", "rt", body=_body(1), logger=log)  # its own status write
        assert passes == ["change"]
        await controller.spec_changed("ns", "rt", body=_body(2), logger=log)  # the user's fix
        assert passes == ["change", "resync"]
        await controller.spec_changed("ns", "rt", body=_body(3), logger=log)  # reconciled: kopf's turn
        assert passes == ["change", "resync"]

    async def test_a_new_generation_that_still_fails_is_tried_once(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        controller = _controller()
        passes = 0

        async def reconcile(*_: object, **__: object) -> ReconcileResult:
            nonlocal passes
            passes += 1
            raise ConfigurationError("SecretNotFound", "spec.database.dsnSecretRef: no Secret db")

        monkeypatch.setattr("smartflow_operator.controller.reconcile", reconcile)
        log = logging.getLogger()
        with pytest.raises(kopf.TemporaryError):
            await controller.reconcile("ns", "rt", logger=log, body=_body(4))
        for _ in range(3):  # the events of its own status writes show the same generation
            await controller.spec_changed("ns", "rt", body=_body(5), logger=log)
        assert passes == 2
        controller.forget("ns", "rt")
        await controller.spec_changed("ns", "rt", body=_body(6), logger=log)
        assert passes == 2  # gone: nothing remembered


class TestJsonLogs:
    def test_lines_carry_the_runtime(self) -> None:
        record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "applied %s", ("x",), None)
        record.k8s_ref = {"namespace": "team", "name": "demo", "kind": "SmartflowRuntime"}
        entry = json.loads(JsonFormatter().format(record))
        assert entry["message"] == "applied x"
        assert (entry["namespace"], entry["name"], entry["level"]) == ("team", "demo", "INFO")

    def test_routine_kopf_successes_are_demoted(self) -> None:
        routine = logging.LogRecord(
            "kopf.objects", logging.INFO, __file__, 1, "Timer 'resync' succeeded.", (), None
        )
        useful = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "reconciled", (), None)
        assert RoutineSuccessFilter().filter(useful) is True
        RoutineSuccessFilter().filter(routine)
        assert routine.levelname == "DEBUG"


def test_kopf_temporary_failures_are_warnings_said_once_per_object_and_problem() -> None:
    from smartflow_operator.logs import TemporaryFailureFilter

    log_filter = TemporaryFailureFilter()

    def record(message: str, name: str = "shop") -> logging.LogRecord:
        entry = logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, message, None, None)
        entry.k8s_ref = {"namespace": "team", "name": name}
        return entry

    failed = "Handler 'runtime_changed' failed temporarily: SecretNotFound: Secret team/db does not exist"
    first = record(failed)
    assert log_filter.filter(first) and first.levelno == logging.WARNING
    assert not log_filter.filter(record(failed))  # the same retry again: silent
    assert log_filter.filter(record(failed, name="other"))  # another object: said
    other = failed.replace("SecretNotFound", "SecretKeyNotFound")
    assert log_filter.filter(record(other))  # a new problem: said
    assert log_filter.filter(record("Handler 'runtime_changed' succeeded."))
    assert log_filter.filter(record(other))  # the same problem after a success: said again
