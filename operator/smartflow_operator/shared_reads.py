"""One GET of a Secret or ConfigMap serves every per-runtime loop that asks for it within a short
time. Held by the operator (``runner``) and passed to the configuration check and the autoscaler.

Why: each runtime's configuration check reads the objects its spec references every few seconds,
and its relay autoscaler reads the DSN Secret on every poll. Runtimes that reference the same
object (one database Secret for a team's runtimes, say) made the same GET once per runtime: at
1,000 runtimes on one Secret that was hundreds of identical requests a second. Here a read younger
than ``max_age_seconds`` is reused, and concurrent reads of one object share one request, so the
cost is one GET per distinct object per ``max_age_seconds`` however many runtimes read it. A
change is still seen within ``max_age_seconds`` plus the reader's own interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from .errors import KubeError
from .kube import KubeClient, ResourceKind

Clock = Callable[[], float]
Key = tuple[str, str, str]  # (kind, namespace, name)


class Reader(Protocol):
    """What reads a Secret or ConfigMap for a pass: the client, :class:`SharedReads` or
    :class:`PresentOrFresh`."""

    async def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None: ...


class SharedReads:
    """``await reads.get(kind, namespace, name)``: ``kube.get`` shared for ``max_age_seconds``."""

    def __init__(
        self, kube: KubeClient, *, max_age_seconds: float = 2.5, clock: Clock = time.monotonic
    ) -> None:
        self.kube = kube
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._read: dict[Key, tuple[float, dict[str, Any] | None]] = {}
        self._in_flight: dict[Key, asyncio.Future[dict[str, Any] | None]] = {}
        self._swept = clock()

    async def get(
        self, kind: ResourceKind, namespace: str, name: str, *, shared_absence: bool = True
    ) -> dict[str, Any] | None:
        """The object (None when it does not exist), read at most ``max_age_seconds`` ago.
        ``shared_absence=False``: a cached "does not exist" is not reused (read again).
        Raises what ``KubeClient.get`` raises; a failed read is not kept."""
        key = (kind.kind, namespace, name)
        now = self._clock()
        known = self._read.get(key)
        if (
            known is not None
            and now - known[0] < self.max_age_seconds
            and (shared_absence or known[1] is not None)
        ):
            return known[1]
        pending = self._in_flight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            obj = await self.kube.get(kind, namespace, name)
        except asyncio.CancelledError:
            # This reader's loop is stopping; the others sharing the read retry like after any
            # failed read instead of being cancelled with it.
            self._fail(
                future, KubeError(f"GET {kind.kind} {namespace}/{name}: the shared read was cancelled")
            )
            raise
        except Exception as error:
            self._fail(future, error)
            raise
        finally:
            self._in_flight.pop(key, None)
        self._read[key] = (now, obj)
        future.set_result(obj)
        self._forget_old(now)
        return obj

    @staticmethod
    def _fail(future: asyncio.Future[dict[str, Any] | None], error: BaseException) -> None:
        future.set_exception(error)
        future.exception()  # retrieved: a failure nobody else waited for is not logged as lost

    def _forget_old(self, now: float) -> None:
        # Reads older than a few intervals go, once per few intervals (so the sweep costs O(1) a read
        # on average): a runtime gone leaves nothing behind.
        if now - self._swept < 4 * self.max_age_seconds:
            return
        self._swept = now
        for key in [key for key, (at, _) in self._read.items() if now - at >= 4 * self.max_age_seconds]:
            del self._read[key]


class PresentOrFresh:
    """The shared reads as a change pass (create, update, resume, retry) uses them: an object read
    in the last ``max_age_seconds`` is reused, but an absence never is (it is read again). With
    1,000 runtimes created on one Secret that is a GET per interval instead of one per runtime,
    and a user who creates the Secret and then the runtime, or adds a missing one, is never told
    it is missing from a read older than their fix. A copy of a present object is at most
    ``max_age_seconds`` old: an informer's cache trails the same way, and the configuration check
    rolls the pods when the content changed."""

    def __init__(self, reads: SharedReads) -> None:
        self._reads = reads

    async def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._reads.get(kind, namespace, name, shared_absence=False)
