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


class OutboxNotMigrated(ProbeError):
    """The outbox tables do not exist yet (``smartflow-runtime migrate`` has not run)."""

    reason = "OutboxNotMigrated"


class KafkaUnavailable(ProbeError):
    """The Kafka brokers could not be reached or did not answer in time."""

    reason = "KafkaUnavailable"


class TopicNotFound(ProbeError):
    """The outbox topic does not exist, so the group's lag is unknown (not zero)."""

    reason = "TopicNotFound"


class ProbeConfigurationError(ProbeError):
    """The probe cannot be set up from the spec (e.g. the DSN Secret is missing): fixed by the user."""

    reason = "ProbeMisconfigured"
