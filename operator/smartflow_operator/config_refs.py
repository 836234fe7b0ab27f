"""The Secrets and ConfigMaps a role's pods read, and the hash of what they read.

The hash goes on the pod template (``smartflow.io/config-hash``): when a referenced value changes,
the template changes and the Deployment rolls its pods. Only what a role consumes is hashed (one
key of the DSN Secret, whole objects for envFrom), so an unrelated key or another role's Secret
rolls nothing. Missing objects or keys that are not optional raise ``ConfigurationError`` with the
condition reason and the field that refers to them. Pure: the reconciler fetches the objects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigurationError
from .names import Role
from .spec import CertificateRef, ConfigKind, EnvVar, SecretKeyRef, SmartflowRuntimeSpec

SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
CONFIG_MAP_KEY_NOT_FOUND = "ConfigMapKeyNotFound"

Kind = Literal["Secret", "ConfigMap"]
# (kind, name) -> the object's data (Secret: base64 values as stored; ConfigMap: data + binaryData),
# or None when the object does not exist.
FetchedConfig = Mapping[tuple[Kind, str], Mapping[str, Any] | None]


@dataclass(frozen=True, order=True)
class ConfigRef:
    kind: Kind
    name: str
    key: str | None  # None: the whole object (envFrom)
    optional: bool
    field: str  # where the spec refers to it, for messages


def _env_refs(env: list[EnvVar] | None, field: str) -> list[ConfigRef]:
    refs: list[ConfigRef] = []
    for index, var in enumerate(env or []):
        source = var.value_from
        if source is None:
            continue
        where = f"{field}[{index}].valueFrom"
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            refs.append(ConfigRef("Secret", ref.name, ref.key, ref.optional, f"{where}.secretKeyRef"))
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            refs.append(ConfigRef("ConfigMap", ref.name, ref.key, ref.optional, f"{where}.configMapKeyRef"))
    return refs


def ref_kind(ref: SecretKeyRef | CertificateRef) -> Kind:
    """Secret for a SecretKeyRef; a CertificateRef says which."""
    return "ConfigMap" if isinstance(ref, CertificateRef) and ref.kind is ConfigKind.CONFIG_MAP else "Secret"


def _key_ref(ref: SecretKeyRef | CertificateRef | None, field: str) -> list[ConfigRef]:
    return [] if ref is None else [ConfigRef(ref_kind(ref), ref.name, ref.key, False, field)]


def database_refs(spec: SmartflowRuntimeSpec) -> list[ConfigRef]:
    """The DSN and the PostgreSQL TLS files: what every pod and the relay-lag probe read."""
    dsn = spec.database.dsn_secret_ref
    refs = [ConfigRef("Secret", dsn.name, dsn.key, False, "spec.database.dsnSecretRef")]
    tls = spec.database.tls
    if tls is not None:
        refs += _key_ref(tls.ca_ref, "spec.database.tls.caRef")
        refs += _key_ref(tls.client_certificate_ref, "spec.database.tls.clientCertificateRef")
        refs += _key_ref(tls.client_key_ref, "spec.database.tls.clientKeyRef")
    return refs


def kafka_refs(spec: SmartflowRuntimeSpec) -> list[ConfigRef]:
    """The SASL credentials and the Kafka TLS files: what every pod and the consumer-lag probe read."""
    refs: list[ConfigRef] = []
    tls, sasl = spec.kafka.tls, spec.kafka.sasl
    if tls is not None and tls.enabled:
        refs += _key_ref(tls.ca_ref, "spec.kafka.tls.caRef")
        refs += _key_ref(tls.client_certificate_ref, "spec.kafka.tls.clientCertificateRef")
        refs += _key_ref(tls.client_key_ref, "spec.kafka.tls.clientKeyRef")
    if sasl is not None:
        refs += _key_ref(sasl.username_ref, "spec.kafka.sasl.usernameRef")
        refs += _key_ref(sasl.password_ref, "spec.kafka.sasl.passwordRef")
    return refs


def referenced_config(spec: SmartflowRuntimeSpec, role: Role | None) -> list[ConfigRef]:
    """Every Secret/ConfigMap (key) the pods of ``role`` read, in spec order (``role`` None: what
    every role reads, i.e. what the migration Job reads)."""
    refs = database_refs(spec) + kafka_refs(spec)
    refs += _env_refs(spec.env, "spec.env")
    for index, source in enumerate(spec.env_from or []):
        where = f"spec.envFrom[{index}]"
        if source.secret_ref is not None:
            ref = source.secret_ref
            refs.append(ConfigRef("Secret", ref.name, None, ref.optional, f"{where}.secretRef"))
        if source.config_map_ref is not None:
            ref = source.config_map_ref
            refs.append(ConfigRef("ConfigMap", ref.name, None, ref.optional, f"{where}.configMapRef"))
    if role is not None:
        refs += _env_refs(spec.roles.for_role(role).env, f"spec.roles.{role.spec_key}.env")
    return refs


def all_referenced_objects(spec: SmartflowRuntimeSpec) -> list[tuple[Kind, str]]:
    """The distinct objects to fetch for every active role."""
    objects = {(ref.kind, ref.name) for role in spec.active_roles() for ref in referenced_config(spec, role)}
    return sorted(objects)


def check_refs(refs: list[ConfigRef], fetched: FetchedConfig, *, namespace: str) -> None:
    """Raise ``ConfigurationError`` for the first reference whose object or key is missing."""
    for ref in refs:
        _check(ref, fetched.get((ref.kind, ref.name)), namespace)


def _check(ref: ConfigRef, data: Mapping[str, Any] | None, namespace: str) -> None:
    if ref.optional:
        return
    if data is None:
        reason = SECRET_NOT_FOUND if ref.kind == "Secret" else CONFIG_MAP_NOT_FOUND
        raise ConfigurationError(
            reason, f"{ref.kind} {namespace}/{ref.name} (from {ref.field}) does not exist"
        )
    if ref.key is not None and ref.key not in data:
        reason = SECRET_KEY_NOT_FOUND if ref.kind == "Secret" else CONFIG_MAP_KEY_NOT_FOUND
        raise ConfigurationError(
            reason, f"{ref.kind} {namespace}/{ref.name} has no key {ref.key!r} (from {ref.field})"
        )


def config_hash(refs: list[ConfigRef], fetched: FetchedConfig, *, namespace: str) -> str:
    """A short, stable hash of exactly the values ``refs`` consume; raises ``ConfigurationError``."""
    consumed: list[Any] = []
    for ref in refs:
        data = fetched.get((ref.kind, ref.name))
        _check(ref, data, namespace)
        if data is None:
            value: Any = None
        elif ref.key is None:
            value = dict(data)
        else:
            value = data.get(ref.key)
        consumed.append([ref.kind, ref.name, ref.key, value])
    text = json.dumps(consumed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
