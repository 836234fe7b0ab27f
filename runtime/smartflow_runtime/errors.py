"""The runtime's error hierarchy: every failure the data layer raises, with its retry policy as data.

Services (relay, consumer, memory worker) decide "retry later" versus "give up" from
:attr:`SmartflowError.retriable` on the class, never from message text. Driver errors
(asyncpg, aiokafka) are wrapped at the boundary with ``raise ... from error`` so the cause
stays visible in tracebacks while callers only catch our types.
"""

from __future__ import annotations

from typing import ClassVar


class SmartflowError(Exception):
    """Base of every error the runtime raises on purpose."""

    retriable: ClassVar[bool] = False


# --- infrastructure -------------------------------------------------------------------------


class DatabaseError(SmartflowError):
    """PostgreSQL could not be reached or a statement failed for a transient reason."""

    retriable = True


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL cannot be reached right now: refused or lost connection, starting up or shutting
    down, out of connections, a pool acquire that timed out. Readiness reports it; work waits."""


class DatabaseAuthenticationError(DatabaseUnavailableError):
    """PostgreSQL refused the login: a wrong password, or no pg_hba rule for this connection (e.g. a
    TLS-only user connecting without TLS). Still retriable: the role stays alive and unready, and
    connects once the server accepts the credentials."""


class DatabaseTlsError(DatabaseUnavailableError):
    """The TLS handshake with PostgreSQL failed (retriable, like every connection failure)."""


class DatabaseCertificateError(DatabaseTlsError):
    """PostgreSQL's certificate did not verify: an unknown CA, or (verify-full) a hostname mismatch."""


class SchemaNotReadyError(SmartflowError):
    """The database's schema is older than the version this code needs; ``migrate`` fixes it."""

    retriable = True

    def __init__(self, found: int, needed: int) -> None:
        super().__init__(f"database schema is at version {found}, this runtime needs {needed}: run migrate")
        self.found = found
        self.needed = needed


class MigrationError(SmartflowError):
    """The schema cannot be created or upgraded as asked (e.g. a different outbox shard count)."""


class KafkaUnavailableError(SmartflowError):
    """The Kafka cluster could not be reached or refused a request for a transient reason."""

    retriable = True


class KafkaAuthenticationError(KafkaUnavailableError):
    """The broker refused our SASL credentials (or mechanism). Retriable on purpose: the role stays
    alive and unready, and connects once the broker accepts them (a password rotated on either side)."""


class KafkaTlsError(KafkaUnavailableError):
    """The TLS handshake with the broker failed (e.g. it wants a client certificate we do not have)."""


class KafkaCertificateError(KafkaTlsError):
    """The broker's certificate did not verify: an unknown CA or a hostname mismatch."""


class IdempotencyKeyConflictError(SmartflowError):
    """An ``Idempotency-Key`` was reused for a different request (other route or body)."""


class KafkaRejectedError(SmartflowError):
    """Kafka refused a record for a reason a retry cannot fix (e.g. record too large)."""


class TopicPartitionsError(SmartflowError):
    """The outbox topic exists with fewer partitions than configured; it is never changed silently."""


# --- outbox -----------------------------------------------------------------------------------


class EnvelopeError(SmartflowError):
    """A Kafka message is not a valid outbox envelope; the row (if known) goes dead."""


class UnknownEventTypeError(SmartflowError):
    """No handler is registered for an event type; the row goes dead with this reason."""


# --- handlers ---------------------------------------------------------------------------------


class HandlerError(SmartflowError):
    """A handler failed in a way a later retry may fix; the row goes back to pending."""

    retriable = True


class PermanentHandlerError(HandlerError):
    """A handler failed in a way no retry can fix (bad payload, conflicting data): the row goes dead."""

    retriable = False


class PayloadError(PermanentHandlerError):
    """An event's payload does not match its type's schema."""


class TimelineConflictError(PermanentHandlerError):
    """A timeline entry with the same (conversation, seq) but different content already exists."""


class RegistryError(SmartflowError):
    """Handler wiring is wrong: a type registered twice or a dependency missing."""


class DuplicateHandlerError(RegistryError):
    """An event type was registered twice; a silent overwrite would hide a wiring bug."""


class MissingDependencyError(RegistryError):
    """The handler wiring was given an unusable dependency."""


# --- memory -----------------------------------------------------------------------------------


class ExtractionError(SmartflowError):
    """The fact extractor failed; the job is retried with backoff (or goes dead at max attempts)."""

    retriable = True


class PermanentExtractionError(ExtractionError):
    """The job's input can never be extracted (e.g. malformed payload): the job goes dead at once."""

    retriable = False


class LeaseLostError(SmartflowError):
    """A lease (shard or job) was taken over by another worker; our result must not be written."""

    retriable = True


def is_retriable(error: BaseException) -> bool:
    """Retry policy of any exception: ours say so on the class; unknown exceptions are retried.

    Unknown errors are treated as transient because a bug fixed by a deploy should not leave
    events dead; bounded ``max_attempts`` still stops a real poison message.
    """
    if isinstance(error, SmartflowError):
        return error.retriable
    return bool(getattr(error, "retriable", True))
