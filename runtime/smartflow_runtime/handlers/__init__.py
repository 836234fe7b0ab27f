"""Event handlers: the registry and the one wiring function every consuming role shares."""

from .core import HandlerDependencies, build_registry, register_core_handlers
from .registry import BulkEventHandler, EventHandler, HandlerRegistry

__all__ = [
    "BulkEventHandler",
    "EventHandler",
    "HandlerDependencies",
    "HandlerRegistry",
    "build_registry",
    "register_core_handlers",
]
