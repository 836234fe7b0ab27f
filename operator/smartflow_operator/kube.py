"""The operator's only door to the Kubernetes API (besides kopf's own watches): get, list,
server-side apply, delete, status patch and Events, on plain dicts.

Why the official *synchronous* client, run in threads: it already understands every way a
kubeconfig or a pod can authenticate (exec plugins, rotated in-cluster tokens, client certs),
and kopf logs in through the same library, so both see one identity. A call waits for the
apiserver in a thread of the client's own pool (16 by default, as many pooled connections), so
up to that many requests are in flight while the event loop goes on (urgent ones, see
``priority``, take the next free thread first), and
only the client's transport is used (``param_serialize`` + ``call_api``): no generated models,
one generic path per kind. Errors become ``errors.KubeError`` subclasses here; nothing above
this module sees the client's exception types.

Every request is counted by HTTP method in ``calls`` (tests prove a no-op resync writes nothing),
and apiserver ``Warning`` headers (e.g. Pod Security admission) are kept in ``warnings`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from .errors import Conflict, Invalid, KubeError, NotFound, NotLeading
from .names import FIELD_MANAGER, GROUP, PLURAL, VERSION
from .priority import PrioritySlots

logger = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_THREADS = 16  # requests in flight at once (see KubeClient)
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_PATCH_CONTENT_TYPE = "application/merge-patch+json"


@dataclass(frozen=True)
class ResourceKind:
    """Where a namespaced kind lives in the API."""

    api_version: str
    plural: str
    kind: str

    @property
    def base(self) -> str:
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def collection(self, namespace: str) -> str:
        return f"{self.base}/namespaces/{namespace}/{self.plural}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{name}"


RUNTIMES = ResourceKind(f"{GROUP}/{VERSION}", PLURAL, "SmartflowRuntime")
DEPLOYMENTS = ResourceKind("apps/v1", "deployments", "Deployment")
SERVICES = ResourceKind("v1", "services", "Service")
DISRUPTION_BUDGETS = ResourceKind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget")
SECRETS = ResourceKind("v1", "secrets", "Secret")
CONFIG_MAPS = ResourceKind("v1", "configmaps", "ConfigMap")
EVENTS = ResourceKind("v1", "events", "Event")
JOBS = ResourceKind("batch/v1", "jobs", "Job")
PODS = ResourceKind("v1", "pods", "Pod")
NETWORK_POLICIES = ResourceKind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy")
LEASES = ResourceKind("coordination.k8s.io/v1", "leases", "Lease")

CHILD_KINDS = (
    DEPLOYMENTS,
    SERVICES,
    DISRUPTION_BUDGETS,
    NETWORK_POLICIES,
)  # pruned by label; Jobs are not (see migration)
_BY_KIND = {kind.kind: kind for kind in (RUNTIMES, *CHILD_KINDS, SECRETS, CONFIG_MAPS, EVENTS, JOBS, PODS)}


def resource_of(path: str) -> str:
    """The resource an API path names: its plural, with the subresource if any
    (``/apis/smartflow.io/v1alpha1/namespaces/ns/smartflowruntimes/x/status`` ->
    ``smartflowruntimes/status``). Pure; a bounded set of values, fit for a metric label."""
    parts = [part for part in path.split("?", 1)[0].split("/") if part]
    if "namespaces" in parts:
        at = parts.index("namespaces")
        rest = parts[at + 2 :] if len(parts) > at + 2 else ["namespaces"]
    else:
        rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if not rest:
        return "-"
    return rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"


def kind_of(manifest: Mapping[str, Any]) -> ResourceKind:
    return _BY_KIND[str(manifest["kind"])]


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig`` (or $KUBECONFIG / ~/.kube/config), else the in-cluster config."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except config.ConfigException:
        if kubeconfig:
            raise
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class KubeClient:
    """Async facade over the sync client; one instance per operator (or per test)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        timeout_seconds: float = 30.0,
        on_request: Callable[[str, str], None] | None = None,
        may_write: Callable[[], bool] | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self._api = api_client
        # Requests in flight at once: each waits in a thread of this client's own pool (not asyncio's
        # default one, 6 threads on 2 cores, shared with everything else), and urllib3 keeps as many
        # connections so no request waits for a free one.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        # Who gets the next free thread: urgent requests (a user's change, a scaling decision; see
        # ``priority``) before background ones, instead of the executor's arrival order.
        self._slots = PrioritySlots(threads)
        pool = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
        if pool is not None:
            pool.connection_pool_kw["maxsize"] = threads
        self.field_manager = field_manager
        self._timeout = timeout_seconds
        self.calls: Counter[str] = Counter()
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, path): what tests count
        self.warnings: deque[str] = deque(maxlen=100)  # the latest apiserver warnings
        self._on_request = on_request
        # Leader election's guard (``LeaderElector.may_write``): checked right before each write.
        self.may_write = may_write

    @property
    def configuration(self) -> client.Configuration:
        """The loaded connection settings (kopf logs in with the same identity)."""
        configuration: client.Configuration = self._api.configuration
        return configuration

    @property
    def writes(self) -> int:
        return sum(count for method, count in self.calls.items() if method in WRITE_METHODS)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._threads.shutdown(wait=False, cancel_futures=True)

    # -- transport ---------------------------------------------------------------------------

    def _request_sync(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        text: bool = False,
    ) -> Any:
        if method in WRITE_METHODS and self.may_write is not None and not self.may_write():
            raise NotLeading(f"{method} {path}: refused, this replica does not hold the leader lease")
        # pods/log answers text/plain, but its errors are Status objects: without JSON in the Accept
        # list the apiserver replaces any such error by a 406 that hides the real one.
        headers = {"Accept": "text/plain, application/json" if text else "application/json"}
        if content_type or body is not None:
            # Explicit: a proxy in between would otherwise label the body application/octet-stream.
            headers["Content-Type"] = content_type or "application/json"
        self.calls[method] += 1
        self.requests[(method, path)] += 1
        if self._on_request is not None:
            self._on_request(method, resource_of(path))
        try:
            serialized = self._api.param_serialize(
                method,
                path,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*serialized, _request_timeout=self._timeout)
            raw = response.read()  # type: ignore[no-untyped-call]
        except Exception as error:  # urllib3/SSL/connection errors: retriable by the caller
            raise KubeError(f"{method} {path}: {error}") from error
        for warning in response.headers.getlist("Warning"):
            self.warnings.append(warning)
            logger.warning("apiserver warning on %s %s: %s", method, path, warning)
        if text and response.status < 400:
            return raw.decode(errors="replace") if raw else ""
        try:
            payload: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:  # e.g. a plain-text error from the kubelet behind pods/log
            payload = {"message": raw.decode(errors="replace")[:500]}
        if response.status >= 400:
            raise _error_for(response.status, method, path, payload)
        return payload

    async def _in_thread(self, method: str, path: str, **kwargs: Any) -> Any:
        call = functools.partial(self._request_sync, method, path, **kwargs)
        async with self._slots.slot():
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        payload: dict[str, Any] = await self._in_thread(method, path, **kwargs)
        return payload

    # -- operations --------------------------------------------------------------------------

    async def get(self, kind: ResourceKind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", kind.item(namespace, name))
        except NotFound:
            return None

    async def list(
        self, kind: ResourceKind, namespace: str, *, labels: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        payload = await self._request("GET", kind.collection(namespace), query=[("labelSelector", selector)])
        items: list[dict[str, Any]] = payload.get("items", [])
        for item in items:  # list items carry no kind; callers want whole objects
            item.setdefault("apiVersion", kind.api_version)
            item.setdefault("kind", kind.kind)
        return items

    async def apply(
        self, manifest: Mapping[str, Any], *, force: bool = True, field_manager: str | None = None
    ) -> dict[str, Any]:
        """Server-side apply under our field manager. ``force`` takes over fields another manager set
        (e.g. someone's ``kubectl edit`` of the image): the runtime spec is the source of truth."""
        kind = kind_of(manifest)
        metadata = manifest["metadata"]
        query = [("fieldManager", field_manager or self.field_manager), ("fieldValidation", "Strict")]
        if force:
            query.append(("force", "true"))
        try:
            return await self._request(
                "PATCH",
                kind.item(metadata["namespace"], metadata["name"]),
                query=query,
                body=dict(manifest),
                content_type=APPLY_CONTENT_TYPE,
            )
        except KubeError as error:
            if error.status != 500:
                raise
            # Server-side apply answers 500 (no reason) when the object has a field its schema does
            # not declare (e.g. a typo inside a passed-through affinity). A strict dry-run create
            # of the same object tells an invalid object (400/422) from a real server error.
            await self._dry_run_create(kind, manifest)
            raise

    async def _dry_run_create(self, kind: ResourceKind, manifest: Mapping[str, Any]) -> None:
        # Conflict/NotFound: the object is valid (it exists already); the apply error was something else.
        with contextlib.suppress(Conflict, NotFound):
            await self._request(
                "POST",
                kind.collection(manifest["metadata"]["namespace"]),
                query=[
                    ("dryRun", "All"),
                    ("fieldValidation", "Strict"),
                    ("fieldManager", self.field_manager),
                ],
                body=dict(manifest),
            )

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create (POST) an object that is never updated afterwards, e.g. a Job (its template is
        immutable). Raises ``Conflict`` when it exists already."""
        kind = kind_of(manifest)
        return await self._request(
            "POST",
            kind.collection(manifest["metadata"]["namespace"]),
            query=[("fieldManager", self.field_manager), ("fieldValidation", "Strict")],
            body=dict(manifest),
        )

    async def read_log(self, namespace: str, pod: str, *, container: str, tail_lines: int) -> str:
        """The last ``tail_lines`` of a container's log (``pods/log``)."""
        path = PODS.item(namespace, pod) + "/log"
        query = [("container", container), ("tailLines", str(tail_lines))]
        log: str = await self._in_thread("GET", path, query=query, text=True)
        return log

    async def delete(self, kind: ResourceKind, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete (background propagation); with ``uid``, only that incarnation. False if already gone."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", kind.item(namespace, name), body=body)
        except NotFound:
            return False
        return True

    async def patch_status(
        self,
        kind: ResourceKind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (``None`` values remove keys).

        With ``resource_version`` the patch applies only to that version of the object, else it
        fails with ``Conflict`` (optimistic concurrency; see ``status_writer``)."""
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._request(
            "PATCH",
            kind.item(namespace, name) + "/status",
            body=body,
            content_type=MERGE_PATCH_CONTENT_TYPE,
        )

    async def create_in(self, kind: ResourceKind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` into ``kind``'s collection in ``namespace`` (e.g. the leader Lease)."""
        return await self._request("POST", kind.collection(namespace), body=dict(body))

    async def replace(
        self, kind: ResourceKind, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT (an ``update``): with the body's ``metadata.resourceVersion`` it fails with Conflict
        when the object changed since it was read (leader election relies on this)."""
        return await self._request("PUT", kind.item(namespace, name), body=dict(body))

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        await self._request("POST", EVENTS.collection(namespace), body=dict(event))


def _error_for(status: int, method: str, path: str, payload: Mapping[str, Any]) -> KubeError:
    message = f"{method} {path}: {status} {payload.get('message') or payload.get('reason') or ''}".strip()
    reason = str(payload.get("reason", ""))
    if status == 404:
        return NotFound(message, status=status, reason=reason)
    if status == 409:
        return Conflict(message, status=status, reason=reason)
    if status in (400, 422):
        return Invalid(message, status=status, reason=reason)
    return KubeError(message, status=status, reason=reason)
