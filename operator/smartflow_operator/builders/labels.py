"""Names and labels of a runtime's children (docs/contracts.md, "Kubernetes")."""

from __future__ import annotations

import re

from ..names import (
    APP_NAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_VERSION,
    OPERATOR_NAME,
    Role,
)
from ..resource import SmartflowRuntime

_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def child_name(runtime: SmartflowRuntime, role: Role) -> str:
    """`<runtime>-<role>`, e.g. `demo-relay`, `demo-memory-worker`, `demo-all`."""
    return f"{runtime.name}-{role.value}"


def api_service_name(runtime: SmartflowRuntime) -> str:
    """The API Service keeps one name in both modes, so clients need not change when the mode does."""
    return f"{runtime.name}-api"


def instance_labels(runtime_name: str) -> dict[str, str]:
    """What every child of a runtime carries: the selector used to find (and prune) them."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: runtime_name, LABEL_MANAGED_BY: OPERATOR_NAME}


def selector_labels(runtime: SmartflowRuntime, role: Role) -> dict[str, str]:
    """Pod selector of a role: stable across image changes (selectors are immutable)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: runtime.name, LABEL_COMPONENT: role.value}


def role_labels(runtime: SmartflowRuntime, role: Role) -> dict[str, str]:
    return {
        **instance_labels(runtime.name),
        LABEL_COMPONENT: role.value,
        LABEL_VERSION: image_version(runtime.spec.image),
    }


def image_version(image: str) -> str:
    """The image tag as a label value (`1.4.2`), the digest's start when there is no tag, else `latest`."""
    reference, _, digest = image.partition("@")
    last_segment = reference.rsplit("/", 1)[-1]
    if ":" in last_segment:
        version = last_segment.rsplit(":", 1)[1]
    elif digest:
        version = digest.replace("sha256:", "")[:12]
    else:
        version = "latest"
    return _LABEL_VALUE_UNSAFE.sub("-", version)[:63].strip("-_.") or "latest"
