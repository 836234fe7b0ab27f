"""The operator as users run it: a separate ``smartflow-operator run`` process logged in with the
chart's ServiceAccount token (RBAC enforced), driven through one scenario that touches every
permission the chart grants:

0. a split runtime (envFrom a ConfigMap, DSN from a Secret, api with 2 replicas) of an image that
   cannot migrate -> first only its migration Job (created, watched, read by name); its pod fails
   on the node -> Degraded/MigrationFailed, for which the operator lists the Job's pod and reads its
   log; the runtime image -> a new Job, which succeeds on the node;
1. -> four role Deployments, the api Service, the api PodDisruptionBudget and the runtime's
   NetworkPolicy (``spec.networkPolicy``), all created by server-side apply;
2. the role pods get ready on the node (the deployment controller reports it) -> status ``Ready``;
3. the relay hangs (its processes stopped) and due outbox rows appear -> the relay is scaled up from
   lag; the rows go -> it comes back down;
4. api back to 1 replica and the NetworkPolicy off -> its disruption budget and the policy are
   pruned; mode ``all`` -> the role Deployments are pruned and one ``all`` Deployment replaces them.

Any ``403``/``forbidden`` in the operator's log stops the scenario at once (``Forbidden``); a step
that does not happen in time fails it (``StepTimeout``).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from kubernetes import client
from kubernetes.client.rest import ApiException

from smartflow_devstack.process import alive, free_port, spawn, stop
from smartflow_devstack.versions import REPO_ROOT
from tests.integration.realpods import frozen, pod_dsn

T = TypeVar("T")

OPERATOR_CLI = REPO_ROOT / ".venv" / "bin" / "smartflow-operator"
GROUP, VERSION, PLURAL = "smartflow.io", "v1alpha1", "smartflowruntimes"
RUNTIME = "shop"
SPLIT_DEPLOYMENTS = [f"{RUNTIME}-{role}" for role in ("api", "relay", "consumer", "memory-worker")]
RELAY = f"{RUNTIME}-relay"
# Every authorization failure says "forbidden" (the apiserver's reason and message); a bare 403 is
# matched only where a status code is printed, never inside a timestamp like "11:41:19,403".
FORBIDDEN = re.compile(r"forbidden|status[=: ]+403\b|: 403\b", re.IGNORECASE)
STEP_TIMEOUT = 45.0
# Steps that wait for pods on the node (a Job's pod, role pods getting ready).
POD_STEP_TIMEOUT = 120.0
# Refusals that come from an admission plugin, not from RBAC: OwnerReferencesPermissionEnforcement
# checks ``update`` on the owner's finalizers and says so in its own words.
ADMISSION_REFUSALS = {
    (
        "smartflowruntimes/finalizers",
        "update",
    ): "ownerReference refers to a resource you can't set finalizers on",
}


class ScenarioFailed(AssertionError):
    pass


class Forbidden(ScenarioFailed):
    """The operator logged an authorization failure."""


class StepTimeout(ScenarioFailed):
    """A step did not happen in time (and no 403 was logged)."""


@dataclass
class OperatorProcess:
    pid: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def forbidden_lines(self) -> list[str]:
        return [line for line in self.text().splitlines() if FORBIDDEN.search(line)]

    def refused(self, resource: str, verb: str) -> list[str]:
        """The log lines where the apiserver refused ``verb`` on ``resource``: its RBAC message
        ``cannot <verb> resource "<resource>"``, or the admission plugin's own words for it."""
        wanted = ADMISSION_REFUSALS.get((resource, verb), f'cannot {verb} resource "{resource}"')
        return [line for line in self.forbidden_lines() if wanted in line]


@contextmanager
def operator_process(
    kubeconfig: Path, namespace: str, log: Path, *, lease_namespace: str
) -> Iterator[OperatorProcess]:
    """``smartflow-operator run --namespace NS`` on loopback ports, stopped (SIGTERM) afterwards;
    its leader Lease lives in ``lease_namespace`` (the release namespace, as the chart sets it)."""
    assert OPERATOR_CLI.exists(), f"{OPERATOR_CLI} is missing: run `make venv`"
    argv = [
        str(OPERATOR_CLI), "run", "--namespace", namespace, "--kubeconfig", str(kubeconfig),
        "--lease-namespace", lease_namespace,
        "--health-address", "127.0.0.1", "--health-port", str(free_port()),
        "--metrics-port", str(free_port()), "--resync-seconds", "5", "--log-format", "text",
    ]  # fmt: skip
    pid = spawn(argv, log=log, env={"KUBECONFIG": str(kubeconfig)})
    try:
        yield OperatorProcess(pid, log)
    finally:
        stop(pid, timeout=15)


class Scenario:
    """The steps, as the cluster admin (``api``) sees and drives them."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        operator: OperatorProcess,
        *,
        dsn: str,
        kafka: dict[str, str],
        images: dict[str, str],
    ) -> None:
        """``dsn``: the migrated database from the host; ``kafka``: the runtime's ``spec.kafka`` (as
        pods reach it); ``images``: the node's ``runtime`` and ``operator`` image references."""
        self.api = api
        self.namespace = namespace
        self.operator = operator
        self.dsn = dsn
        self.kafka = kafka
        self.images = images
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.done: list[str] = []

    # -- waiting ---------------------------------------------------------------------------------

    def until(self, check: Callable[[], T], what: str, timeout: float = STEP_TIMEOUT) -> T:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            forbidden = self.operator.forbidden_lines()
            if forbidden:
                raise Forbidden(f"while waiting for {what}: {forbidden[0][:600]}")
            if not alive(self.operator.pid):
                raise ScenarioFailed(f"the operator exited while waiting for {what}")
            try:
                last = check()
            except ApiException as error:
                last = error
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.25)
        raise StepTimeout(f"{what}: not within {timeout:.0f}s (last: {last!r}); done: {self.done}")

    # -- reading ---------------------------------------------------------------------------------

    def runtime(self) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, RUNTIME))

    def condition(self, type_: str) -> dict[str, Any] | None:
        conditions = (self.runtime().get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    def deployment_names(self) -> set[str]:
        return {d.metadata.name for d in self.apps.list_namespaced_deployment(self.namespace).items}

    def replicas(self, name: str) -> int | None:
        try:
            return int(self.apps.read_namespaced_deployment(name, self.namespace).spec.replicas)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def budgets(self) -> set[str]:
        return {
            b.metadata.name for b in self.policy.list_namespaced_pod_disruption_budget(self.namespace).items
        }

    def network_policies(self) -> set[str]:
        return {p.metadata.name for p in self.networking.list_namespaced_network_policy(self.namespace).items}

    def event_reasons(self) -> set[str]:
        return {e.reason for e in self.core.list_namespaced_event(self.namespace).items}

    # -- acting ----------------------------------------------------------------------------------

    def create_inputs(self) -> None:
        """The DSN Secret and a ConfigMap the runtime reads (the operator may only `get` them)."""
        dsn = base64.b64encode(pod_dsn(self.dsn).encode()).decode()
        self.core.create_namespaced_secret(self.namespace, {"metadata": {"name": "db"}, "data": {"dsn": dsn}})
        settings = {
            "SMARTFLOW_LOG_LEVEL": "INFO",
            "SMARTFLOW_KAFKA_TOPIC_PARTITIONS": "2",
        }  # as the fixture made it
        self.core.create_namespaced_config_map(
            self.namespace, {"metadata": {"name": "settings"}, "data": settings}
        )

    def create_runtime(self) -> None:
        scaling = {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetPerReplica": 10,
            "pollIntervalSeconds": 1,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}},
        }
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SmartflowRuntime",
            "metadata": {"name": RUNTIME},
            "spec": {
                "image": self.images["operator"],  # a release that cannot run `migrate`
                "mode": "split",
                "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
                "kafka": self.kafka,
                "envFrom": [{"configMapRef": {"name": "settings"}}],
                # as the fixture migrated the database; no retries of the failing first Job
                "migrations": {"outboxShards": 4, "backoffLimit": 0},
                # Inert on the node (its bridge CNI enforces no policy); applied and pruned all the same.
                "networkPolicy": {
                    "enabled": True,
                    "apiFrom": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "client"}}}],
                },
                "roles": {
                    "api": {"replicas": 2},
                    "relay": {"replicas": 1, "autoscaling": scaling},
                    "consumer": {"replicas": 1, "autoscaling": {**scaling, "maxReplicas": 2}},
                    "memoryWorker": {"replicas": 1},
                },
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def patch_runtime(self, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, RUNTIME, patch)

    def ready(self) -> bool:
        condition = self.condition("Ready")
        return bool(condition and condition["status"] == "True")

    async def set_due_rows(self, count: int) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            await connection.execute("DELETE FROM outbox_events")
            await connection.execute(
                """
                INSERT INTO outbox_events (event_id, event_type, aggregate_id, message_key, topic, payload,
                                           shard, status, available_at, created_at, updated_at)
                SELECT gen_random_uuid(), 'test.event', 'agg-' || i, 'key-' || i, $2, '{}'::jsonb,
                       0, 'pending', now() - interval '1 second', now(), now()
                FROM generate_series(1, $1) AS i
                """,
                count,
                self.kafka["topic"],
            )
        finally:
            await connection.close()

    # -- the scenario ----------------------------------------------------------------------------

    async def run(self) -> None:
        self.create_inputs()
        self.create_runtime()
        self.until(
            lambda: (self.condition("Degraded") or {}).get("reason") == "MigrationFailed",
            "Degraded/MigrationFailed after the Job's pod failed",
            timeout=POD_STEP_TIMEOUT,
        )
        if self.deployment_names():
            raise ScenarioFailed(f"role Deployments before a migration succeeded: {self.deployment_names()}")
        self.done.append("migration failed")
        self.patch_runtime({"spec": {"image": self.images["runtime"]}})
        self.until(
            lambda: (self.condition("SchemaReady") or {}).get("status") == "True",
            "SchemaReady=True",
            timeout=POD_STEP_TIMEOUT,
        )
        self.done.append("migrated")

        self.until(lambda: set(SPLIT_DEPLOYMENTS) <= self.deployment_names(), "the four role Deployments")
        self.until(
            lambda: self.core.read_namespaced_service(f"{RUNTIME}-api", self.namespace), "the api Service"
        )
        self.until(lambda: f"{RUNTIME}-api" in self.budgets(), "the api PodDisruptionBudget")
        self.until(lambda: RUNTIME in self.network_policies(), "the runtime's NetworkPolicy")
        self.done.append("children applied")

        self.until(self.ready, "Ready=True once the role pods are ready", timeout=POD_STEP_TIMEOUT)
        self.until(lambda: "Applied" in self.event_reasons(), "an Applied Event")
        self.done.append("ready")

        # A hung relay publishes nothing: the due rows stay, and the lag scales the relay up.
        with frozen(self.core, self.namespace, RUNTIME, "relay"):
            await self.set_due_rows(35)
            self.until(lambda: self.replicas(RELAY) == 4, "relay scaled up to ceil(35/10)=4")
            self.until(
                lambda: (self.runtime()["status"]["roles"]["relay"].get("autoscaling") or {}).get(
                    "lastScaleTime"
                ),
                "the scaling decision in status.roles.relay.autoscaling",
            )
            self.until(lambda: "ScaledUp" in self.event_reasons(), "a ScaledUp Event")
        await self.set_due_rows(0)
        self.until(lambda: self.replicas(RELAY) == 1, "relay back to minReplicas after the window")
        self.done.append("autoscaled")

        self.patch_runtime({"spec": {"roles": {"api": {"replicas": 1}}, "networkPolicy": {"enabled": False}}})
        self.until(lambda: f"{RUNTIME}-api" not in self.budgets(), "the api disruption budget pruned")
        self.until(lambda: not self.network_policies(), "the NetworkPolicy pruned")
        self.patch_runtime({"spec": {"mode": "all"}})  # a mode switch is a new migration Job first
        self.until(
            lambda: self.deployment_names() == {f"{RUNTIME}-all"},
            "the role Deployments pruned for mode all",
            timeout=POD_STEP_TIMEOUT,
        )
        self.until(self.ready, "Ready=True in mode all", timeout=POD_STEP_TIMEOUT)
        self.done.append("pruned")


def service_account_token(api: client.ApiClient, namespace: str, name: str) -> str:
    """A short-lived token for the chart's ServiceAccount (TokenRequest API), as a pod would get."""
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    response = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(response.status.token)


def role_rules(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    role = client.RbacAuthorizationV1Api(api).read_namespaced_role(name, namespace)
    return list(api.sanitize_for_serialization(role)["rules"])


def replace_role_rules(api: client.ApiClient, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    role = api.sanitize_for_serialization(rbac.read_namespaced_role(name, namespace))
    role["rules"] = rules
    rbac.replace_namespaced_role(name, namespace, role)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
