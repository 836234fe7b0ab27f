"""What the operator's own connections (the lag probes, the schema-version read) need to reach a
runtime's PostgreSQL and Kafka with the runtime's security: the DSN, the SASL credentials and the
PEM texts of the CA and client certificates, taken from the Secrets/ConfigMaps the spec names.

Pure: the caller fetches the objects (``get`` by name, like ``config_refs``) and passes their data;
a missing object or key raises ``ConfigurationError`` naming the field. The values are frozen and
hashable, so the probes can share one connection per (address, security) pair: two runtimes on one
broker with different users never share a client. Secret material is left out of ``repr``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from .builders.security import CA_FILE, CERT_FILE, DATABASE_TLS_DIR, KEY_FILE
from .config_refs import (
    ConfigRef,
    FetchedConfig,
    Kind,
    check_refs,
    database_refs,
    kafka_refs,
    ref_kind,
)
from .errors import ConfigurationError
from .spec import CertificateRef, SecretKeyRef, SmartflowRuntimeSpec

INVALID_CONFIG_VALUE = "InvalidConfigValue"
DATABASE_TLS_CONFLICT = "DatabaseTLSConflict"


@dataclass(frozen=True)
class KafkaSecurity:
    """How to authenticate to and encrypt towards the brokers (not PLAINTEXT)."""

    protocol: str  # SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_pem: str | None = field(default=None, repr=False)  # None: the system trust store
    cert_pem: str | None = field(default=None, repr=False)
    key_pem: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class DatabaseSecurity:
    """TLS towards PostgreSQL (``spec.database.tls``)."""

    mode: str  # require | verify-ca | verify-full
    ca_pem: str | None = field(default=None, repr=False)
    cert_pem: str | None = field(default=None, repr=False)
    key_pem: str | None = field(default=None, repr=False)


def _ref_for(refs: list[ConfigRef], kind: Kind, name: str, key: str) -> ConfigRef:
    return next(ref for ref in refs if (ref.kind, ref.name, ref.key) == (kind, name, key))


def _text(ref: ConfigRef, fetched: FetchedConfig, namespace: str) -> str:
    """The value of ``ref`` as text: Secret data is base64; ConfigMap ``data`` is text already
    (a CA in ``binaryData`` is base64 too, and is recognised as not being PEM)."""
    raw = str((fetched.get((ref.kind, ref.name)) or {}).get(ref.key or ""))
    if ref.kind == "ConfigMap" and "-----BEGIN" in raw:
        return raw
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise ConfigurationError(
            INVALID_CONFIG_VALUE,
            f"{ref.kind} {namespace}/{ref.name} key {ref.key!r} (from {ref.field}) is not text",
        ) from error


def _value_of(
    ref: SecretKeyRef | CertificateRef | None, refs: list[ConfigRef], fetched: FetchedConfig, namespace: str
) -> str | None:
    if ref is None:
        return None
    return _text(_ref_for(refs, ref_kind(ref), ref.name, ref.key), fetched, namespace)


def database_dsn(spec: SmartflowRuntimeSpec, fetched: FetchedConfig, *, namespace: str) -> str:
    refs = database_refs(spec)
    check_refs(refs[:1], fetched, namespace=namespace)
    dsn = spec.database.dsn_secret_ref
    return _text(_ref_for(refs, "Secret", dsn.name, dsn.key), fetched, namespace)


def database_security(
    spec: SmartflowRuntimeSpec, fetched: FetchedConfig, *, namespace: str
) -> DatabaseSecurity | None:
    tls = spec.database.tls
    if tls is None:
        return None
    refs = database_refs(spec)
    check_refs(refs, fetched, namespace=namespace)
    return DatabaseSecurity(
        mode=tls.mode.value,
        ca_pem=_value_of(tls.ca_ref, refs, fetched, namespace),
        cert_pem=_value_of(tls.client_certificate_ref, refs, fetched, namespace),
        key_pem=_value_of(tls.client_key_ref, refs, fetched, namespace),
    )


def check_dsn_agrees(spec: SmartflowRuntimeSpec, fetched: FetchedConfig, *, namespace: str) -> None:
    """``spec.database.tls`` and the DSN's own sslmode/sslrootcert/sslcert/sslkey must not disagree:
    the runtime refuses to start with a variable that contradicts its DSN (one place per setting),
    so the operator says so first (Degraded naming the field) instead of rolling crash-looping pods."""
    tls = spec.database.tls
    if tls is None:
        return
    dsn = database_dsn(spec, fetched, namespace=namespace)
    given = {key: values[-1] for key, values in parse_qs(urlsplit(dsn).query).items() if values}
    ours = {"sslmode": ("spec.database.tls.mode", tls.mode.value)}
    for parameter, ref, file, where in (
        ("sslrootcert", tls.ca_ref, CA_FILE, "caRef"),
        ("sslcert", tls.client_certificate_ref, CERT_FILE, "clientCertificateRef"),
        ("sslkey", tls.client_key_ref, KEY_FILE, "clientKeyRef"),
    ):
        if ref is not None:
            ours[parameter] = (f"spec.database.tls.{where}", f"{DATABASE_TLS_DIR}/{file}")
    dsn_ref = spec.database.dsn_secret_ref
    for parameter, (where, value) in ours.items():
        if parameter in given and given[parameter] != value:
            raise ConfigurationError(
                DATABASE_TLS_CONFLICT,
                f"{where}: sets {parameter}={value}, but the DSN in Secret {namespace}/{dsn_ref.name} key "
                f"{dsn_ref.key!r} says {parameter}={given[parameter]}; set it in one place",
            )


def kafka_security(
    spec: SmartflowRuntimeSpec, fetched: FetchedConfig, *, namespace: str
) -> KafkaSecurity | None:
    kafka = spec.kafka
    protocol = kafka.security_protocol()
    if protocol == "PLAINTEXT":
        return None
    refs = kafka_refs(spec)
    check_refs(refs, fetched, namespace=namespace)
    tls, sasl = kafka.tls if kafka.tls_enabled() else None, kafka.sasl
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=sasl.mechanism.value if sasl else None,
        username=(sasl.username or _value_of(sasl.username_ref, refs, fetched, namespace)) if sasl else None,
        password=_value_of(sasl.password_ref, refs, fetched, namespace) if sasl else None,
        ca_pem=_value_of(tls.ca_ref, refs, fetched, namespace) if tls else None,
        cert_pem=_value_of(tls.client_certificate_ref, refs, fetched, namespace) if tls else None,
        key_pem=_value_of(tls.client_key_ref, refs, fetched, namespace) if tls else None,
        check_hostname=tls.check_hostname if tls else True,
    )


def objects_of(refs: list[ConfigRef]) -> list[tuple[Kind, str]]:
    """The distinct objects behind ``refs``, to fetch."""
    return sorted({(ref.kind, ref.name) for ref in refs})
