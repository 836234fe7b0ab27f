"""Notice promptly when a Secret or ConfigMap a runtime reads has changed, with ``get`` only.

A role's pods carry a hash of the configuration values they read (``config_refs``), so a changed
Secret must lead to a reconcile. Watching Secrets through kopf would need ``list``/``watch`` on
every Secret in the watched namespaces (the API cannot narrow those verbs to some names), i.e.
read access to all of them. Instead, a small loop per runtime (one of the per-runtime loops of
``runtime_loops``) gets just the objects the spec references every ``interval`` seconds and compares
their ``resourceVersion`` with the previous look; any change (also creation or deletion) asks the
controller for a pass (``Controller.resync``: serialized and coalesced, a no-op pass writes
nothing). Cost: one GET per referenced object per interval (default 5 s), shared by every runtime
that references it (``shared_reads``: a read younger than half the interval is reused), and a
change reaches the pod template within about 1.5 intervals instead of the periodic resync's 60 s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from .config_refs import Kind, all_referenced_objects
from .errors import KubeError
from .kube import CONFIG_MAPS, SECRETS, KubeClient
from .resource import SmartflowRuntime
from .shared_reads import SharedReads

DEFAULT_INTERVAL_SECONDS = 5.0

Ref = tuple[Kind, str]
Versions = dict[Ref, str | None]  # None: the object does not exist
OnChange = Callable[[str, str], Awaitable[object]]
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Stopped(Protocol):
    """The loop's stop flag (``runtime_loops.StopFlag``, or anything alike in tests)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[object]: ...


def changed_refs(previous: Versions | None, current: Versions) -> list[Ref]:
    """References whose object changed since ``previous`` (the first look reports nothing; a
    reference new to the spec is not a change: the spec change itself triggers a pass)."""
    if previous is None:
        return []
    return sorted(ref for ref, version in current.items() if ref in previous and previous[ref] != version)


class ConfigWatcher:
    """One per operator (held in kopf's memo); :meth:`run` once per runtime."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        on_change: OnChange,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        reads: SharedReads | None = None,
    ) -> None:
        self.kube = kube
        self.interval_seconds = interval_seconds
        self._on_change = on_change
        # Runtimes referencing the same object share its reads (``shared_reads``).
        self.reads = reads or SharedReads(kube, max_age_seconds=0.0)

    async def versions(self, body: Mapping[str, Any]) -> Versions:
        """The resourceVersion of every Secret/ConfigMap the runtime ``body`` references."""
        try:
            runtime = SmartflowRuntime.from_object(body, with_status=False)
        except ValidationError:
            return {}  # the reconciler reports the invalid spec
        versions: Versions = {}
        for kind, name in all_referenced_objects(runtime.spec):
            obj = await self.reads.get(SECRETS if kind == "Secret" else CONFIG_MAPS, runtime.namespace, name)
            versions[(kind, name)] = None if obj is None else str(obj["metadata"].get("resourceVersion"))
        return versions

    async def run(
        self,
        namespace: str,
        name: str,
        *,
        body: Mapping[str, Any],
        stopped: Stopped,
        logger: Logger,
    ) -> None:
        """Check every ``interval_seconds`` until ``stopped``; ``body`` is the live view of the
        runtime, updated in place on each watch event (so a spec change is seen without a read).
        Never raises."""
        seen: Versions | None = None
        while not stopped.is_set():
            try:
                current = await self.versions(body)
                changed = changed_refs(seen, current)
                seen = current
                if changed:
                    what = ", ".join(f"{kind} {ref}" for kind, ref in changed)
                    logger.info("referenced configuration changed (%s): reconciling", what)
                    await self._on_change(namespace, name)
            except KubeError as error:
                logger.debug("configuration check failed, will retry: %s", error)
            await stopped.wait(self.interval_seconds)
