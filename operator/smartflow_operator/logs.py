"""Logging setup of ``smartflow-operator run``: one JSON object per line, with the namespace and
name of the runtime a line is about (kopf's per-object loggers carry it as ``k8s_ref``)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["namespace"] = ref.get("namespace")
            entry["name"] = ref.get("name")
            entry["kind"] = ref.get("kind")
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_ROUTINE_SUCCESS = re.compile(r"^(Handler|Timer) '.*' succeeded\.$")


class RoutineSuccessFilter(logging.Filter):
    """kopf reports every successful handler and timer run at INFO: once per Deployment event and per
    resync. Those lines go to DEBUG, so INFO shows what changed and WARNING what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _ROUTINE_SUCCESS.match(str(record.msg)):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


_TEMPORARY_FAILURE = re.compile(r"^Handler '.*' failed temporarily")


class TemporaryFailureFilter(logging.Filter):
    """kopf logs every retry of a handler that raised ``TemporaryError`` at ERROR, next to the
    reconciler's own WARNING (said once per new problem, with its condition reason). kopf's line
    goes to WARNING and is said once per object and message: a retry of the same problem is
    silent, a new problem (or the same one after a success) is said again."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        ref = getattr(record, "k8s_ref", None)
        key = f"{ref.get('namespace')}/{ref.get('name')}" if isinstance(ref, dict) else record.name
        message = str(record.msg)
        if _TEMPORARY_FAILURE.match(message):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if self._last.get(key) == message:
                return False
            self._last[key] = message
        elif _ROUTINE_SUCCESS.match(message):
            self._last.pop(key, None)
        return True


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(TemporaryFailureFilter())  # before RoutineSuccessFilter: it sees successes first
    handler.addFilter(RoutineSuccessFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The kubernetes client's urllib3 pool is chatty at DEBUG and says nothing useful at INFO.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
