"""The Service in front of the API: business HTTP and the admin port (health, /metrics). Pure."""

from __future__ import annotations

from typing import Any

from ..names import ADMIN_PORT, ADMIN_PORT_NAME, HTTP_PORT, HTTP_PORT_NAME, LABEL_VERSION, Role
from ..resource import SmartflowRuntime
from ..spec import Mode
from .labels import api_service_name, role_labels, selector_labels


def build_api_service(runtime: SmartflowRuntime) -> dict[str, Any]:
    """`<runtime>-api`, selecting the api pods (mode split) or the all-in-one pods (mode all)."""
    serving_role = Role.ALL if runtime.spec.mode is Mode.ALL else Role.API
    labels = {key: value for key, value in role_labels(runtime, Role.API).items() if key != LABEL_VERSION}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": api_service_name(runtime),
            "namespace": runtime.namespace,
            "labels": labels,
            "ownerReferences": [runtime.owner_reference()],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(runtime, serving_role),
            "ports": [
                {"name": HTTP_PORT_NAME, "port": HTTP_PORT, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"},
                {
                    "name": ADMIN_PORT_NAME,
                    "port": ADMIN_PORT,
                    "targetPort": ADMIN_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }
