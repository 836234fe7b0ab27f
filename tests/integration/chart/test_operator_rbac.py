"""Least privilege, proven against the real apiserver: the operator, logged in with the chart's
ServiceAccount token, completes a full reconcile and an autoscaling cycle with no 403; and without
any one of the chart's rules it does not.

The operator talks to a second kube-apiserver on the stack's etcd (same cluster, same tokens) that
also enforces ``OwnerReferencesPermissionEnforcement``, as OpenShift and hardened clusters do: the
admission plugin that makes ``smartflowruntimes/finalizers: update`` necessary for children with
``blockOwnerDeletion``. Everything else (helm, the test's own calls) goes through the stack's
apiserver.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from kubernetes import client, config

from smartflow_devstack import kube
from smartflow_devstack.kafka import KafkaInfo
from smartflow_devstack.process import free_port, spawn, stop, wait_until
from smartflow_devstack.versions import kube_bin
from smartflow_operator.rbac import as_policy_rules, leader_election_permissions
from tests.unit.chart.helm import OPERATOR_CHART, of_kind, render

from .conftest import Namespaces, Releases
from .operator_scenario import (
    Forbidden,
    Scenario,
    ScenarioFailed,
    operator_process,
    replace_role_rules,
    role_rules,
    service_account_token,
)

pytestmark = pytest.mark.timeout(600)

# The chart's rules: tests/unit/chart/test_rbac.py proves the rendered chart grants exactly these,
# and test_the_installed_role_is_the_chart_role below that helm installed them. Taken from the code
# at collection time so collecting this file needs no helm binary.
CHART_RULES: list[dict[str, Any]] = [dict(rule) for rule in as_policy_rules()]
# The leader-election Role's rules (in the release namespace), tested the same way.
ELECTION_RULES: list[dict[str, Any]] = [dict(rule) for rule in as_policy_rules(leader_election_permissions())]


def _rule_id(rule: dict[str, Any]) -> str:
    return f"{rule['apiGroups'][0] or 'core'}/{rule['resources'][0]}"


# -- a second apiserver front end that enforces owner-reference permissions --------------------------


def _healthy(server: str, ca_file: str) -> bool:
    context = ssl.create_default_context(cafile=ca_file)
    with urllib.request.urlopen(f"{server}/readyz", context=context, timeout=2) as response:
        return bool(response.status == 200)


@pytest.fixture(scope="session")
def enforcing_apiserver(kube_server: kube.KubeInfo, test_state: Path) -> Iterator[str]:
    pki = kube_server.home / "pki"
    home = test_state / "enforcing-apiserver"
    log = test_state / "logs" / "enforcing-apiserver.log"
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    pid = spawn(
        [
            str(kube_bin("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{kube_server.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={home / 'certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=RBAC",
            f"--token-auth-file={kube_server.home / 'tokens.csv'}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=false",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--v=1",
        ],
        log=log,
    )
    try:
        wait_until(
            lambda: _healthy(server, kube_server.ca_file),
            what="enforcing kube-apiserver",
            timeout=120,
            pid=pid,
            log=log,
        )
        yield server
    finally:
        stop(pid)


# -- one installed chart per test ------------------------------------------------------------------


@dataclass
class OperatorEnv:
    api: client.ApiClient
    operator_ns: str
    watched: str
    role: str
    kubeconfig: Path
    log: Path
    dsn: str
    kafka: dict[str, str]
    images: dict[str, str]

    @property
    def election_role(self) -> str:
        return f"{self.role}-leader-election"

    def scenario(self, operator: Any) -> Scenario:
        return Scenario(self.api, self.watched, operator, dsn=self.dsn, kafka=self.kafka, images=self.images)

    def operator(self) -> Any:
        return operator_process(self.kubeconfig, self.watched, self.log, lease_namespace=self.operator_ns)


def _migrate(dsn: str) -> None:
    cli = Path(sys.executable).with_name("smartflow-runtime")
    result = subprocess.run(
        [str(cli), "migrate", "--shards", "4"],
        env={**os.environ, "SMARTFLOW_DATABASE_DSN": dsn, "SMARTFLOW_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"smartflow-runtime migrate failed: {result.stdout}{result.stderr}"


async def _create_topic(bootstrap_servers: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()


@pytest.fixture
async def operator_env(
    kubeconfig: str,
    kube_server: kube.KubeInfo,
    enforcing_apiserver: str,
    releases: Releases,
    namespaces: Namespaces,
    database_dsn: str,
    bootstrap_servers: str,
    kafka_server: KafkaInfo,
    node_images: dict[str, str],
    unique_name: str,
    tmp_path: Path,
) -> OperatorEnv:
    """The chart installed with helm (watching one namespace), a migrated outbox, a topic, and a
    kubeconfig holding the chart's ServiceAccount token, pointed at the enforcing apiserver."""
    operator_ns = namespaces.create(f"sfop-{unique_name}")
    watched = namespaces.create(f"sfw-{unique_name}")
    release = f"rbac-{unique_name}"
    releases.install(release, operator_ns, {"watch": {"namespaces": [watched]}})
    name = f"{release}-smartflow-operator"
    await asyncio.to_thread(_migrate, database_dsn)
    topic = f"outbox-{unique_name}"
    await _create_topic(bootstrap_servers, topic)

    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    token = service_account_token(api, operator_ns, name)
    operator_kubeconfig = tmp_path / "operator.kubeconfig"
    kube.write_kubeconfig(
        operator_kubeconfig,
        server=enforcing_apiserver,
        ca_file=kube_server.ca_file,
        token=token,
        user=f"system:serviceaccount:{operator_ns}:{name}",
    )
    return OperatorEnv(
        api=api,
        operator_ns=operator_ns,
        watched=watched,
        role=name,
        kubeconfig=operator_kubeconfig,
        log=tmp_path / "operator.log",
        dsn=database_dsn,
        kafka={
            "bootstrapServers": kafka_server.pod_bootstrap_servers,
            "topic": topic,
            "consumerGroup": f"group-{unique_name}",
        },
        images=node_images,
    )


# -- the tests -------------------------------------------------------------------------------------


def test_the_installed_role_is_the_chart_role(operator_env: OperatorEnv) -> None:
    # What the necessity tests below edit is exactly what helm installed from the chart.
    installed = role_rules(operator_env.api, operator_env.watched, operator_env.role)
    roles = {role["metadata"]["name"]: role for role in of_kind(render(OPERATOR_CHART), "Role")}
    assert installed == roles["sfo-smartflow-operator"]["rules"] == CHART_RULES
    election = role_rules(operator_env.api, operator_env.operator_ns, operator_env.election_role)
    assert election == roles["sfo-smartflow-operator-leader-election"]["rules"] == ELECTION_RULES


async def test_operator_with_the_chart_rbac_reconciles_and_autoscales_without_403(
    operator_env: OperatorEnv,
) -> None:
    started = time.monotonic()
    with operator_env.operator() as operator:
        scenario = operator_env.scenario(operator)
        try:
            await scenario.run()
        except ScenarioFailed as failure:
            pytest.fail(f"{failure}\n--- operator log (tail) ---\n{operator.text()[-4000:]}")
        steps = ["migration failed", "migrated", "children applied", "ready", "autoscaled", "pruned"]
        assert scenario.done == steps
        forbidden = operator.forbidden_lines()
    assert not forbidden, forbidden
    print(f"full scenario with the chart's RBAC: {time.monotonic() - started:.1f}s")


async def _run_expecting_failure(
    operator_env: OperatorEnv,
    narrowed: list[dict[str, Any]],
    removed: list[tuple[str, str]],
    *,
    election: bool = False,
) -> None:
    """Install ``narrowed`` as the operator's Role (or its leader-election Role), run the scenario,
    and require that the apiserver refused one of the ``removed`` (resource, verb) pairs: a step
    timeout or a crash proves nothing about RBAC, a Forbidden naming another rule neither."""
    namespace, role = (
        (operator_env.operator_ns, operator_env.election_role)
        if election
        else (operator_env.watched, operator_env.role)
    )
    replace_role_rules(operator_env.api, namespace, role, narrowed)
    what = ", ".join(f"{resource}:{verb}" for resource, verb in removed)
    with operator_env.operator() as operator:
        scenario = operator_env.scenario(operator)
        try:
            await scenario.run()
        except Forbidden as failure:
            named = [line for resource, verb in removed for line in operator.refused(resource, verb)]
            assert named, (
                f"without {what}: a Forbidden, but none names it: {str(failure)[:600]}\n"
                f"--- forbidden lines ---\n" + "\n".join(operator.forbidden_lines()[:10])
            )
            print(f"without {what}: refused after {scenario.done}: {named[0][:300]}")
            return
        except ScenarioFailed as failure:
            pytest.fail(
                f"without {what}: the scenario failed without a Forbidden: {failure}\n"
                + operator.text()[-3000:]
            )
    pytest.fail(
        f"the operator completed the whole scenario without {what}: the chart grants more than it needs"
    )


def _pairs(rule: dict[str, Any], verbs: list[str] | None = None) -> list[tuple[str, str]]:
    return [(rule["resources"][0], verb) for verb in verbs or rule["verbs"]]


@pytest.mark.parametrize("rule", CHART_RULES, ids=[_rule_id(rule) for rule in CHART_RULES])
async def test_every_chart_rule_is_needed(operator_env: OperatorEnv, rule: dict[str, Any]) -> None:
    rules = role_rules(operator_env.api, operator_env.watched, operator_env.role)
    assert rule in rules
    await _run_expecting_failure(operator_env, [r for r in rules if r != rule], _pairs(rule))


# Rules with one verb are covered above; for the others, each verb on its own.
CHART_VERBS = [(rule, verb) for rule in CHART_RULES if len(rule["verbs"]) > 1 for verb in rule["verbs"]]


@pytest.mark.parametrize(
    ("rule", "verb"), CHART_VERBS, ids=[f"{_rule_id(rule)}:{verb}" for rule, verb in CHART_VERBS]
)
async def test_every_verb_of_a_chart_rule_is_needed(
    operator_env: OperatorEnv, rule: dict[str, Any], verb: str
) -> None:
    rules = role_rules(operator_env.api, operator_env.watched, operator_env.role)
    narrowed = [r if r != rule else {**r, "verbs": [v for v in r["verbs"] if v != verb]} for r in rules]
    await _run_expecting_failure(operator_env, narrowed, _pairs(rule, [verb]))


ELECTION_VERBS = [(rule, verb) for rule in ELECTION_RULES for verb in rule["verbs"]]


@pytest.mark.parametrize(
    ("rule", "verb"), ELECTION_VERBS, ids=[f"{_rule_id(rule)}:{verb}" for rule, verb in ELECTION_VERBS]
)
async def test_every_leader_election_verb_is_needed(
    operator_env: OperatorEnv, rule: dict[str, Any], verb: str
) -> None:
    rules = role_rules(operator_env.api, operator_env.operator_ns, operator_env.election_role)
    assert rules == ELECTION_RULES
    narrowed = [r if r != rule else {**r, "verbs": [v for v in r["verbs"] if v != verb]} for r in rules]
    narrowed = [r for r in narrowed if r["verbs"]]
    await _run_expecting_failure(operator_env, narrowed, _pairs(rule, [verb]), election=True)
