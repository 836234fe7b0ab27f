"""Process-wide logging: one JSON object per line (for log collectors) or plain text for humans.

Called once by the CLI before anything logs. Every record carries the role and the pid, so the
lines of the six roles can be told apart after they are merged by the cluster's log pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# Attributes every LogRecord has; anything else was passed via ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, *, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "role": self._role,
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    *, role: str, level: str = "INFO", fmt: str = "json", stream: TextIO | None = None
) -> None:
    """Replace the root handlers with one writing to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "text":
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [{role} pid={os.getpid()}] %(name)s: %(message)s")
        )
    else:
        handler.setFormatter(JsonFormatter(role=role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # The Kafka and HTTP clients are chatty at INFO; their warnings still come through.
    for noisy in ("aiokafka", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
