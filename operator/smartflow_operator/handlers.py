"""kopf handlers: each registers for an occasion and delegates to the one reconcile.

Registered into a given registry (not kopf's global one) so tests can run an operator in-process
without import side effects. No timers, daemons or non-optional deletion handlers: kopf would put
a finalizer on every runtime for those (see ``runtime_loops``); the per-runtime loops are started
from an event handler instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf

from .autoscaling.watched_replicas import WatchedReplicas
from .controller import Controller, Logger
from .kube import CHILD_KINDS, ResourceKind
from .names import (
    APP_NAME,
    GROUP,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    OPERATOR_NAME,
    PLURAL,
    VERSION,
)
from .runtime_loops import RuntimeLoops
from .runtime_metrics import RuntimeStatusMetrics
from .watched_children import WatchedChildren, compact

CHILD_EVENT_DELAY_SECONDS = 0.5
CHILD_LABELS = {LABEL_MANAGED_BY: OPERATOR_NAME, LABEL_NAME: APP_NAME}
# One kopf index per child kind (watched_children); kopf passes each to handlers by this name.
CHILD_INDEXES = {kind.kind: f"children_{kind.plural}" for kind in CHILD_KINDS}


def watched_children() -> WatchedChildren:
    """The view over this registry's child indexes (attached by the first handler that runs)."""
    return WatchedChildren(CHILD_INDEXES.values())


def _attach(memo: Any, handler_kwargs: Mapping[str, Any]) -> None:
    children: WatchedChildren | None = getattr(memo, "watched_children", None)
    if children is not None:
        children.attach(handler_kwargs)


class LeanStatusDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's ``StatusDiffBaseStorage`` whose essence (the spec, labels and annotations kopf
    compares to tell an update from a resync) is built without deep-copying what it then throws
    away. kopf's ``build`` deep-copies the whole object and deletes ``metadata`` and ``status``
    afterwards; it runs on every watch event of every runtime, and the status and
    ``managedFields`` are most of a runtime's bytes: 12.5 % of the operator's CPU while 1,000
    runtimes converged. Here kopf's own ``build`` gets the object without them, so the essence is
    the same (``tests/unit/operator/test_kopf_storage.py`` compares the two). With ``extra_fields``
    (a handler watching a status field; none here) it is kopf's own build unchanged."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=None)


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's bookkeeping under our own prefix, and no automatic Events (we post our own, on change).

    The diff base (the last handled spec, which kopf compares to tell an update from a resync) lives
    in ``status.kopf``, not in an annotation: all annotations of an object share 256 KiB, so a
    runtime with a large spec (a 300 KB env value) was accepted but kopf could never record it, and
    the create handler ran again on every event. In the status the bound is the object's own
    (etcd's 1.5 MiB for spec plus this copy), so specs up to about 700 KB work."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanStatusDiffBaseStorage(name="kopf")
    settings.posting.enabled = False
    settings.scanning.disabled = True  # no cluster-wide CRD/namespace watch: fewer permissions
    settings.watching.server_timeout = 300


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from a loaded ``kubernetes.client.Configuration``."""
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def _register_child_index(registry: kopf.OperatorRegistry, kind: ResourceKind) -> None:
    group, _, version = kind.api_version.rpartition("/")
    selector = (group, version, kind.plural) if group else (version, kind.plural)

    def index(*, body: Mapping[str, Any], namespace: str | None, labels: Mapping[str, str], **_: Any) -> Any:
        instance = labels.get(LABEL_INSTANCE)
        if instance is None:
            return None
        return {(str(namespace), instance): compact(body, api_version=kind.api_version, kind=kind.kind)}

    kopf.index(*selector, labels=CHILD_LABELS, id=CHILD_INDEXES[kind.kind], registry=registry)(index)


def register(registry: kopf.OperatorRegistry) -> None:
    for kind in CHILD_KINDS:
        _register_child_index(registry, kind)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    @kopf.on.login(registry=registry)
    def login(*, memo: Any, **_: Any) -> kopf.ConnectionInfo:
        # kopf watches with the very identity the reconciler's client loaded (kubeconfig or in-cluster).
        controller: Controller = memo.controller
        return connection_info(controller.kube.configuration)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def runtime_changed(
        *,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        memo: Any,
        retry: int,
        reason: Any,
        logger: Logger,
        **kwargs: Any,
    ) -> None:
        _attach(memo, kwargs)  # the child indexes, for the passes this handler starts
        controller: Controller = memo.controller
        new = str(reason) == "create"  # a new runtime: no children to list yet
        await controller.reconcile(str(namespace), name, logger=logger, retry=retry, new=new, body=body)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def runtime_seen(
        *, type: str | None, body: Mapping[str, Any], memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        _attach(memo, kwargs)  # the child indexes, for the passes this handler starts
        # Starts/stops the runtime's periodic resync, config check and autoscaler (runtime_loops):
        # unlike kopf timers and daemons, an event handler puts no finalizer on the runtime.
        # The same events keep its per-runtime metrics current, and drop them when it goes.
        runtime_metrics: RuntimeStatusMetrics = memo.runtime_metrics
        runtime_metrics.observe(type, body)
        loops: RuntimeLoops = memo.runtime_loops
        await loops.observe(type, body, logger=logger)
        metadata = body.get("metadata") or {}
        controller: Controller = memo.controller
        namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
        if type == "DELETED" or metadata.get("deletionTimestamp"):
            # Its consumer group is free again (conflicts.py) and its configuration not needed.
            controller.forget(namespace, name)
        else:
            # A fix to a runtime whose pass failed is tried now, not when kopf's backoff ends.
            await controller.spec_changed(namespace, name, body=body, logger=logger)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels=CHILD_LABELS,
        registry=registry,
    )
    async def child_changed(
        *,
        type: str | None,
        body: Mapping[str, Any],
        namespace: str | None,
        labels: Mapping[str, str],
        memo: Any,
        logger: Logger,
        **kwargs: Any,
    ) -> None:
        _attach(memo, kwargs)  # the child indexes, for the passes this handler starts
        # The autoscaler reads role replicas from here instead of GETting the Deployment each poll.
        watched: WatchedReplicas | None = getattr(memo, "watched_replicas", None)
        if watched is not None:
            watched.observe(type, body)
        # Readiness of a role changed (or someone edited/deleted our Deployment): refresh its runtime
        # (only when the event changed what its status reports, see Controller.child_changed).
        if LABEL_INSTANCE in labels:
            controller: Controller = memo.controller
            # Nothing the pods read changed: the pass reuses the configuration the last one read.
            # Events of the next CHILD_EVENT_DELAY_SECONDS share one pass.
            await controller.child_changed(
                str(namespace),
                labels[LABEL_INSTANCE],
                event_type=type,
                deployment=body,
                logger=logger,
                delay=CHILD_EVENT_DELAY_SECONDS,
            )

    @kopf.on.event(
        "batch",
        "v1",
        "jobs",
        labels=CHILD_LABELS,
        registry=registry,
    )
    async def migration_changed(
        *, namespace: str | None, labels: Mapping[str, str], memo: Any, logger: Logger, **kwargs: Any
    ) -> None:
        _attach(memo, kwargs)  # the child indexes, for the passes this handler starts
        # A migration Job finished (or went): the roles may roll now, or the failure is reported.
        if LABEL_INSTANCE in labels:
            controller: Controller = memo.controller
            await controller.resync(str(namespace), labels[LABEL_INSTANCE], logger=logger)
