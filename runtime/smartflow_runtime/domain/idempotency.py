"""Idempotency keys for the api's commands: a retried request returns the first outcome, once.

The api routes (:mod:`smartflow_runtime.api.routes`) call these inside the command's own
transaction, on its connection: :func:`find_locked` first (it serialises requests with the same
key and returns what the first one answered), then the command, then :func:`remember` with the
response. The key row commits with the business rows and the outbox events or not at all, so a
client whose response was lost after the commit gets the same answer on retry and nothing is
written twice; a request that failed before its commit left no row and runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import IdempotencyKeyConflictError
from ..outbox.store import driver_errors
from . import sql

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class StoredResponse:
    """What the first request with a key answered."""

    status: int
    body: Mapping[str, Any]


def validate_key(key: str) -> str | None:
    """None when ``key`` is usable, else what is wrong with it (for a 400)."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        return f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} characters, got {len(key)}"
    if not key.isprintable() or not key.isascii():
        return "Idempotency-Key must be printable ASCII"
    return None


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Identifies "the same request": method, path and the exact body bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


async def find_locked(conn: Any, key: str, fingerprint: str) -> StoredResponse | None:
    """Lock ``key`` for this transaction and return its stored response, if a first request stored one.

    Raises :class:`IdempotencyKeyConflictError` when the key was used for a different request.
    """
    async with driver_errors("idempotency key lookup"):
        await conn.execute(sql.LOCK_IDEMPOTENCY_KEY, key)
        row = await conn.fetchrow(sql.SELECT_IDEMPOTENCY_KEY, key)
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise IdempotencyKeyConflictError(
            "Idempotency-Key was already used for a different request (method, path or body differ)"
        )
    body = row["response"]
    return StoredResponse(status=int(row["status"]), body=json.loads(body) if isinstance(body, str) else body)


async def remember(conn: Any, key: str, fingerprint: str, response: StoredResponse, *, now: datetime) -> None:
    """Store the response of the first request with ``key``, in the command's transaction."""
    async with driver_errors("idempotency key store"):
        await conn.execute(
            sql.INSERT_IDEMPOTENCY_KEY,
            key,
            fingerprint,
            response.status,
            json.dumps(dict(response.body)),
            now,
        )
