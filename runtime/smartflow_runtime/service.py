"""The lifecycle every long-running part of a role follows, as the role runner sees it.

The relay, the consumer, the memory worker and the api's HTTP server all satisfy
:class:`Service`: keyword-argument constructors, ``await start()`` (starts the loop; it does not
wait for PostgreSQL or Kafka, the loop connects and reconnects by itself), ``await stop()``
(drains, idempotent), ``is_alive()`` (false only once a loop task has ended: the runner then
exits non-zero) and ``unready()`` (which dependency is down right now, and since when: the
runner reports it on ``/readyz`` and waits). ``is_healthy()`` is both at once. The runner in
:mod:`smartflow_runtime.roles` only talks to this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .readiness import Unready


@runtime_checkable
class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def is_alive(self) -> bool: ...

    def unready(self) -> Sequence[Unready]: ...


@dataclass(frozen=True)
class NamedService:
    """A service with the name it is logged and reported under (``relay``, ``consumer``, ...)."""

    name: str
    service: Service
