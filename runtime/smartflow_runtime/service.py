"""The lifecycle every long-running part of a role follows, as the role runner sees it.

The relay, the consumer, the memory worker and the api's HTTP server all satisfy
:class:`Service`: keyword-argument constructors, ``await start()``, ``await stop()`` (drains,
idempotent) and ``is_healthy()`` (false once its loop has died or its dependency is gone). The
runner in :mod:`smartflow_runtime.roles` only talks to this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def is_healthy(self) -> bool: ...


@dataclass(frozen=True)
class NamedService:
    """A service with the name it is logged and reported under (``relay``, ``consumer``, ...)."""

    name: str
    service: Service
