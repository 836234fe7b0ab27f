"""Names every part of the operator shares: the API identity of the CRD, labels, annotations,
ports and role names. The values mirror docs/contracts.md; change them there first.
"""

from __future__ import annotations

from enum import StrEnum

GROUP = "smartflow.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SmartflowRuntime"
PLURAL = "smartflowruntimes"
SINGULAR = "smartflowruntime"
SHORT_NAMES = ("sfr",)
CATEGORIES = ("smartflow",)
CRD_NAME = f"{PLURAL}.{GROUP}"

FIELD_MANAGER = "smartflow-operator"
LEASE_NAME = "smartflow-operator"  # the leader election Lease (leadership.py), default name
OPERATOR_NAME = "smartflow-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
APP_NAME = "smartflow"

# The hash of the desired manifest as last applied: equal hash, no write (a no-op resync is free).
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
# The hash of the referenced Secrets/ConfigMaps' data, on the pod template: a change rolls the pods.
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# The migration inputs hash a migration Job stands for (also the end of its name).
ANNOTATION_MIGRATION_HASH = f"{GROUP}/migration-hash"

CONTAINER_NAME = "runtime"
MIGRATION_CONTAINER_NAME = "migrate"
MIGRATION_COMPONENT = "migration"  # app.kubernetes.io/component of the migration Job and its pod
ADMIN_PORT = 9090
HTTP_PORT = 8080
ADMIN_PORT_NAME = "admin"
HTTP_PORT_NAME = "http"
RUN_AS_USER = 10001

DEFAULT_KAFKA_TOPIC = "smartflow.agent.outbox"
DEFAULT_KAFKA_CONSUMER_GROUP = "smartflow-agent-outbox-consumer"


class Role(StrEnum):
    """A workload the operator runs; the value is what `smartflow-runtime run --role` takes."""

    API = "api"
    RELAY = "relay"
    CONSUMER = "consumer"
    MEMORY_WORKER = "memory-worker"
    ALL = "all"

    @property
    def spec_key(self) -> str:
        """The key under `spec.roles` / `status.roles` (camelCase)."""
        return "memoryWorker" if self is Role.MEMORY_WORKER else self.value


SPLIT_ROLES = (Role.API, Role.RELAY, Role.CONSUMER, Role.MEMORY_WORKER)
SERVING_ROLES = frozenset({Role.API, Role.ALL})
