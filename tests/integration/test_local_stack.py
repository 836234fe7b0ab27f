"""The local stack's servers are real and usable: the foundation every I/O test stands on."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from smartflow_devstack import kafka, kube


async def test_postgres_commits_and_rolls_back(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        async with conn.transaction():
            await conn.execute("INSERT INTO t VALUES (1, 'kept')")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (2, 'rolled back')")
                raise RuntimeError("abort")
        rows = await conn.fetch("SELECT id, v FROM t ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "kept")]
        assert (await conn.fetchval("SHOW server_version")).startswith("15")
    finally:
        await conn.close()


async def test_kafka_group_commits_offsets_visible_to_kafka_tool(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic, group = f"stack-{unique_name}", f"group-{unique_name}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(30):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 5}".encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 30 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                seen.extend(r.value for r in records)
        await consumer.commit()
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(30))
    assert sum(v or 0 for v in committed.values()) == 30
    # Kafka's own tool, from the same jars, agrees that the group is at the end with no lag.
    described = await asyncio.to_thread(
        kafka.run_tool,
        kafka.CONSUMER_GROUPS_TOOL,
        "--bootstrap-server",
        bootstrap_servers,
        "--describe",
        "--group",
        group,
    )
    lines = [line.split() for line in described.splitlines() if line.startswith(group)]
    assert len(lines) == 3
    assert sum(int(cols[3]) for cols in lines) == 30  # CURRENT-OFFSET column
    assert all(cols[5] == "0" for cols in lines)  # LAG column


def _api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def _wait(predicate, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.stack.test"},
    "spec": {
        "group": "stack.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                        },
                    }
                },
            }
        ],
    },
}


def test_apiserver_custom_resource_and_garbage_collection(kubeconfig: str, unique_name: str) -> None:
    api = _api(kubeconfig)
    ns = f"stack-{unique_name}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    core.create_namespace({"metadata": {"name": ns}})
    try:
        ext.create_custom_resource_definition(CRD)
    except ApiException as error:
        assert error.status == 409
    _wait(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition("widgets.stack.test").status.conditions or [])
        )
    )

    def create_widget() -> dict:  # type: ignore[type-arg]
        return custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
            "stack.test",
            "v1",
            ns,
            "widgets",
            {"apiVersion": "stack.test/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}},
        )

    owner = None
    deadline = time.monotonic() + 30
    while owner is None:
        try:
            owner = create_widget()
        except ApiException as error:  # the new resource may need a moment to be served
            if error.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    assert owner["spec"]["size"] == 3
    deployment = {
        "metadata": {
            "name": "child",
            "ownerReferences": [
                {
                    "apiVersion": "stack.test/v1",
                    "kind": "Widget",
                    "name": "w",
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "child"}},
            "template": {
                "metadata": {"labels": {"app": "child"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
            },
        },
    }
    apps.create_namespaced_deployment(ns, deployment)
    custom.delete_namespaced_custom_object("stack.test", "v1", ns, "widgets", "w")

    def child_gone() -> bool:
        try:
            apps.read_namespaced_deployment("child", ns)
        except ApiException as error:
            return error.status == 404
        return False

    _wait(child_gone)
    core.delete_namespace(ns)


def test_rbac_refuses_then_allows_non_admin(kube_server: kube.KubeInfo, unique_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    admin = _api(kube_server.kubeconfig)
    ns = f"rbac-{unique_name}"
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", ns, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    path = tmp_path / "reader.kubeconfig"
    kube.write_kubeconfig(
        path, server=kube_server.server, ca_file=kube_server.ca_file, token=token, user="reader"
    )
    reader = client.CoreV1Api(_api(str(path)))
    with pytest.raises(ApiException) as refused:
        reader.list_namespaced_config_map(ns)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{ns}:reader" in json.loads(refused.value.body)["message"]
    rbac.create_namespaced_role(
        ns,
        {
            "metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "cm-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )

    def allowed() -> bool:
        try:
            reader.list_namespaced_config_map(ns)
        except ApiException as error:
            assert error.status == 403
            return False
        return True

    _wait(allowed)
    # The static non-admin user has no rights at all.
    dev_path = tmp_path / "dev.kubeconfig"
    kube.write_kubeconfig(
        dev_path,
        server=kube_server.server,
        ca_file=kube_server.ca_file,
        token=kube.DEVELOPER_TOKEN,
        user=kube.DEVELOPER_USER,
    )
    with pytest.raises(ApiException) as dev_refused:
        client.CoreV1Api(_api(str(dev_path))).list_namespaced_config_map(ns)
    assert dev_refused.value.status == 403
    core.delete_namespace(ns)
