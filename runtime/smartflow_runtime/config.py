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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    "memory_worker_concurrency": "an integer 1..64",
    "memory_worker_lease_seconds": "a number of seconds 1..3600",
}


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
    memory_worker_concurrency: int = Field(default=1, ge=1, le=64)
    memory_worker_lease_seconds: float = Field(default=30.0, ge=1, le=3600)

    @field_validator("relay_listen_notify", mode="before")
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

    @field_validator("role", mode="before")
    @classmethod
    def _role_lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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
    """Never echo a DSN password into logs: ``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
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
    return problems


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
