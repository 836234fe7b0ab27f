"""The per-runtime background loops (periodic resync, configuration check, autoscaler) as plain
asyncio tasks. One :class:`RuntimeLoops` per operator, fed by ``handlers`` from kopf's watch events.

Why not kopf daemons and timers: kopf hard-wires ``requires_finalizer=True`` for both (kopf 1.x,
``kopf/on.py``), so that it can stop them before an object goes. Every runtime then carried kopf's
finalizer, and with the operator stopped or uninstalled deleting a runtime (or its namespace) hung in
Terminating until someone removed it by hand. The operator needs no finalizer: the children go by
owner references and the garbage collector. ``@kopf.on.event`` handlers need none either, so the
loops are started from one (every event, including the initial listing, makes sure they run) and
stopped on the DELETED event, once the object is marked for deletion, or when the operator stops.
kopf removes the finalizer an older operator version left, since no handler asks for it any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Logger = logging.Logger | logging.LoggerAdapter[Any]


class StopFlag:
    """What a loop polls between rounds: ``is_set()`` and ``await wait(timeout)`` (kopf's daemon
    ``stopped`` flag offered the same two calls)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (kopf's flag API)
        """Sleep up to ``timeout`` seconds, waking at once when the flag is set; True if set."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self._event.is_set()


# A loop: (namespace, name, live body, stop flag, logger) -> runs until the flag is set.
Loop = Callable[[str, str, Mapping[str, Any], StopFlag, Logger], Awaitable[None]]


@dataclass
class _Running:
    body: dict[str, Any]  # updated in place on each event: the loops' live view of the runtime
    stopped: StopFlag = field(default_factory=StopFlag)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class RuntimeLoops:
    """Starts each registered loop once per runtime and stops them with it."""

    def __init__(self, loops: Mapping[str, Loop], *, stop_timeout_seconds: float = 10.0) -> None:
        self._loops = dict(loops)
        self._stop_timeout = stop_timeout_seconds
        self._running: dict[tuple[str, str], _Running] = {}

    def running(self) -> set[tuple[str, str]]:
        return set(self._running)

    def view(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The runtime as its latest watch event showed it (a copy), None when it has no loops."""
        running = self._running.get((namespace, name))
        return dict(running.body) if running is not None else None

    async def observe(self, event_type: str | None, body: Mapping[str, Any], *, logger: Logger) -> None:
        """One watch event of a runtime: start its loops, refresh their view, or stop them."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            await self.stop(*key)
            return
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = _Running(body=dict(body))
        else:
            running.body.clear()
            running.body.update(body)
        for loop_name, loop in self._loops.items():
            task = running.tasks.get(loop_name)
            if task is None or task.done():
                running.tasks[loop_name] = asyncio.create_task(
                    self._guarded(loop_name, loop, key, running, logger),
                    name=f"{loop_name}:{key[0]}/{key[1]}",
                )

    async def stop(self, namespace: str, name: str) -> None:
        running = self._running.pop((namespace, name), None)
        if running is None:
            return
        running.stopped.set()
        tasks = list(running.tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Stop every runtime's loops (the operator is stopping)."""
        await asyncio.gather(*(self.stop(*key) for key in list(self._running)))

    @staticmethod
    async def _guarded(
        loop_name: str, loop: Loop, key: tuple[str, str], running: _Running, logger: Logger
    ) -> None:
        # The loops never raise by contract; should one do so anyway, it is logged, and the next
        # event of the runtime starts it again.
        try:
            await loop(key[0], key[1], running.body, running.stopped, logger)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s loop of %s/%s failed", loop_name, *key)
