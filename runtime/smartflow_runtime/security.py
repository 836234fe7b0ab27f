"""Client security: the settings' Kafka SASL/TLS and PostgreSQL TLS as driver keyword arguments.

The CLI calls :func:`load_client_security` once per command, right after the settings; the result
reaches every client the runtime makes: ``kafka`` is splatted into each aiokafka client (the relay's
producer, the consumer, ``migrate``'s admin client), ``database`` into each asyncpg
``connect``/``create_pool`` (the role's pool, which also serves the relay's and the memory worker's
LISTEN connections, the readiness monitor's ping connection, ``migrate`` and the outbox commands).

No network I/O here and no driver import: the only side effect is reading the certificate files
the settings name into :class:`ssl.SSLContext` objects. The files are read once per process; a
rotated Secret reaches the pods through a rollout (the operator hashes referenced Secrets into the
pod template).

PostgreSQL ``sslmode`` follows libpq: ``disable`` no TLS; ``prefer`` TLS when the server offers it,
unverified (asyncpg's own handling, which can fall back to plaintext); ``require`` TLS without
verifying the server, unless a root certificate is given, in which case the chain is verified
(libpq does the same for compatibility); ``verify-ca`` the chain, not the hostname; ``verify-full``
the chain and the hostname. Without ``SMARTFLOW_DATABASE_SSLROOTCERT`` the verifying modes use the
system trust store (asyncpg alone would insist on ``~/.postgresql/root.crt``). asyncpg lets an
``ssl=`` argument win over the DSN's ``sslmode`` and ignores the DSN's certificate parameters once
it is given, so :attr:`~.config.Settings.database_tls` merges the DSN's values in and
:func:`~.config.load_settings` rejects a variable that contradicts the DSN: the two never disagree.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .config import ConfigError, DatabaseTls, Settings, env_name

# asyncpg asks for this ALPN protocol on the contexts it builds itself; ours do the same.
_POSTGRES_ALPN = ["postgresql"]


@dataclass(frozen=True)
class ClientSecurity:
    """Keyword arguments for every Kafka client (``kafka``) and every PostgreSQL connection
    (``database``); empty ``database`` means the DSN alone decides."""

    kafka: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({"security_protocol": "PLAINTEXT"})
    )
    database: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def load_client_security(settings: Settings, *, kafka: bool = True, database: bool = True) -> ClientSecurity:
    """The driver arguments for what a command uses (``kafka``/``database``), certificate files read.

    Raises :class:`ConfigError` naming every variable whose file cannot be loaded, in one message.
    """
    problems: list[str] = []
    kafka_options: dict[str, Any] = {"security_protocol": "PLAINTEXT"}
    database_options: dict[str, Any] = {}
    if kafka:
        try:
            kafka_options = kafka_client_options(settings)
        except ConfigError as error:
            problems.extend(error.problems)
    if database:
        try:
            database_options = database_connect_options(settings)
        except ConfigError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    return ClientSecurity(kafka=MappingProxyType(kafka_options), database=MappingProxyType(database_options))


# --- Kafka --------------------------------------------------------------------------------------


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments: ``security_protocol`` always; ``sasl_mechanism``,
    ``sasl_plain_username`` and ``sasl_plain_password`` with SASL_*; ``ssl_context`` with SSL and
    SASL_SSL. The same for producers, consumers and admin clients."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_uses_sasl:
        assert settings.kafka_sasl_password is not None  # load_settings requires it with SASL_*
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    if settings.kafka_uses_tls:
        options["ssl_context"] = kafka_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            check_hostname=settings.kafka_ssl_check_hostname,
        )
    return options


def kafka_ssl_context(
    *, cafile: str | None, certfile: str | None, keyfile: str | None, check_hostname: bool
) -> ssl.SSLContext:
    """What ``aiokafka.helpers.create_ssl_context`` builds (the broker's chain always verified, from
    ``cafile`` or the system store; the client certificate loaded), plus the hostname switch."""
    context = _verifying_context(cafile, "kafka_ssl_cafile")
    _load_client_certificate(context, certfile, keyfile, "kafka_ssl_certfile", "kafka_ssl_keyfile")
    context.check_hostname = check_hostname
    return context


# --- PostgreSQL ---------------------------------------------------------------------------------


def database_connect_options(settings: Settings) -> dict[str, Any]:
    """asyncpg keyword arguments: ``{"ssl": ...}`` from :func:`database_ssl`, or ``{}`` when no
    ``SMARTFLOW_DATABASE_SSL*`` variable is set (the DSN's own ``sslmode`` then applies, as before)."""
    tls = settings.database_tls
    return {} if tls is None else {"ssl": database_ssl(tls)}


def database_ssl(tls: DatabaseTls) -> ssl.SSLContext | bool | str:
    """asyncpg's ``ssl=`` for ``tls``: False for disable, asyncpg's own mode name for allow/prefer
    (no certificates are used there; load_settings rejects them), else an :class:`ssl.SSLContext`."""
    mode = tls.sslmode or "prefer"
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode
    if mode == "require":
        if tls.rootcert is not None:  # libpq: require with a root certificate verifies the chain
            context = _verifying_context(tls.rootcert, "database_sslrootcert")
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False  # before CERT_NONE: ssl refuses the other order
            context.verify_mode = ssl.CERT_NONE
        context.check_hostname = False
    elif mode in ("verify-ca", "verify-full"):
        context = _verifying_context(tls.rootcert, "database_sslrootcert")
        context.check_hostname = mode == "verify-full"
    else:  # load_settings accepts only libpq's modes
        raise ConfigError([f"{env_name('database_sslmode')}: unknown sslmode {mode!r}"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_client_certificate(context, tls.cert, tls.key, "database_sslcert", "database_sslkey")
    if ssl.HAS_ALPN:
        context.set_alpn_protocols(_POSTGRES_ALPN)
    return context


# --- files --------------------------------------------------------------------------------------


def _verifying_context(cafile: str | None, field_name: str) -> ssl.SSLContext:
    """A client context that verifies the server's chain against ``cafile`` alone or, without one,
    the system store (``create_default_context`` loads that only when no CA file is given, so a
    certificate from some public CA never passes where a private CA was named)."""
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError, ValueError) as error:
        raise ConfigError(
            [f"{env_name(field_name)}: cannot load CA certificates from {cafile!r}: {error}"]
        ) from error


def _load_client_certificate(
    context: ssl.SSLContext, certfile: str | None, keyfile: str | None, cert_field: str, key_field: str
) -> None:
    if certfile is None:
        return
    try:
        # An empty password: an encrypted key fails here instead of OpenSSL prompting on a terminal.
        context.load_cert_chain(certfile, keyfile=keyfile, password=lambda: b"")
    except (OSError, ssl.SSLError, ValueError) as error:
        raise ConfigError(
            [
                f"{env_name(cert_field)}: cannot load the client certificate {certfile!r} with the key "
                f"{keyfile!r} ({env_name(key_field)}): {error}"
            ]
        ) from error
