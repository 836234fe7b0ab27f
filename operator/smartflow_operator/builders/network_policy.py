"""The runtime's optional NetworkPolicy (``spec.networkPolicy``): ingress to the api's HTTP port from
the peers ``apiFrom`` names and to every role's admin port from ``monitoringFrom``; nothing else
reaches the runtime's pods. Pure.

One policy selects every pod of the runtime (roles and migration pods). The ports are named
ports: ``http`` exists only on the api (or all) container, ``admin`` on every role's, so one policy
says both. A rule without peers is left out rather than written with an empty ``from`` (which
Kubernetes reads as "from everywhere"). Egress is not restricted. Enforcement is the CNI's: on a
cluster whose CNI ignores NetworkPolicy the object is inert.
"""

from __future__ import annotations

from typing import Any

from ..names import ADMIN_PORT_NAME, HTTP_PORT_NAME, LABEL_INSTANCE, LABEL_NAME
from ..resource import SmartflowRuntime
from ..spec import NetworkPolicyPeer
from .labels import instance_labels


def network_policy_name(runtime: SmartflowRuntime) -> str:
    return runtime.name


def _rule(port: str, peers: list[NetworkPolicyPeer] | None) -> list[dict[str, Any]]:
    if not peers:
        return []
    return [{"from": [peer.dump() for peer in peers], "ports": [{"protocol": "TCP", "port": port}]}]


def build_network_policy(runtime: SmartflowRuntime) -> dict[str, Any]:
    policy = runtime.spec.network_policy
    labels = instance_labels(runtime.name)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": network_policy_name(runtime),
            "namespace": runtime.namespace,
            "labels": labels,
            "ownerReferences": [runtime.owner_reference()],
        },
        "spec": {
            "podSelector": {"matchLabels": {key: labels[key] for key in (LABEL_NAME, LABEL_INSTANCE)}},
            "policyTypes": ["Ingress"],
            "ingress": [
                *_rule(HTTP_PORT_NAME, policy.api_from),
                *_rule(ADMIN_PORT_NAME, policy.monitoring_from),
            ],
        },
    }
