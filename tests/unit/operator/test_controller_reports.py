"""Autoscaler reports through the controller's gate, and the watch view a reusing pass takes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from smartflow_operator.controller import Controller, combined
from smartflow_operator.kube import KubeClient
from smartflow_operator.metrics import OperatorMetrics
from smartflow_operator.reconcile import ReconcileResult


class _NoApi:
    def close(self) -> None:
        pass


def _controller() -> Controller:
    return Controller(kube=KubeClient(_NoApi()), metrics=OperatorMetrics())  # type: ignore[arg-type]


READY = {"type": "Ready", "status": "True", "reason": "AllRolesReady"}
RUNTIME = {
    "metadata": {"namespace": "team", "name": "demo", "resourceVersion": "7", "generation": 3, "uid": "u"},
    "status": {"conditions": [READY], "roles": {"api": {"replicas": "1/1"}}},
}


def _report(role: str, condition_type: str, lag: int) -> Any:
    def patch_for(current: Mapping[str, Any]) -> dict[str, Any]:
        live = [c for c in current["status"]["conditions"] if c["type"] != condition_type]
        wanted = {"type": condition_type, "status": "True", "reason": "Idle"}
        return {"conditions": [*live, wanted], "roles": {role: {"lag": lag}}}

    return patch_for


def test_combined_reports_keep_each_writers_condition_and_roles() -> None:
    patch = combined(
        [_report("relay", "RelayAutoscaling", 4), _report("consumer", "ConsumerAutoscaling", 2)]
    )(RUNTIME)
    assert sorted(c["type"] for c in patch["conditions"]) == [
        "ConsumerAutoscaling",
        "Ready",
        "RelayAutoscaling",
    ]
    assert patch["roles"] == {"relay": {"lag": 4}, "consumer": {"lag": 2}}


async def test_reports_waiting_behind_a_pass_share_one_write() -> None:
    controller = _controller()
    written: list[dict[str, Any]] = []

    async def patch_status(_kind: Any, _ns: str, _name: str, patch: dict[str, Any], **_: Any) -> None:
        written.append(patch)

    controller.kube.patch_status = patch_status  # type: ignore[method-assign]
    release = asyncio.Event()

    async def a_pass() -> ReconcileResult:
        await release.wait()
        return ReconcileResult()

    key = ("team", "demo")
    holding = asyncio.create_task(controller._serialized(key, a_pass))
    await asyncio.sleep(0)
    relay = asyncio.create_task(
        controller.report("team", "demo", body=RUNTIME, report=_report("relay", "RelayAutoscaling", 4))
    )
    await asyncio.sleep(0)
    await controller.report(
        "team", "demo", body=RUNTIME, report=_report("consumer", "ConsumerAutoscaling", 2)
    )
    assert written == []  # the gate is held: nothing written while the pass runs
    release.set()
    await asyncio.gather(holding, relay)
    assert len(written) == 1
    assert written[0]["roles"] == {"relay": {"lag": 4}, "consumer": {"lag": 2}}


def test_a_reusing_pass_takes_the_watch_view_only_at_the_generation_its_configuration_was_read_for() -> None:
    controller = _controller()
    key = ("team", "demo")
    controller.views = lambda namespace, name: RUNTIME if (namespace, name) == key else None
    assert controller._seen_for(key) is None  # no full pass yet: read the runtime
    controller._config[key] = (3, {})
    assert controller._seen_for(key) is RUNTIME
    controller._config[key] = (4, {})  # a newer spec was read than the view shows: read it
    assert controller._seen_for(key) is None
    assert controller._seen_for(("team", "other")) is None


async def test_a_change_of_a_runtime_goes_ahead_of_the_resyncs_waiting_for_a_pass_slot() -> None:
    controller = Controller(
        kube=KubeClient(_NoApi()),  # type: ignore[arg-type]
        metrics=OperatorMetrics(),
        max_concurrent_passes=1,
    )
    ran: list[str] = []
    release = asyncio.Event()

    async def measured(_ns: str, name: str, _logger: Any, **_: Any) -> ReconcileResult:
        ran.append(name)
        await release.wait()
        return ReconcileResult()

    controller._measured = measured  # type: ignore[method-assign]
    log = logging.getLogger("test")
    busy = asyncio.create_task(controller.resync("team", "busy", logger=log))
    await asyncio.sleep(0)
    resyncs = [
        asyncio.create_task(controller.resync("team", f"resync-{i}", logger=log, periodic=True))
        for i in range(3)
    ]
    await asyncio.sleep(0)
    created = asyncio.create_task(controller.reconcile("team", "created", logger=log, new=True))
    await asyncio.sleep(0)
    assert ran == ["busy"]  # one slot, held
    release.set()
    await asyncio.gather(busy, created, *resyncs)
    assert ran == ["busy", "created", "resync-0", "resync-1", "resync-2"]
