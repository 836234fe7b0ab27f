"""`kubectl get sfr` on the real apiserver shows a capped relay reading as capped (``N+``) and an
uncapped one as the number, from the printer columns of the generated CRD.

The real operator runs in-process; the relay probe counts due rows only up to targetPerReplica x
maxReplicas (here 2 x 2 = 4), so 10 due rows read as ``4+``, never as 4, and 2 due rows as ``2``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import asyncpg

from smartflow_devstack.versions import kube_bin

from .conftest import insert_events
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

NAME = "readout"


def printed_columns(kubeconfig: str, namespace: str, name: str) -> dict[str, str]:
    """The columns `kubectl get sfr NAME` prints (server-side printing), header -> cell."""
    done = subprocess.run(
        [str(kube_bin("kubectl")), "--kubeconfig", kubeconfig, "-n", namespace, "get", "sfr", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    header, row = done.stdout.splitlines()[:2]
    # Cells are aligned under their headers and may be empty: cut the row at the headers' offsets.
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


async def test_a_capped_relay_reading_prints_as_capped_and_an_uncapped_one_as_the_number(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    cluster.create_secret("db", {"dsn": outbox_dsn})
    scaling = fast_autoscaling(targetPerReplica=2, maxReplicas=2)
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=names("outbox"),
            group=names("consumers"),
            relay=scaling,
        )
    )
    await insert_events(outbox_dsn, 10)
    with running_operator(kubeconfig, cluster.namespace):
        eventually(
            lambda: printed_columns(kubeconfig, cluster.namespace, NAME).get("RELAY-LAG") == "4+",
            timeout=30,
            what="Relay-Lag printed as 4+",
        )
        relay = cluster.runtime(NAME)["status"]["roles"]["relay"]
        assert (relay["lag"], relay["lagReading"]) == (4, "4+")
        assert relay["autoscaling"]["metricTruncated"] is True

        conn = await asyncpg.connect(outbox_dsn)
        try:
            await conn.execute(
                "UPDATE outbox_events SET status = 'published', published_at = now()"
                " WHERE event_id IN (SELECT event_id FROM outbox_events LIMIT 8)"
            )
        finally:
            await conn.close()
        eventually(
            lambda: printed_columns(kubeconfig, cluster.namespace, NAME).get("RELAY-LAG") == "2",
            timeout=30,
            what="Relay-Lag printed as 2 once the backlog is under the cap",
        )
        assert cluster.runtime(NAME)["status"]["roles"]["relay"]["lagReading"] == "2"
