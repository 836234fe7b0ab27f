"""Kafka TLS/SASL and PostgreSQL TLS in a pod: the runtime's environment variables and the read-only
volumes holding the certificates, as docs/contracts.md fixes them. Pure; used by the role
Deployments and the migration Job alike (``deployment.build_env`` / ``build_container`` /
``build_pod_basics``).

Nothing is emitted for a spec without ``kafka.tls``/``kafka.sasl``/``database.tls``, so the pod
templates of existing runtimes stay byte-identical (no rollout on an operator upgrade). The SASL
password (and a username from a Secret) reach the container as ``secretKeyRef`` variables: the
pod spec never holds the secret itself.

The certificate files come from one projected volume per peer (the CA may be a ConfigMap key,
the client certificate and key Secret keys, possibly of different objects). The pods run as uid
and gid 10001 with ``fsGroup`` 10001; the kubelet gives the projected files that group, and mode
0440 lets the runtime read them and nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec import CertificateRef, ConfigKind, SecretKeyRef, SmartflowRuntimeSpec

KAFKA_TLS_DIR = "/etc/smartflow/tls/kafka"
DATABASE_TLS_DIR = "/etc/smartflow/tls/database"
KAFKA_TLS_VOLUME = "kafka-tls"
DATABASE_TLS_VOLUME = "database-tls"
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
# r--r-----: the owner (root) and the fsGroup (the runtime's gid) read, nobody else.
FILE_MODE = 0o440


@dataclass(frozen=True)
class MountedFile:
    """One file of a TLS volume: which key of which object, at which path inside the volume."""

    kind: ConfigKind
    name: str
    key: str
    path: str


def _files(
    ca_ref: CertificateRef | None, cert_ref: SecretKeyRef | None, key_ref: SecretKeyRef | None
) -> list[MountedFile]:
    files = [MountedFile(ca_ref.kind, ca_ref.name, ca_ref.key, CA_FILE)] if ca_ref is not None else []
    if cert_ref is not None and key_ref is not None:
        files.append(MountedFile(ConfigKind.SECRET, cert_ref.name, cert_ref.key, CERT_FILE))
        files.append(MountedFile(ConfigKind.SECRET, key_ref.name, key_ref.key, KEY_FILE))
    return files


def kafka_files(spec: SmartflowRuntimeSpec) -> list[MountedFile]:
    tls = spec.kafka.tls
    if tls is None or not tls.enabled:
        return []
    return _files(tls.ca_ref, tls.client_certificate_ref, tls.client_key_ref)


def database_files(spec: SmartflowRuntimeSpec) -> list[MountedFile]:
    tls = spec.database.tls
    if tls is None:
        return []
    return _files(tls.ca_ref, tls.client_certificate_ref, tls.client_key_ref)


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _from_secret(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _paths(
    files: list[MountedFile], directory: str, prefix: str, names: dict[str, str]
) -> list[dict[str, Any]]:
    return [_value(f"{prefix}{names[file.path]}", f"{directory}/{file.path}") for file in files]


def security_env(spec: SmartflowRuntimeSpec) -> list[dict[str, Any]]:
    """The SMARTFLOW_KAFKA_SECURITY_*/SASL_*/SSL_* and SMARTFLOW_DATABASE_SSL* variables."""
    kafka = spec.kafka
    env: list[dict[str, Any]] = []
    if kafka.tls_enabled() or kafka.sasl is not None:
        env.append(_value("SMARTFLOW_KAFKA_SECURITY_PROTOCOL", kafka.security_protocol()))
    if kafka.sasl is not None:
        sasl = kafka.sasl
        env.append(_value("SMARTFLOW_KAFKA_SASL_MECHANISM", sasl.mechanism.value))
        if sasl.username_ref is not None:
            env.append(_from_secret("SMARTFLOW_KAFKA_SASL_USERNAME", sasl.username_ref))
        else:
            env.append(_value("SMARTFLOW_KAFKA_SASL_USERNAME", str(sasl.username)))
        env.append(_from_secret("SMARTFLOW_KAFKA_SASL_PASSWORD", sasl.password_ref))
        if kafka.sends_cleartext_password():  # only admitted with allowPlaintextPassword
            env.append(_value("SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD", "true"))
    if kafka.tls is not None and kafka.tls.enabled:
        names = {CA_FILE: "CAFILE", CERT_FILE: "CERTFILE", KEY_FILE: "KEYFILE"}
        env += _paths(kafka_files(spec), KAFKA_TLS_DIR, "SMARTFLOW_KAFKA_SSL_", names)
        env.append(
            _value("SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME", "true" if kafka.tls.check_hostname else "false")
        )
    database = spec.database.tls
    if database is not None:
        env.append(_value("SMARTFLOW_DATABASE_SSLMODE", database.mode.value))
        names = {CA_FILE: "SSLROOTCERT", CERT_FILE: "SSLCERT", KEY_FILE: "SSLKEY"}
        env += _paths(database_files(spec), DATABASE_TLS_DIR, "SMARTFLOW_DATABASE_", names)
    return env


def _volume(name: str, files: list[MountedFile]) -> dict[str, Any]:
    sources: list[dict[str, Any]] = []
    for file in files:
        kind = "secret" if file.kind is ConfigKind.SECRET else "configMap"
        sources.append({kind: {"name": file.name, "items": [{"key": file.key, "path": file.path}]}})
    return {"name": name, "projected": {"defaultMode": FILE_MODE, "sources": sources}}


def security_volumes(spec: SmartflowRuntimeSpec) -> list[dict[str, Any]]:
    """The pod's TLS volumes (none when no certificate file is referenced)."""
    volumes = []
    if files := kafka_files(spec):
        volumes.append(_volume(KAFKA_TLS_VOLUME, files))
    if files := database_files(spec):
        volumes.append(_volume(DATABASE_TLS_VOLUME, files))
    return volumes


def security_mounts(spec: SmartflowRuntimeSpec) -> list[dict[str, Any]]:
    """The container's read-only mounts of :func:`security_volumes`."""
    mounts = []
    if kafka_files(spec):
        mounts.append({"name": KAFKA_TLS_VOLUME, "mountPath": KAFKA_TLS_DIR, "readOnly": True})
    if database_files(spec):
        mounts.append({"name": DATABASE_TLS_VOLUME, "mountPath": DATABASE_TLS_DIR, "readOnly": True})
    return mounts
