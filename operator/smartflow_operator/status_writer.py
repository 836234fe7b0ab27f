"""The one way the operator writes a SmartflowRuntime's status: a merge patch computed from the
object as read, sent with that read's ``resourceVersion`` as a precondition.

Called by the reconciler and by the autoscaler, which write ``status`` concurrently (the
reconciler's conditions and role replicas; the autoscaler's ``roles.<role>.{lag,autoscaling}``
and its own conditions). A merge patch replaces lists, so a ``conditions`` list built from a
stale read would drop the other writer's newest condition. With the precondition such a patch
fails with 409 Conflict instead; the object is read again and the patch rebuilt from it, so each
writer only ever replaces its own condition types (``conditions.merge_by_type``) in the current
list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import Conflict
from .kube import KubeClient, ResourceKind

MAX_ATTEMPTS = 5

PatchFor = Callable[[Mapping[str, Any]], Mapping[str, Any]]


async def write_status(
    kube: KubeClient,
    kind: ResourceKind,
    *,
    body: Mapping[str, Any],
    patch_for: PatchFor,
    attempts: int = MAX_ATTEMPTS,
) -> Mapping[str, Any] | None:
    """Patch ``status`` with ``patch_for(object)``, under the object's ``resourceVersion``.

    ``body`` is the object as the caller last read it. On a conflict the object is read again and
    ``patch_for`` called with the fresh one. Returns the patch that was written, or None when
    there was nothing to write (an empty patch) or the object is gone. Raises ``Conflict`` (a
    retriable ``KubeError``) when every attempt conflicted.
    """
    metadata = body["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    current = body
    for _ in range(attempts):
        patch = patch_for(current)
        if not patch:
            return None
        try:
            await kube.patch_status(
                kind, namespace, name, patch, resource_version=current["metadata"].get("resourceVersion")
            )
            return patch
        except Conflict:
            fresh = await kube.get(kind, namespace, name)
            if fresh is None or fresh["metadata"].get("uid") != metadata.get("uid"):
                return None
            current = fresh
    raise Conflict(f"status of {namespace}/{name}: still conflicting after {attempts} attempts", status=409)
