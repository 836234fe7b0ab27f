"""Why a lag probe failed, as types (part of the operator's error hierarchy).

Raised by :mod:`.probes` with the driver's exception chained (``raise ... from e``); the loop
reports ``reason`` in the role's condition and holds the replica count. Whether to retry is the
class's ``retriable``, never the message text.
"""

from __future__ import annotations

from ..errors import OperatorError


class ProbeError(OperatorError):
    """The lag could not be measured; the current replica count is held."""

    reason = "LagProbeFailed"


class DatabaseUnavailable(ProbeError):
    """PostgreSQL could not be reached or did not answer in time."""

    reason = "DatabaseUnavailable"


class DatabaseAuthenticationFailed(DatabaseUnavailable):
    """PostgreSQL refused the credentials (wrong password, no pg_hba rule for this connection, e.g.
    a TLS-only user reached without TLS). Retried each poll: fixed in the Secret or the server."""

    reason = "DatabaseAuthenticationFailed"


class DatabaseTLSFailed(DatabaseUnavailable):
    """The TLS handshake with PostgreSQL failed (certificate verify failed: unknown CA, host name
    mismatch; or the server does not speak TLS)."""

    reason = "DatabaseTLSFailed"


class OutboxNotMigrated(ProbeError):
    """The outbox tables do not exist yet (``smartflow-runtime migrate`` has not run)."""

    reason = "OutboxNotMigrated"


class KafkaUnavailable(ProbeError):
    """The Kafka brokers could not be reached or did not answer in time."""

    reason = "KafkaUnavailable"


class KafkaAuthenticationFailed(KafkaUnavailable):
    """The broker refused the SASL credentials or mechanism (SASL authentication failed)."""

    reason = "KafkaAuthenticationFailed"


class KafkaTLSFailed(KafkaUnavailable):
    """The TLS handshake with the broker failed (certificate verify failed: unknown CA, host name
    mismatch; or a client certificate the broker does not accept)."""

    reason = "KafkaTLSFailed"


class TopicNotFound(ProbeError):
    """The outbox topic does not exist, so the group's lag is unknown (not zero)."""

    reason = "TopicNotFound"


class ProbeConfigurationError(ProbeError):
    """The probe cannot be set up from the spec (e.g. the DSN Secret is missing): fixed by the user."""

    reason = "ProbeMisconfigured"
