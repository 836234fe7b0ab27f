"""Kubernetes Events about a SmartflowRuntime, as plain dicts (pure).

The reconciler posts them for applied changes and problems, the autoscaler for scaling decisions
and probe errors; both send what :func:`build_event` returns through ``KubeClient.create_event``.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from .names import API_VERSION, KIND, OPERATOR_NAME


def build_event(body: Mapping[str, Any], type_: str, reason: str, message: str, now: str) -> dict[str, Any]:
    """A core/v1 Event on the runtime ``body``; ``now`` is an RFC 3339 timestamp."""
    metadata = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": OPERATOR_NAME},
        "reportingComponent": OPERATOR_NAME,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
