"""Log lines: one JSON object each with role and pid, or plain text for humans."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from smartflow_runtime.logging_setup import configure_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_role_pid_extras_and_exceptions() -> None:
    out = io.StringIO()
    configure_logging(role="relay", level="INFO", fmt="json", stream=out)
    log = logging.getLogger("smartflow_runtime.test")
    log.info("published %d rows", 5, extra={"shards": [1, 2]})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("batch failed")
    log.debug("hidden at INFO")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["msg"] == "published 5 rows"
    assert (first["role"], first["pid"], first["level"], first["shards"]) == (
        "relay",
        os.getpid(),
        "INFO",
        [1, 2],
    )
    assert first["logger"] == "smartflow_runtime.test"
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_text_format_is_for_humans() -> None:
    out = io.StringIO()
    configure_logging(role="api", level="DEBUG", fmt="text", stream=out)
    logging.getLogger("x").debug("hello")
    line = out.getvalue().strip()
    assert line.endswith(f"DEBUG [api pid={os.getpid()}] x: hello")
    with pytest.raises(ValueError):
        json.loads(line)
