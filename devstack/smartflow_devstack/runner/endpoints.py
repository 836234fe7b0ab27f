"""``<state>/endpoints.json``: where the local runner's replicas listen, for the demo and the tests.

Written by :mod:`.loop` after every pass that changed something (atomically: write, then rename)::

    {
      "runner_pid": 4242,
      "running": true,                       # false once the runner has stopped every replica
      "updated_at": "2026-05-09T07:35:25Z",
      "deployments": {
        "<namespace>/<deployment>": {
          "namespace": "...", "name": "...", "generation": 3, "template_hash": "1a2b3c4d5e",
          "desired": 2,
          "replicas": [
            {"name": "<deployment>-<hash>-0", "pid": 4250, "admin_port": 40001, "http_port": 40002,
             "ready": true, "current": true, "state": "Running", "reason": null, "message": "",
             "restarts": 0, "log": ".../logs/<namespace>_<deployment>-0.log"}
          ]
        }
      }
    }

``http_port`` is ``null`` when the container declares no ``http`` port; ``pid`` is ``null`` while a
replica waits to (re)start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "endpoints.json"

Json = dict[str, Any]


def endpoints_file(state: Path) -> Path:
    return state / FILE_NAME


def write(state: Path, document: Mapping[str, Any]) -> None:
    path = endpoints_file(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True))
    temporary.replace(path)


def load(state: Path) -> Json | None:
    """The last document the runner wrote, or ``None`` if there is none (yet)."""
    try:
        document: Json = json.loads(endpoints_file(state).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return document


def replicas(document: Mapping[str, Any] | None, namespace: str, name: str) -> list[Json]:
    """The replicas of one Deployment in a loaded document (empty when unknown)."""
    if document is None:
        return []
    entry = (document.get("deployments") or {}).get(f"{namespace}/{name}") or {}
    return list(entry.get("replicas") or [])


def ready_urls(
    document: Mapping[str, Any] | None, namespace: str, name: str, *, port: str = "http"
) -> list[str]:
    """``http://127.0.0.1:<port>`` of each ready replica; ``port`` is ``"http"`` or ``"admin"``."""
    urls = []
    for replica in replicas(document, namespace, name):
        number = replica.get(f"{port}_port")
        if replica.get("ready") and number:
            urls.append(f"http://127.0.0.1:{number}")
    return urls
