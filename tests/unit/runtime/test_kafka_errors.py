"""Kafka failures are classified by aiokafka's own retriable flag, never by message text."""

from __future__ import annotations

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

from smartflow_runtime.errors import KafkaRejectedError, KafkaUnavailableError, is_retriable
from smartflow_runtime.outbox.kafka import wrap_kafka_error


def test_transient_kafka_errors_become_retriable() -> None:
    for error in (KafkaTimeoutError(), KafkaConnectionError("down"), RuntimeError("unknown")):
        wrapped = wrap_kafka_error(error)
        assert isinstance(wrapped, KafkaUnavailableError) and is_retriable(wrapped)


def test_permanent_kafka_errors_become_permanent() -> None:
    wrapped = wrap_kafka_error(MessageSizeTooLargeError("too big"))
    assert isinstance(wrapped, KafkaRejectedError) and not is_retriable(wrapped)
    assert "MessageSizeTooLargeError" in str(wrapped)
