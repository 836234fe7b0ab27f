"""Which handler runs for which event type. Pure bookkeeping; the consumer looks handlers up here.

Registering a type twice raises :class:`DuplicateHandlerError`: a silent overwrite would let one
role run a different handler than another for the same event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import DuplicateHandlerError, UnknownEventTypeError
from ..outbox.model import OutboxRow

EventHandler = Callable[[Any, OutboxRow], Awaitable[None]]
"""``await handler(conn, row)``: apply the event's business write on ``conn`` (inside the row's
transaction). Raise :class:`~smartflow_runtime.errors.HandlerError` to retry later or
:class:`~smartflow_runtime.errors.PermanentHandlerError` to send the event dead."""


class HandlerRegistry:
    """Event type -> handler, one handler per type."""

    def __init__(self) -> None:
        self._handlers: dict[str, EventHandler] = {}

    def register(self, event_type: str, handler: EventHandler) -> None:
        if not event_type:
            raise ValueError("event_type must not be empty")
        if event_type in self._handlers:
            raise DuplicateHandlerError(f"a handler for {event_type!r} is already registered")
        self._handlers[event_type] = handler

    def handler_for(self, event_type: str) -> EventHandler:
        try:
            return self._handlers[event_type]
        except KeyError:
            raise UnknownEventTypeError(f"no handler registered for event type {event_type!r}") from None

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._handlers

    @property
    def event_types(self) -> tuple[str, ...]:
        """Registered types in registration order."""
        return tuple(self._handlers)
