"""Typed runtime settings read from ``SMARTFLOW_*`` environment variables.

The CLI calls :func:`load_settings` once, before anything starts. Every problem is collected
into one :class:`ConfigError` whose message names each bad or missing variable, so an operator
fixes a broken Deployment in one round instead of one variable per crash loop. Which variables
are required depends on what is being run (the api role needs no Kafka, ``migrate`` only a
database), so no role starts half-configured and none demands settings it never uses.

Names and defaults are the shared ones in ``docs/contracts.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "SMARTFLOW_"


class Role(enum.StrEnum):
    """What one process runs; see :mod:`smartflow_runtime.roles` for the services of each."""

    API = "api"
    RELAY = "relay"
    CONSUMER = "consumer"
    MEMORY_WORKER = "memory-worker"
    WORKER = "worker"
    ALL = "all"


class Need(enum.Enum):
    """A dependency a command needs configured; decides which variables are required."""

    DATABASE = "database"
    KAFKA = "kafka"
    ROLE = "role"


# What each field must look like, used in error messages: "<VAR>: must be <expectation>, got '<v>'".
_EXPECTATIONS: dict[str, str] = {
    "role": "one of " + ", ".join(r.value for r in Role),
    "database_dsn": "a PostgreSQL DSN like postgresql://user:pw@host:5432/db",
    "kafka_bootstrap_servers": "comma-separated host:port pairs",
    "kafka_topic": "a non-empty Kafka topic name",
    "kafka_consumer_group": "a non-empty consumer group id",
    "bind_host": "an interface address like 0.0.0.0 or 127.0.0.1",
    "admin_port": "a port 1..65535",
    "http_port": "a port 1..65535",
    "shutdown_grace_seconds": "a number of seconds > 0",
    "db_pool_max_size": "an integer 1..1000",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    "log_format": "json or text",
    "event_loop": "uvloop or asyncio",
    "kafka_topic_partitions": "an integer 1..10000",
    "relay_batch_size": "an integer 1..10000",
    "relay_lease_seconds": "a number of seconds 1..3600",
    "relay_poll_interval_seconds": "a number of seconds > 0 and <= 300",
    "relay_listen_notify": "true or false",
    "relay_notify_linger_seconds": "a number of seconds >= 0 and <= 1",
    "relay_lanes": "an integer 1..16",
    "outbox_max_attempts": "an integer 1..1000",
    "outbox_backoff_base_seconds": "a number of seconds >= 0 and <= 3600",
    "outbox_backoff_cap_seconds": "a number of seconds >= 0 and <= 86400",
    "consumer_max_poll_records": "an integer 1..10000",
    "consumer_commit_interval_seconds": "a number of seconds >= 0 and <= 10",
    "memory_worker_concurrency": "an integer 1..64",
    "memory_worker_lease_seconds": "a number of seconds 1..3600",
    "kafka_security_protocol": "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
    "kafka_sasl_mechanism": "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    "kafka_sasl_username": "a non-empty user name",
    "kafka_sasl_password": "a non-empty password",
    "kafka_ssl_cafile": "a file path",
    "kafka_ssl_certfile": "a file path",
    "kafka_ssl_keyfile": "a file path",
    "kafka_ssl_check_hostname": "true or false",
    "kafka_allow_plaintext_password": "true or false",
    "database_sslmode": "one of disable, prefer, require, verify-ca, verify-full",
    "database_sslrootcert": "a file path",
    "database_sslcert": "a file path",
    "database_sslkey": "a file path",
}

SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
# libpq's order: each mode does what the ones before it do, and more.
DATABASE_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_CERTIFICATE_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


def env_name(field: str) -> str:
    """The environment variable behind a settings field: ``admin_port`` -> ``SMARTFLOW_ADMIN_PORT``."""
    return ENV_PREFIX + field.upper()


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one ``"VAR: reason"`` entry per bad variable."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration: " + "; ".join(self.problems))


class Settings(BaseModel):
    """The runtime's settings; built by :func:`load_settings`, immutable afterwards."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role | None = None
    database_dsn: str | None = None
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = Field(default="smartflow.agent.outbox", min_length=1)
    kafka_consumer_group: str = Field(default="smartflow-agent-outbox-consumer", min_length=1)
    # All interfaces in a pod (reached via the pod IP); tests and the local runner use 127.0.0.1.
    bind_host: str = Field(default="0.0.0.0", min_length=1)
    admin_port: int = Field(default=9090, ge=1, le=65535)
    http_port: int = Field(default=8080, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=25.0, gt=0)
    db_pool_max_size: int = Field(default=20, ge=1, le=1000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    # The asyncio event loop implementation of `run` (uvloop: less CPU per request and per event).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # What operators tune (docs/runtime.md). The defaults are the services' own defaults.
    # Partitions cap the consumer's useful replicas; `migrate` ensures the topic has them.
    kafka_topic_partitions: int = Field(default=12, ge=1, le=10000)
    relay_batch_size: int = Field(default=500, ge=1, le=10000)
    relay_lease_seconds: float = Field(default=15.0, ge=1, le=3600)
    relay_poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    # False: the relay opens no LISTEN connection and wakes only on its poll (e.g. behind a
    # transaction-pooling PgBouncer, where LISTEN does not work).
    relay_listen_notify: bool = True
    # After a NOTIFY the relay waits this long (or for a batch's worth of NOTIFYs) before claiming.
    relay_notify_linger_seconds: float = Field(default=0.005, ge=0, le=1)
    # Concurrent claim-send-mark loops over disjoint groups of the relay's shards (one connection each).
    relay_lanes: int = Field(default=4, ge=1, le=16)
    outbox_max_attempts: int = Field(default=20, ge=1, le=1000)
    outbox_backoff_base_seconds: float = Field(default=1.0, ge=0, le=3600)
    outbox_backoff_cap_seconds: float = Field(default=32.0, ge=0, le=86400)
    consumer_max_poll_records: int = Field(default=500, ge=1, le=10000)
    consumer_commit_interval_seconds: float = Field(default=0.1, ge=0, le=10)
    memory_worker_concurrency: int = Field(default=1, ge=1, le=64)
    memory_worker_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Kafka security (docs/runtime.md "TLS and SASL"); every Kafka client the runtime makes uses it.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # Paths (mounted Secrets). No CA file: the system trust store.
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_check_hostname: bool = True
    # PLAIN over SASL_PLAINTEXT sends the password in the clear; refused unless this says so.
    kafka_allow_plaintext_password: bool = False
    # PostgreSQL TLS; unset: the DSN's own sslmode (or asyncpg's default, prefer) decides.
    database_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    database_sslrootcert: str | None = None
    database_sslcert: str | None = None
    database_sslkey: str | None = None

    @field_validator(
        "relay_listen_notify", "kafka_ssl_check_hostname", "kafka_allow_plaintext_password", mode="before"
    )
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # Only the spellings we document; pydantic would also take "on", "y", "1"...
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            raise ValueError("not true or false")
        return value

    @field_validator("log_level", "log_format", "event_loop", mode="before")
    @classmethod
    def _normalise_case(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("role", "database_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_dsn")
    @classmethod
    def _dsn_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")) or len(value.split("://", 1)[1]) == 0:
            raise ValueError("not a postgresql:// DSN")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"bad server {server.strip()!r}")
        return ",".join(s.strip() for s in value.split(","))

    @property
    def bootstrap_server_list(self) -> list[str]:
        return [] if self.kafka_bootstrap_servers is None else self.kafka_bootstrap_servers.split(",")

    @property
    def backoff_seconds(self) -> tuple[float, float]:
        """(base, cap) of the outbox retry backoff, for :class:`~.outbox.model.BackoffPolicy`."""
        return self.outbox_backoff_base_seconds, self.outbox_backoff_cap_seconds

    def require_database_dsn(self) -> str:
        """The DSN, for callers that ran :func:`load_settings` with :attr:`Need.DATABASE`."""
        if self.database_dsn is None:
            raise ConfigError([f"{env_name('database_dsn')}: missing"])
        return self.database_dsn

    def require_bootstrap_servers(self) -> str:
        if self.kafka_bootstrap_servers is None:
            raise ConfigError([f"{env_name('kafka_bootstrap_servers')}: missing"])
        return self.kafka_bootstrap_servers

    @property
    def kafka_uses_sasl(self) -> bool:
        return self.kafka_security_protocol in SASL_PROTOCOLS

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in TLS_PROTOCOLS

    @property
    def database_tls(self) -> DatabaseTls | None:
        """The PostgreSQL TLS settings to apply, merged with the DSN's own ``sslmode``/``sslrootcert``/
        ``sslcert``/``sslkey``; None when no ``SMARTFLOW_DATABASE_SSL*`` variable is set, so the DSN
        alone decides, read by asyncpg as before. (:func:`load_settings` rejects a variable that
        contradicts the DSN, so the merge never has to pick a winner.)"""
        ours = (self.database_sslmode, self.database_sslrootcert, self.database_sslcert, self.database_sslkey)
        if all(v is None for v in ours):
            return None
        dsn = dsn_ssl_parameters(self.database_dsn or "")
        return DatabaseTls(
            sslmode=self.database_sslmode or dsn.get("sslmode"),
            rootcert=self.database_sslrootcert or dsn.get("sslrootcert"),
            cert=self.database_sslcert or dsn.get("sslcert"),
            key=self.database_sslkey or dsn.get("sslkey"),
        )


@dataclass(frozen=True)
class DatabaseTls:
    """PostgreSQL TLS as one connection should use it; ``sslmode`` None means asyncpg's default (prefer)."""

    sslmode: str | None
    rootcert: str | None
    cert: str | None
    key: str | None


_DSN_SSL_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def dsn_ssl_parameters(dsn: str) -> dict[str, str]:
    """The TLS parameters in a DSN's query string (``?sslmode=verify-full&sslrootcert=...``)."""
    try:
        query = parse_qs(urlsplit(dsn).query)
    except ValueError:
        return {}
    return {name: query[name][-1] for name in _DSN_SSL_PARAMETERS if query.get(name)}


def role_needs(role: Role) -> frozenset[Need]:
    """The dependencies a role must have configured. Only roles that relay or consume touch Kafka."""
    needs = {Need.DATABASE, Need.ROLE}
    if role in (Role.RELAY, Role.CONSUMER, Role.WORKER, Role.ALL):
        needs.add(Need.KAFKA)
    return frozenset(needs)


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Prefixed variables as field names; empty values count as unset (a blank in a manifest)."""
    fields = Settings.model_fields
    values: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in fields and value.strip() != "":
            values[name] = value
    return values


def _redact(field: str, value: Any) -> Any:
    """Never echo a password into logs: ``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
    if field == "kafka_sasl_password":
        return "***"
    if field != "database_dsn" or not isinstance(value, str) or "@" not in value:
        return value
    head, _, tail = value.rpartition("@")
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        return "***@" + tail
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{tail}"


def _cross_field_problems(settings: Settings, known: Mapping[str, str]) -> dict[str, str]:
    """Rules between fields, checked once each field is valid on its own."""
    problems: dict[str, str] = {}
    base, cap = settings.backoff_seconds
    if not {"outbox_backoff_base_seconds", "outbox_backoff_cap_seconds"} & set(known) and cap < base:
        problems["outbox_backoff_cap_seconds"] = (
            f"{env_name('outbox_backoff_cap_seconds')}: must be >= "
            f"{env_name('outbox_backoff_base_seconds')} ({base:g}), got {cap:g}"
        )
    for field, problem in {
        **_kafka_security_problems(settings, known),
        **_database_tls_problems(settings),
    }.items():
        if field not in known:
            problems.setdefault(field, problem)
    return problems


def _kafka_security_problems(settings: Settings, known: Mapping[str, str]) -> dict[str, str]:
    """SASL settings that fit the security protocol; certificate and key given together."""
    problems: dict[str, str] = {}
    protocol = settings.kafka_security_protocol
    protocol_var = f"{env_name('kafka_security_protocol')}={protocol}"
    sasl_fields = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    if "kafka_security_protocol" not in known:
        for field in sasl_fields:
            given = getattr(settings, field) is not None or field in known
            if settings.kafka_uses_sasl and not given:
                problems[field] = f"{env_name(field)}: missing (required with {protocol_var})"
            elif not settings.kafka_uses_sasl and given:
                problems[field] = (
                    f"{env_name(field)}: only used with SASL_PLAINTEXT or SASL_SSL, but {protocol_var}"
                )
        if (
            protocol == "SASL_PLAINTEXT"
            and settings.kafka_sasl_mechanism == "PLAIN"
            and not settings.kafka_allow_plaintext_password
        ):
            problems.setdefault(
                "kafka_sasl_mechanism",
                f"{env_name('kafka_sasl_mechanism')}: PLAIN over SASL_PLAINTEXT sends the password in "
                f"the clear; use SASL_SSL (or a SCRAM mechanism), or set "
                f"{env_name('kafka_allow_plaintext_password')}=true",
            )
        if not settings.kafka_uses_tls:
            for field in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                if getattr(settings, field) is not None:
                    problems[field] = f"{env_name(field)}: only used with SSL or SASL_SSL, but {protocol_var}"
        else:
            cert, key = settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
            problems.update(_pair_problems(cert, "kafka_ssl_certfile", key, "kafka_ssl_keyfile"))
    return problems


def _database_tls_problems(settings: Settings) -> dict[str, str]:
    """SMARTFLOW_DATABASE_SSL* that agree with the DSN's own TLS parameters and with each other."""
    problems: dict[str, str] = {}
    dsn = dsn_ssl_parameters(settings.database_dsn or "")
    for field, parameter in (
        ("database_sslmode", "sslmode"),
        ("database_sslrootcert", "sslrootcert"),
        ("database_sslcert", "sslcert"),
        ("database_sslkey", "sslkey"),
    ):
        ours, theirs = getattr(settings, field), dsn.get(parameter)
        if ours is not None and theirs is not None and ours != theirs:
            problems[field] = (
                f"{env_name(field)}: {ours!r} contradicts {parameter}={theirs!r} in "
                f"{env_name('database_dsn')}; set it in one place"
            )
    tls = settings.database_tls
    if tls is None:
        return problems
    if tls.sslmode is not None and tls.sslmode not in DATABASE_SSLMODES:
        problems.setdefault(
            "database_dsn", f"{env_name('database_dsn')}: sslmode={tls.sslmode!r} is not a libpq sslmode"
        )
        return problems
    problems.update(_pair_problems(tls.cert, "database_sslcert", tls.key, "database_sslkey"))
    mode = tls.sslmode or "prefer"
    if mode not in _CERTIFICATE_SSLMODES:
        for field, value in (("database_sslrootcert", tls.rootcert), ("database_sslcert", tls.cert)):
            if value is not None:
                problems.setdefault(
                    field,
                    f"{env_name(field)}: only used with sslmode require, verify-ca or verify-full, but "
                    f"the sslmode is {mode} (set {env_name('database_sslmode')})",
                )
    return problems


def _pair_problems(cert: str | None, cert_field: str, key: str | None, key_field: str) -> dict[str, str]:
    """A client certificate needs its key and the other way round."""
    if cert is not None and key is None:
        return {key_field: f"{env_name(key_field)}: missing (required with {env_name(cert_field)})"}
    if key is not None and cert is None:
        return {cert_field: f"{env_name(cert_field)}: missing (required with {env_name(key_field)})"}
    return {}


def load_settings(
    environ: Mapping[str, str],
    *,
    needs: Iterable[Need] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate the environment (plus CLI ``overrides``, which win) for a command with ``needs``.

    With :attr:`Need.ROLE`, the role's own needs (:func:`role_needs`) are required as well.

    Raises :class:`ConfigError` naming every bad or missing variable at once.
    """
    raw: dict[str, Any] = _from_environ(environ)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    problems: dict[str, str] = {}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as error:
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            if field in problems:
                continue
            expectation = _EXPECTATIONS.get(field, item["msg"])
            shown = _redact(field, raw.get(field))
            problems[field] = f"{env_name(field)}: must be {expectation}, got {shown!r}"
        settings = Settings.model_validate({k: v for k, v in raw.items() if k not in problems})
    problems.update(_cross_field_problems(settings, problems))
    wanted = set(needs)
    if Need.ROLE in wanted:
        # An unknown role still needs what every role needs, so those are reported in the same round.
        common = frozenset.intersection(*(role_needs(r) for r in Role))
        wanted |= role_needs(settings.role) if settings.role is not None else common
    required = {
        Need.ROLE: "role",
        Need.DATABASE: "database_dsn",
        Need.KAFKA: "kafka_bootstrap_servers",
    }
    for need, field in required.items():
        if need in wanted and field not in problems and getattr(settings, field) is None:
            hint = " (or pass --role)" if need is Need.ROLE else ""
            problems[field] = f"{env_name(field)}: missing{hint}"
    if problems:
        order = list(Settings.model_fields)
        raise ConfigError(problems[f] for f in sorted(problems, key=order.index))
    return settings
