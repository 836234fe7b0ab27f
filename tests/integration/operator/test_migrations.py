"""The schema migration Job gates the roles, against the real kube-apiserver, PostgreSQL and node.

The real Job controller runs the operator's Job as a pod from the runtime image on the node: it
runs ``smartflow-runtime migrate`` against the test's database (through the node's forwarder) and
Kafka, and the tests wait for the Job to finish. The operator reads the schema version from that
database through the lag probes' pool. The role Deployments are asked for 0 pods: these tests are
about when they are created and rolled, and their pods would only load the shared node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from kubernetes import client

from smartflow_devstack import kafka
from smartflow_devstack.node.start import NodeInfo
from smartflow_operator import conditions as c
from smartflow_operator.autoscaling.probes import Probes
from smartflow_operator.errors import ConfigurationError
from smartflow_operator.kube import JOBS, KubeClient, load_api_client
from smartflow_operator.reconcile import reconcile
from smartflow_runtime.db import MIGRATIONS
from tests.integration.realpods import pod_dsn, runtime_image_tag, wait_job

from .conftest import Kubectl, children, condition, settled, versions

LATEST = max(migration.version for migration in MIGRATIONS)
ROLES = ("api", "relay", "consumer", "memory-worker")


@pytest.fixture
async def probes() -> AsyncIterator[Probes]:
    shared = Probes()
    yield shared
    await shared.close()


@dataclass(frozen=True)
class Images:
    """Runtime image references on the node: ``first`` and two later releases of it, and
    ``broken``, a release that cannot migrate (an image without ``smartflow-runtime``)."""

    first: str
    second: str
    third: str
    broken: str


@pytest.fixture(scope="module")
def images(node_images: dict[str, str], node_server: NodeInfo) -> Images:
    runtime = node_images["runtime"]
    return Images(
        first=runtime,
        second=runtime_image_tag(node_server, runtime, "v2"),
        third=runtime_image_tag(node_server, runtime, "v21"),
        broken=node_images["operator"],
    )


Manifest = Callable[..., str]


@pytest.fixture
def manifest(images: Images, kafka_server: kafka.KafkaInfo, unique_name: str) -> Manifest:
    """``manifest(dsn, image=..., **spec)``: the DSN Secret (as pods dial it) and runtime ``shop``."""

    def build(dsn: str, *, image: str = images.first, **spec: Any) -> str:
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}}
        secret["stringData"] = {"dsn": pod_dsn(dsn)}
        runtime = {
            "apiVersion": "smartflow.io/v1alpha1",
            "kind": "SmartflowRuntime",
            "metadata": {"name": "shop"},
            "spec": {
                "image": image,
                "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
                "kafka": {
                    "bootstrapServers": kafka_server.pod_bootstrap_servers,
                    "topic": f"mig.{unique_name}",
                },
                "roles": {role: {"replicas": 0} for role in ("api", "relay", "consumer", "memoryWorker")},
                **spec,
            },
        }
        return yaml.safe_dump_all([secret, runtime])

    return build


async def _job_finished(api: client.ApiClient, namespace: str, name: str) -> str:
    """What the real Job controller made of Job ``name``: ``Complete`` or ``Failed``."""
    return await asyncio.to_thread(wait_job, client.BatchV1Api(api), namespace, name)


def _jobs(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("-n", namespace, "get", "jobs")["items"]
    return items


def _deployments(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in children(kubectl, namespace).items() if k.startswith("Deployment/")}


def _images(kubectl: Kubectl, namespace: str) -> set[str]:
    return {
        d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in _deployments(kubectl, namespace).values()
    }


def _runtime(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    runtime: dict[str, Any] = kubectl.json("-n", namespace, "get", "sfr", "shop")
    return runtime


def _events(kubectl: Kubectl, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kubectl.json("-n", namespace, "get", "events")["items"] if e["reason"] == reason]


def _set_image(kubectl: Kubectl, namespace: str, image: str) -> None:
    kubectl(
        "-n", namespace, "patch", "sfr", "shop", "--type=merge", "-p", f'{{"spec":{{"image":"{image}"}}}}'
    )


async def _migrated(
    kubectl: Kubectl, namespace: str, kube: KubeClient, api: client.ApiClient, probes: Probes
) -> None:
    """Reconcile until the current spec is migrated (its Job ran on the node) and rolled out."""
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    job = _runtime(kubectl, namespace)["status"]["schema"]["jobName"]
    assert await _job_finished(api, namespace, job) == "Complete"
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    await settled(kubectl, namespace, "shop", kube=kube, api=api, schema_versions=probes)


async def test_a_fresh_runtime_runs_the_job_first_and_the_roles_after_it_succeeded(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
) -> None:
    kubectl.apply(namespace, manifest(database_dsn))
    first = await reconcile(namespace, "shop", kube=kube, schema_versions=probes)

    (job,) = _jobs(kubectl, namespace)
    name = job["metadata"]["name"]
    assert first.applied == [f"Job/{name} (created)"]
    assert name.startswith("shop-migrate-")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", "--shards", "32"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == _runtime(kubectl, namespace)["metadata"]["uid"]
    assert _deployments(kubectl, namespace) == {}
    runtime = _runtime(kubectl, namespace)
    assert condition(runtime, c.SCHEMA_READY)["reason"] == c.MIGRATING  # type: ignore[index]
    assert condition(runtime, c.READY)["status"] == "False"  # type: ignore[index]
    assert runtime["status"]["schema"]["jobName"] == name

    # While it runs, a resync changes nothing: no second Job, no Deployment, no write at all.
    writes = kube.writes
    waiting = await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert not waiting.changed and kube.writes == writes
    assert len(_jobs(kubectl, namespace)) == 1 and _deployments(kubectl, namespace) == {}

    assert await _job_finished(admin_api, namespace, name) == "Complete"
    done = await reconcile(namespace, "shop", kube=kube, schema_versions=probes)

    deployments = _deployments(kubectl, namespace)
    assert set(deployments) == {f"Deployment/shop-{role}" for role in ROLES}
    assert done.applied and all(not entry.startswith("Job/") for entry in done.applied)
    completed = kubectl.json("-n", namespace, "get", "job", name)["status"]["completionTime"]
    for deployment in deployments.values():
        assert (
            deployment["metadata"]["creationTimestamp"] >= completed >= job["metadata"]["creationTimestamp"]
        )
    runtime = _runtime(kubectl, namespace)
    assert condition(runtime, c.SCHEMA_READY)["reason"] == c.MIGRATED  # type: ignore[index]
    assert runtime["status"]["schema"] == {
        "version": LATEST,
        "jobName": name,
        "hash": name.rsplit("-", 1)[1],
        "migratedHash": name.rsplit("-", 1)[1],
    }
    assert [e["type"] for e in _events(kubectl, namespace, c.MIGRATED)] == ["Normal"]
    # The namespace enforces `restricted` (the Job's pod was admitted: it ran) and warns
    # on workload templates it would refuse: the apiserver said nothing about the Job.
    assert list(kube.warnings) == []
    printed = kubectl("-n", namespace, "get", "sfr", "shop", "-o", "wide").stdout
    assert "Migrated" in printed and str(LATEST) in printed


async def test_an_image_change_runs_a_new_job_before_the_roles_roll(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
    images: Images,
) -> None:
    kubectl.apply(namespace, manifest(database_dsn))
    await _migrated(kubectl, namespace, kube, admin_api, probes)
    before = versions(kubectl, namespace)

    _set_image(kubectl, namespace, images.second)
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)

    jobs = {job["metadata"]["name"]: job for job in _jobs(kubectl, namespace)}
    assert len(jobs) == 2
    new = _runtime(kubectl, namespace)["status"]["schema"]["jobName"]
    assert jobs[new]["spec"]["template"]["spec"]["containers"][0]["image"] == images.second
    assert versions(kubectl, namespace) == before, "the roles were touched before the migration succeeded"
    assert _images(kubectl, namespace) == {images.first}
    runtime = _runtime(kubectl, namespace)
    assert condition(runtime, c.READY)["reason"] == c.SCHEMA_NOT_READY  # type: ignore[index]
    assert condition(runtime, c.PROGRESSING)["reason"] == c.MIGRATING  # type: ignore[index]

    assert await _job_finished(admin_api, namespace, new) == "Complete"
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert _images(kubectl, namespace) == {images.second}
    rolled = _deployments(kubectl, namespace)
    completed = kubectl.json("-n", namespace, "get", "job", new)["status"]["completionTime"]
    for deployment in rolled.values():
        assert deployment["metadata"]["generation"] == 2
        name = deployment["metadata"]["name"]
        fields = kubectl.json("-n", namespace, "get", "deployment", name, "--show-managed-fields")["metadata"]
        (ours,) = [m for m in fields["managedFields"] if m["manager"] == "smartflow-operator"]
        assert ours["time"] >= completed  # the operator's last apply came after the Job completed


async def test_a_failed_migration_is_degraded_leaves_the_roles_and_a_fixed_spec_recovers(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
    images: Images,
) -> None:
    # No retries: the Job fails with its first pod (the default, 2, only takes longer).
    kubectl.apply(namespace, manifest(database_dsn, migrations={"backoffLimit": 0}))
    await _migrated(kubectl, namespace, kube, admin_api, probes)
    before = versions(kubectl, namespace)

    _set_image(kubectl, namespace, images.broken)  # a release whose image cannot run `migrate`
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    failing = _runtime(kubectl, namespace)["status"]["schema"]["jobName"]
    assert await _job_finished(admin_api, namespace, failing) == "Failed"

    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert raised.value.reason == c.MIGRATION_FAILED
    runtime = _runtime(kubectl, namespace)
    degraded = condition(runtime, c.DEGRADED)
    assert degraded is not None and (degraded["status"], degraded["reason"]) == ("True", c.MIGRATION_FAILED)
    assert f"migration Job {failing} failed (BackoffLimitExceeded" in degraded["message"]
    # The failed pod's own log, read through the kubelet.
    assert "invalid choice: 'migrate'" in degraded["message"]
    assert condition(runtime, c.SCHEMA_READY)["reason"] == c.MIGRATION_FAILED  # type: ignore[index]
    (warning,) = _events(kubectl, namespace, c.MIGRATION_FAILED)
    assert warning["type"] == "Warning" and warning["message"] == degraded["message"]
    assert versions(kubectl, namespace) == before, "a failed migration touched the running roles"
    assert _images(kubectl, namespace) == {images.first}

    # Retried (kopf's backoff, resyncs): no new Job, no new Event, nothing written.
    writes = kube.writes
    with pytest.raises(ConfigurationError):
        await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert kube.writes == writes and len(_jobs(kubectl, namespace)) == 2
    assert len(_events(kubectl, namespace, c.MIGRATION_FAILED)) == 1

    # A fixed spec (here: another image) is a new hash, so a new Job; it succeeds and the roles roll.
    _set_image(kubectl, namespace, images.third)
    await _migrated(kubectl, namespace, kube, admin_api, probes)
    assert len(_jobs(kubectl, namespace)) == 3
    assert _images(kubectl, namespace) == {images.third}
    runtime = _runtime(kubectl, namespace)
    assert condition(runtime, c.DEGRADED)["status"] == "False"  # type: ignore[index]
    assert condition(runtime, c.SCHEMA_READY)["status"] == "True"  # type: ignore[index]
    assert len(_events(kubectl, namespace, "Recovered")) == 1


async def test_resyncs_and_a_restart_start_no_second_job_and_a_gone_job_is_not_rerun(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    kubeconfig: str,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
) -> None:
    kubectl.apply(namespace, manifest(database_dsn))
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    restarted = KubeClient(load_api_client(kubeconfig))  # a new operator process knows nothing
    try:
        await reconcile(namespace, "shop", kube=restarted, schema_versions=Probes())
        (job,) = _jobs(kubectl, namespace)
        assert await _job_finished(admin_api, namespace, job["metadata"]["name"]) == "Complete"
        await reconcile(namespace, "shop", kube=restarted, schema_versions=probes)
        assert len(_deployments(kubectl, namespace)) == 4
        await settled(kubectl, namespace, "shop", kube=restarted, api=admin_api, schema_versions=probes)

        # The TTL controller (or a person) deletes the finished Job: the hash is migrated, no rerun.
        await kube.delete(JOBS, namespace, job["metadata"]["name"])
        writes = restarted.writes
        again = await reconcile(namespace, "shop", kube=restarted, schema_versions=probes)
        assert not again.changed and restarted.writes == writes
        assert _jobs(kubectl, namespace) == []
    finally:
        restarted.close()


async def test_a_migrated_runtimes_resync_makes_zero_writes(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
) -> None:
    kubectl.apply(namespace, manifest(database_dsn))
    await _migrated(kubectl, namespace, kube, admin_api, probes)
    before, runtime_version = (
        versions(kubectl, namespace),
        _runtime(kubectl, namespace)["metadata"]["resourceVersion"],
    )
    writes = kube.writes
    result = await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert not result.changed
    assert kube.writes == writes, kube.calls
    assert versions(kubectl, namespace) == before
    assert _runtime(kubectl, namespace)["metadata"]["resourceVersion"] == runtime_version


async def test_with_migrations_disabled_no_job_is_created_and_the_version_is_reported(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    probes: Probes,
    database_dsn: str,
    manifest: Manifest,
    images: Images,
) -> None:
    # The team migrates in its own pipeline (here: first not yet, then it has).
    kubectl.apply(namespace, manifest(database_dsn, migrations={"enabled": False}))
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert len(_deployments(kubectl, namespace)) == 4
    runtime = _runtime(kubectl, namespace)
    ready = condition(runtime, c.SCHEMA_READY)
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", c.MIGRATIONS_DISABLED)
    assert runtime["status"]["schema"] == {"version": 0}

    import asyncpg

    from smartflow_runtime.db import migrate

    connection = await asyncpg.connect(database_dsn)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    runtime = _runtime(kubectl, namespace)
    assert runtime["status"]["schema"] == {"version": LATEST}
    assert f"the database reports schema version {LATEST}" in condition(runtime, c.SCHEMA_READY)["message"]  # type: ignore[index]
    _set_image(kubectl, namespace, images.second)
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    assert _images(kubectl, namespace) == {images.second}
    assert _jobs(kubectl, namespace) == []


@pytest.fixture
async def no_ddl_dsn(database_dsn: str) -> AsyncIterator[str]:
    """The test database through a role that may connect but not create tables (PostgreSQL 15
    grants no CREATE on schema public to PUBLIC)."""
    import asyncpg

    role = f"no_ddl_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'secret'")
    finally:
        await admin.close()
    parts = urlsplit(database_dsn)
    yield urlunsplit(parts._replace(netloc=f"{role}:secret@{parts.hostname}:{parts.port}"))
    admin = await asyncpg.connect(database_dsn)
    try:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
    finally:
        await admin.close()


async def test_a_user_without_ddl_rights_fails_with_the_database_error_and_a_fixed_secret_recovers(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    probes: Probes,
    database_dsn: str,
    no_ddl_dsn: str,
    manifest: Manifest,
) -> None:
    kubectl.apply(namespace, manifest(no_ddl_dsn, migrations={"backoffLimit": 0}))
    await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    failing = _runtime(kubectl, namespace)["status"]["schema"]["jobName"]
    assert await _job_finished(admin_api, namespace, failing) == "Failed"  # `migrate` ran in its pod

    with pytest.raises(ConfigurationError):
        await reconcile(namespace, "shop", kube=kube, schema_versions=probes)
    degraded = condition(_runtime(kubectl, namespace), c.DEGRADED)
    assert degraded is not None and degraded["reason"] == c.MIGRATION_FAILED
    # PostgreSQL's own words, quoted from the failed pod's log.
    assert "last log lines: " in degraded["message"]
    assert "permission denied for schema public" in degraded["message"]
    (warning,) = _events(kubectl, namespace, c.MIGRATION_FAILED)
    assert "permission denied for schema public" in warning["message"]
    assert _deployments(kubectl, namespace) == {}

    # The fix is in the Secret (a user with DDL rights): its value is a migration input, so a new Job.
    fixed = kubectl(
        "-n", namespace, "create", "secret", "generic", "db", f"--from-literal=dsn={pod_dsn(database_dsn)}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    kubectl("-n", namespace, "apply", "-f", "-", stdin=fixed)
    await _migrated(kubectl, namespace, kube, admin_api, probes)
    assert len(_jobs(kubectl, namespace)) == 2
    assert len(_deployments(kubectl, namespace)) == 4
    runtime = _runtime(kubectl, namespace)
    assert condition(runtime, c.DEGRADED)["status"] == "False"  # type: ignore[index]
    assert runtime["status"]["schema"]["version"] == LATEST
