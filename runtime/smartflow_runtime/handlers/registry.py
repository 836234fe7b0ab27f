"""Which handler runs for which event type. Pure bookkeeping; the consumer looks handlers up here.

Registering a type twice raises :class:`DuplicateHandlerError`: a silent overwrite would let one
role run a different handler than another for the same event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import DuplicateHandlerError, UnknownEventTypeError
from ..outbox.model import OutboxRow

EventHandler = Callable[[Any, OutboxRow], Awaitable[None]]
"""``await handler(conn, row)``: apply the event's business write on ``conn`` (inside the row's
transaction). Raise :class:`~smartflow_runtime.errors.HandlerError` to retry later or
:class:`~smartflow_runtime.errors.PermanentHandlerError` to send the event dead."""

BulkEventHandler = Callable[[Any, Sequence[OutboxRow]], Awaitable[None]]
"""``await bulk(conn, rows)``: optional, the same effect as the type's handler run for each row
in order, in fewer round trips. The consumer uses it for consecutive events of one type; when it
raises, the consumer rolls back and runs the plain handler per event to find the failing one."""


class HandlerRegistry:
    """Event type -> handler, one handler per type."""

    def __init__(self) -> None:
        self._handlers: dict[str, EventHandler] = {}
        self._bulk: dict[str, BulkEventHandler] = {}

    def register(
        self, event_type: str, handler: EventHandler, *, bulk: BulkEventHandler | None = None
    ) -> None:
        """Register ``handler`` (and optionally its ``bulk`` form) for ``event_type``."""
        if not event_type:
            raise ValueError("event_type must not be empty")
        if event_type in self._handlers:
            raise DuplicateHandlerError(f"a handler for {event_type!r} is already registered")
        self._handlers[event_type] = handler
        if bulk is not None:
            self._bulk[event_type] = bulk

    def handler_for(self, event_type: str) -> EventHandler:
        try:
            return self._handlers[event_type]
        except KeyError:
            raise UnknownEventTypeError(f"no handler registered for event type {event_type!r}") from None

    def bulk_handler_for(self, event_type: str) -> BulkEventHandler | None:
        """The type's bulk handler, or None when it has none (or is not registered)."""
        return self._bulk.get(event_type)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._handlers

    @property
    def event_types(self) -> tuple[str, ...]:
        """Registered types in registration order."""
        return tuple(self._handlers)
