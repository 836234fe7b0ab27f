"""The `SmartflowRuntime` spec as pydantic models: the single source of truth for the fields,
their defaults, their validation and their documentation.

The CRD's OpenAPI schema is generated from these models (see ``crd.py``), so every field needs a
description (``kubectl explain`` prints it) and any rule the apiserver can check belongs here too,
as a CEL rule in ``x-kubernetes-validations``. The reconciler parses stored resources with the same
models, so the defaults below are the ones that apply.

Kubernetes types the operator only passes through (affinity, topology spread constraints) are
loose objects (``x-kubernetes-preserve-unknown-fields``): the apiserver validates them for real
when the Deployment is applied.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from .autoscaling.spec import AutoscalingSpec
from .models import CamelModel
from .names import DEFAULT_KAFKA_CONSUMER_GROUP, DEFAULT_KAFKA_TOPIC, SPLIT_ROLES, Role

# An image reference: [registry[:port]/]path[:tag][@sha256:digest] (the distribution grammar, simplified).
IMAGE_PATTERN = (
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/)?"
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

# The apiserver's own schema for resource.Quantity (as controller-gen emits it).
QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": (
        r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
        r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ),
    "x-kubernetes-int-or-string": True,
}
Quantity = Annotated[int | str, WithJsonSchema(QUANTITY_SCHEMA)]
# Kubernetes objects passed through untouched; the apiserver validates them on the Deployment.
LooseObject = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]


def _rules(*rules: tuple[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class Mode(StrEnum):
    SPLIT = "split"
    ALL = "all"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class LocalObjectReference(CamelModel):
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object in this namespace."
    )


class OptionalObjectReference(LocalObjectReference):
    optional: bool = Field(default=False, description="Start without the object when it does not exist.")


class SecretKeyRef(CamelModel):
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret in this namespace."
    )
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the Secret's data.")


class KeySelector(CamelModel):
    name: str = Field(
        max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object in this namespace."
    )
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key within the object's data.")
    optional: bool = Field(
        default=False, description="Start without the value when the object or key is missing."
    )


class FieldSelector(CamelModel):
    field_path: str = Field(description="Pod field to expose, e.g. metadata.name or status.podIP.")
    api_version: str | None = Field(default=None, description="Schema version of fieldPath (default v1).")


class EnvVarSource(CamelModel):
    secret_key_ref: KeySelector | None = Field(
        default=None, description="A key of a Secret in this namespace."
    )
    config_map_key_ref: KeySelector | None = Field(
        default=None, description="A key of a ConfigMap in this namespace."
    )
    field_ref: FieldSelector | None = Field(default=None, description="A field of the pod (downward API).")
    resource_field_ref: LooseObject | None = Field(
        default=None, description="A resource limit or request of the container (downward API)."
    )


class EnvVar(CamelModel):
    model_config = CamelModel.model_config | {
        "json_schema_extra": _rules(
            ("!(has(self.value) && has(self.valueFrom))", "set either value or valueFrom, not both")
        )
    }

    name: str = Field(max_length=256, pattern=ENV_NAME, description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret, a ConfigMap or the pod."
    )


class EnvFromSource(CamelModel):
    model_config = CamelModel.model_config | {
        "json_schema_extra": _rules(
            (
                "has(self.configMapRef) != has(self.secretRef)",
                "set exactly one of configMapRef and secretRef",
            )
        )
    }

    prefix: str | None = Field(default=None, description="Prefix added to every variable name.")
    config_map_ref: OptionalObjectReference | None = Field(
        default=None, description="Every key of this ConfigMap becomes a variable."
    )
    secret_ref: OptionalObjectReference | None = Field(
        default=None, description="Every key of this Secret becomes a variable."
    )


class ResourceRequirements(CamelModel):
    requests: dict[str, Quantity] | None = Field(
        default=None, description="Resources the scheduler reserves for the container, e.g. cpu: 100m."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Upper bounds for the container, e.g. memory: 512Mi."
    )


class Toleration(CamelModel):
    key: str | None = Field(default=None, description="Taint key the toleration applies to; empty = all.")
    operator: str | None = Field(default=None, description="Exists or Equal (default Equal).")
    value: str | None = Field(default=None, description="Taint value to match with operator Equal.")
    effect: str | None = Field(
        default=None, description="NoSchedule, PreferNoSchedule or NoExecute; empty = all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


def _default_resources() -> ResourceRequirements:
    return ResourceRequirements(requests={"cpu": "100m", "memory": "128Mi"}, limits={"memory": "512Mi"})


class WorkloadSpec(CamelModel):
    """The Deployment settings of one role."""

    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Pod count. For relay and consumer with autoscaling enabled, the autoscaler decides.",
    )
    resources: ResourceRequirements = Field(
        default_factory=_default_resources,
        description="CPU and memory requests/limits (default: requests cpu 100m, memory 128Mi; limit 512Mi).",
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Only schedule on nodes carrying these labels."
    )
    tolerations: list[Toleration] | None = Field(default=None, description="Taints the role's pods tolerate.")
    affinity: LooseObject | None = Field(
        default=None, description="Kubernetes affinity (nodeAffinity, podAffinity, podAntiAffinity)."
    )
    topology_spread_constraints: list[LooseObject] | None = Field(
        default=None, description="Kubernetes topology spread constraints for the role's pods."
    )
    env: list[EnvVar] | None = Field(
        default=None,
        description="Extra environment for this role only; overrides the shared spec.env by name.",
    )


class ScalableWorkloadSpec(WorkloadSpec):
    """The Deployment settings of a role the operator can autoscale from outbox lag."""

    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec,
        description="Scale this role from outbox lag (relay: due outbox rows; consumer: consumer-group lag).",
    )  # minReplicas <= maxReplicas is AutoscalingSpec's own rule (CEL in the CRD and its validator)


class RolesSpec(CamelModel):
    api: WorkloadSpec = Field(
        default_factory=WorkloadSpec,
        description="The HTTP API (mode split): serves requests, writes outbox rows.",
    )
    relay: ScalableWorkloadSpec = Field(
        default_factory=ScalableWorkloadSpec,
        description="Outbox dispatch (mode split): publishes due outbox rows to Kafka.",
    )
    consumer: ScalableWorkloadSpec = Field(
        default_factory=ScalableWorkloadSpec,
        description="The Kafka consumer group (mode split): runs the event handlers.",
    )
    memory_worker: WorkloadSpec = Field(
        default_factory=WorkloadSpec,
        description="The memory job loop (mode split): claims memory_jobs and stores extracted facts.",
    )
    all: WorkloadSpec = Field(
        default_factory=WorkloadSpec,
        description="Every role in one process (mode all, the compatibility mode); ignored in mode split.",
    )

    def for_role(self, role: Role) -> WorkloadSpec:
        workloads: dict[Role, WorkloadSpec] = {
            Role.API: self.api,
            Role.RELAY: self.relay,
            Role.CONSUMER: self.consumer,
            Role.MEMORY_WORKER: self.memory_worker,
            Role.ALL: self.all,
        }
        return workloads[role]


class ConfigKind(StrEnum):
    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"


class CertificateRef(CamelModel):
    """A CA bundle: one key of a Secret or of a ConfigMap (CA certificates are not secret)."""

    kind: ConfigKind = Field(default=ConfigKind.SECRET, description="Secret (default) or ConfigMap.")
    name: str = Field(
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the Secret or ConfigMap in this namespace.",
    )
    key: str = Field(
        max_length=253, pattern=CONFIG_KEY, description="Key holding the PEM certificates, e.g. ca.crt."
    )


_CLIENT_PAIR_RULES = (
    (
        "has(self.clientCertificateRef) == has(self.clientKeyRef)",
        "clientCertificateRef and clientKeyRef go together (mutual TLS needs both the certificate "
        "and its private key)",
    ),
)


class KafkaTlsSpec(CamelModel):
    """TLS towards the brokers (security protocol SSL, or SASL_SSL together with spec.kafka.sasl)."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": _rules(
            *_CLIENT_PAIR_RULES,
            (
                "self.enabled || !(has(self.caRef) || has(self.clientCertificateRef) "
                "|| has(self.clientKeyRef))",
                "caRef, clientCertificateRef and clientKeyRef need enabled: true",
            ),
        )
    }

    enabled: bool = Field(default=True, description="Connect to the brokers over TLS (default true).")
    ca_ref: CertificateRef | None = Field(
        default=None,
        description="The CA certificates (PEM) the brokers' certificates are verified against; unset: "
        "the image's system trust store. Mounted at /etc/smartflow/tls/kafka/ca.crt.",
    )
    client_certificate_ref: SecretKeyRef | None = Field(
        default=None,
        description="Mutual TLS: the Secret key holding the client certificate (PEM, chain allowed); "
        "needs clientKeyRef. Mounted at /etc/smartflow/tls/kafka/tls.crt.",
    )
    client_key_ref: SecretKeyRef | None = Field(
        default=None,
        description="Mutual TLS: the Secret key holding the client certificate's private key (PEM, "
        "unencrypted); needs clientCertificateRef. Mounted at /etc/smartflow/tls/kafka/tls.key.",
    )
    check_hostname: bool = Field(
        default=True,
        description="Verify that the broker certificate names the host connected to (default true). "
        "false still verifies the certificate against the CA.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaTlsSpec:
        # The same rules the CRD enforces with CEL, for specs that reach the operator another way.
        if (self.client_certificate_ref is None) != (self.client_key_ref is None):
            raise ValueError(_CLIENT_PAIR_RULES[0][1])
        if not self.enabled and (self.ca_ref or self.client_certificate_ref or self.client_key_ref):
            raise ValueError("caRef, clientCertificateRef and clientKeyRef need enabled: true")
        return self


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


_USERNAME_RULE = (
    "has(self.username) != has(self.usernameRef)",
    "set exactly one of username and usernameRef",
)


class KafkaSaslSpec(CamelModel):
    """SASL authentication towards the brokers (SASL_SSL with spec.kafka.tls, else SASL_PLAINTEXT)."""

    model_config = CamelModel.model_config | {"json_schema_extra": _rules(_USERNAME_RULE)}

    mechanism: SaslMechanism = Field(description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    username: str | None = Field(
        default=None, min_length=1, max_length=256, description="The user name, literally (not secret)."
    )
    username_ref: SecretKeyRef | None = Field(
        default=None, description="The Secret key holding the user name (instead of username)."
    )
    password_ref: SecretKeyRef = Field(
        description="The Secret key holding the password; it reaches the pods as a secretKeyRef "
        "variable, never as a literal in the pod spec."
    )

    @model_validator(mode="after")
    def _one_username(self) -> KafkaSaslSpec:
        if (self.username is None) == (self.username_ref is None):
            raise ValueError(_USERNAME_RULE[1])
        return self


class DatabaseSslMode(StrEnum):
    REQUIRE = "require"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


class DatabaseTlsSpec(CamelModel):
    """TLS towards PostgreSQL. A DSN that says otherwise (its own sslmode, sslrootcert, ...) is refused."""

    model_config = CamelModel.model_config | {"json_schema_extra": _rules(*_CLIENT_PAIR_RULES)}

    mode: DatabaseSslMode = Field(
        default=DatabaseSslMode.VERIFY_FULL,
        description="require: encrypt, verify nothing (with caRef: verify the CA, as libpq does); "
        "verify-ca: verify the server certificate against the CA; verify-full (default): also that it "
        "names the host of the DSN.",
    )
    ca_ref: CertificateRef | None = Field(
        default=None,
        description="The CA certificates (PEM) the server certificate is verified against; unset: the "
        "image's system trust store. Mounted at /etc/smartflow/tls/database/ca.crt.",
    )
    client_certificate_ref: SecretKeyRef | None = Field(
        default=None,
        description="Client certificate authentication: the Secret key holding the certificate (PEM); "
        "needs clientKeyRef. Mounted at /etc/smartflow/tls/database/tls.crt.",
    )
    client_key_ref: SecretKeyRef | None = Field(
        default=None,
        description="The Secret key holding the client certificate's private key (PEM, unencrypted); "
        "needs clientCertificateRef. Mounted at /etc/smartflow/tls/database/tls.key.",
    )

    @model_validator(mode="after")
    def _pair(self) -> DatabaseTlsSpec:
        if (self.client_certificate_ref is None) != (self.client_key_ref is None):
            raise ValueError(_CLIENT_PAIR_RULES[0][1])
        return self


class DatabaseSpec(CamelModel):
    dsn_secret_ref: SecretKeyRef = Field(
        description="The Secret key holding the PostgreSQL DSN (postgresql://user:pw@host:port/db)."
    )
    tls: DatabaseTlsSpec | None = Field(
        default=None,
        description="TLS towards PostgreSQL (mode, CA, client certificate) for every role, the migration "
        "Job and the operator's relay-lag probe; unset: whatever the DSN's sslmode says. The DSN must "
        "not contradict it (e.g. sslmode=require in the DSN with mode verify-full: Degraded).",
    )


_CLEARTEXT_RULE = (
    "!has(self.sasl) || self.sasl.mechanism != 'PLAIN' || (has(self.tls) && self.tls.enabled) "
    "|| self.allowPlaintextPassword",
    "sasl.mechanism PLAIN without tls would send the password in clear text: enable tls, use SCRAM, "
    "or set allowPlaintextPassword: true",
)


class KafkaSpec(CamelModel):
    model_config = CamelModel.model_config | {"json_schema_extra": _rules(_CLEARTEXT_RULE)}

    bootstrap_servers: str = Field(
        min_length=1,
        max_length=4096,
        pattern=r"^[^,\s]+(,[^,\s]+)*$",
        description="Comma-separated host:port list of Kafka brokers.",
    )
    topic: str = Field(
        default=DEFAULT_KAFKA_TOPIC,
        pattern=r"^[a-zA-Z0-9._-]{1,249}$",
        description="The outbox topic.",
    )
    consumer_group: str = Field(
        default=DEFAULT_KAFKA_CONSUMER_GROUP,
        min_length=1,
        max_length=255,
        description="The consumer group the consumer role joins (and whose lag drives its autoscaling).",
    )
    tls: KafkaTlsSpec | None = Field(
        default=None,
        description="TLS towards the brokers (CA, client certificate for mutual TLS, hostname check), "
        "for every role, the migration Job and the operator's consumer-lag probe.",
    )
    sasl: KafkaSaslSpec | None = Field(
        default=None,
        description="SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512); with tls enabled the "
        "security protocol is SASL_SSL, else SASL_PLAINTEXT.",
    )
    allow_plaintext_password: bool = Field(
        default=False,
        description="Allow SASL PLAIN without TLS, i.e. the password sent in clear text over the network "
        "(refused unless true; SCRAM never sends the password itself).",
    )

    @model_validator(mode="after")
    def _no_cleartext_password(self) -> KafkaSpec:
        if self.sends_cleartext_password() and not self.allow_plaintext_password:
            raise ValueError(_CLEARTEXT_RULE[1])
        return self

    def tls_enabled(self) -> bool:
        return self.tls is not None and self.tls.enabled

    def sends_cleartext_password(self) -> bool:
        return self.sasl is not None and self.sasl.mechanism is SaslMechanism.PLAIN and not self.tls_enabled()

    def security_protocol(self) -> str:
        """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (SMARTFLOW_KAFKA_SECURITY_PROTOCOL)."""
        if self.sasl is not None:
            return "SASL_SSL" if self.tls_enabled() else "SASL_PLAINTEXT"
        return "SSL" if self.tls_enabled() else "PLAINTEXT"


class MigrationsSpec(CamelModel):
    """The schema migration the operator runs as a Job before the roles get a new image."""

    enabled: bool = Field(
        default=True,
        description="Run `smartflow-runtime migrate` (schema and Kafka topic) as a Job from spec.image "
        "before any role Deployment is created or gets a new image, and roll the roles only after it "
        "succeeded. false: never create the Job (migrate in your own pipeline); the operator then only "
        "reports the schema version it reads from the database.",
    )
    outbox_shards: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="Outbox shard count `migrate` creates a new database with (`--shards`); it caps useful "
        "relay replicas. Fixed by the first migration: on an existing database it must equal the count "
        "there, else the migration fails (re-sharding would break per-key order).",
    )
    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a failed migration pod before the Job counts as failed (Job backoffLimit).",
    )
    active_deadline_seconds: int = Field(
        default=600,
        ge=30,
        le=86400,
        description="Seconds the migration Job may run in all, retries included, before it is failed "
        "(Job activeDeadlineSeconds).",
    )
    ttl_seconds_after_finished: int = Field(
        default=86400,
        ge=0,
        le=2592000,
        description="Seconds a finished migration Job (and its pod's log) is kept before Kubernetes "
        "deletes it (Job ttlSecondsAfterFinished). The operator records a migration in "
        "status.schema, so a deleted Job of a migrated spec is not run again; a failed one is run "
        "again once deleted.",
    )


class IpBlock(CamelModel):
    cidr: str = Field(min_length=1, max_length=64, description="An IP range, e.g. 10.0.0.0/8.")
    except_: list[str] | None = Field(
        default=None, alias="except", description="Ranges inside cidr that are not admitted."
    )


_PEER_RULE = (
    "has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
    "set podSelector, namespaceSelector or ipBlock",
)


class NetworkPolicyPeer(CamelModel):
    """Who may connect (a Kubernetes NetworkPolicyPeer): pods by label (in this namespace, or in the
    namespaces namespaceSelector picks), whole namespaces, or an IP range."""

    model_config = CamelModel.model_config | {"json_schema_extra": _rules(_PEER_RULE)}

    pod_selector: LooseObject | None = Field(
        default=None, description="A label selector (matchLabels, matchExpressions) for pods."
    )
    namespace_selector: LooseObject | None = Field(
        default=None,
        description="A label selector for namespaces; with podSelector: those pods in those namespaces.",
    )
    ip_block: IpBlock | None = Field(
        default=None, description="An IP range (not for pods: their IPs change)."
    )

    @model_validator(mode="after")
    def _selects_something(self) -> NetworkPolicyPeer:
        if self.pod_selector is None and self.namespace_selector is None and self.ip_block is None:
            raise ValueError(_PEER_RULE[1])
        return self


class NetworkPolicySpec(CamelModel):
    """One NetworkPolicy owned by the runtime, admitting only the listed ingress to its pods."""

    enabled: bool = Field(
        default=False,
        description="Own a NetworkPolicy `<name>` selecting every pod of this runtime: ingress only to the "
        "api's HTTP port from apiFrom and to every role's admin port (probes' /healthz, /readyz, "
        "/metrics) from monitoringFrom; nothing else. Needs a CNI that enforces NetworkPolicy (Calico, "
        "Cilium, ...); false (default): no policy, and one made before is deleted.",
    )
    api_from: list[NetworkPolicyPeer] | None = Field(
        default=None,
        description="Who may reach the api's HTTP port (8080); empty: nobody (the kubelet's probes use "
        "the admin port from the node, which policies do not block).",
    )
    monitoring_from: list[NetworkPolicyPeer] | None = Field(
        default=None,
        description="Who may reach every role's admin port (9090: /metrics for Prometheus); empty: nobody.",
    )


class SmartflowRuntimeSpec(CamelModel):
    """The desired Smartflow runtime: one image, run as one Deployment per role (or one for all)."""

    image: str = Field(
        max_length=512,
        description="Container image of the runtime, e.g. registry.example.com/smartflow/runtime:1.4.2.",
        json_schema_extra=_rules(
            (f"self.matches(r'{IMAGE_PATTERN}')", "must be an image reference such as registry/name:tag")
        ),
    )
    image_pull_policy: PullPolicy = Field(
        default=PullPolicy.IF_NOT_PRESENT, description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, description="Secrets with registry credentials for pulling the image."
    )
    mode: Mode = Field(
        default=Mode.SPLIT,
        description="split: one Deployment per role (api, relay, consumer, memory-worker); "
        "all: one Deployment running every role in one process.",
    )
    env: list[EnvVar] | None = Field(default=None, description="Environment shared by every role.")
    env_from: list[EnvFromSource] | None = Field(
        default=None, description="ConfigMaps and Secrets whose keys become environment of every role."
    )
    database: DatabaseSpec = Field(description="The PostgreSQL database holding the outbox.")
    kafka: KafkaSpec = Field(description="The Kafka cluster the outbox is relayed to.")
    roles: RolesSpec = Field(default_factory=RolesSpec, description="Per-role workload settings.")
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        description="An optional NetworkPolicy for the runtime's pods (needs a policy-enforcing CNI).",
    )
    migrations: MigrationsSpec = Field(
        default_factory=MigrationsSpec,
        description="The schema migration Job run before the roles roll (its pod uses the shared env, "
        "envFrom and Secrets, and the resources and scheduling of the api role, or of `all` in mode all).",
    )

    @field_validator("image")
    @classmethod
    def _image_reference(cls, image: str) -> str:
        # The same rule the CRD enforces with CEL, for specs that reach the operator another way.
        if not re.match(IMAGE_PATTERN, image):
            raise ValueError("must be an image reference such as registry/name:tag")
        return image

    def active_roles(self) -> tuple[Role, ...]:
        """The roles that get a Deployment in the current mode."""
        return (Role.ALL,) if self.mode is Mode.ALL else SPLIT_ROLES

    def serving_role(self) -> Role:
        """The role that serves the API in the current mode (api, or all in mode all)."""
        return Role.ALL if self.mode is Mode.ALL else Role.API
