"""SSL contexts and client options for the lag probes, from ``connection_security`` values.

Called by :mod:`.probes` when it connects. The CA comes from memory (``cadata``), never a file.
A client certificate and key need a path (``SSLContext.load_cert_chain`` takes no data): they are
written to a private temporary directory (0700, files 0600), loaded, and deleted at once; the
context keeps them in memory from then on.

``database_ssl_context`` follows libpq's sslmode semantics: ``require`` encrypts without verifying
(unless a CA is given, then the CA is verified, as libpq does with a root certificate);
``verify-ca`` verifies the chain; ``verify-full`` also the host name.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

from ..connection_security import DatabaseSecurity, KafkaSecurity


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    with tempfile.TemporaryDirectory(prefix="smartflow-tls-") as directory:
        paths = []
        for name, text in (("tls.crt", cert_pem), ("tls.key", key_pem)):
            path = Path(directory) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(text)
            paths.append(str(path))
        context.load_cert_chain(paths[0], paths[1])


def _verifying_context(ca_pem: str | None) -> ssl.SSLContext:
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem)
    return ssl.create_default_context()


def kafka_ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    context = _verifying_context(security.ca_pem)
    context.check_hostname = security.check_hostname
    if security.cert_pem and security.key_pem:
        _load_client_pair(context, security.cert_pem, security.key_pem)
    return context


def kafka_client_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients (admin, consumer, a single connection)."""
    if security is None:
        return {}
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = kafka_ssl_context(security)
    if security.sasl_mechanism is not None:
        options.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password,
        )
    return options


def database_ssl_context(security: DatabaseSecurity) -> ssl.SSLContext:
    if security.mode == "require" and not security.ca_pem:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = _verifying_context(security.ca_pem)
        context.check_hostname = security.mode == "verify-full"
    if security.cert_pem and security.key_pem:
        _load_client_pair(context, security.cert_pem, security.key_pem)
    return context
