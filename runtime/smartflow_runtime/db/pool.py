"""The runtime's asyncpg pool: a release that costs no round trip for connections that kept no state.

asyncpg resets every released connection with ``SELECT pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL`` (one round trip, and a PostgreSQL statement, per borrow): at 500 api
requests/s that is a second statement for each one-statement command. The only session state
this code base leaves on a connection is LISTEN (the relay's and the memory worker's wake-up
connections); everything else is transaction-scoped (``SET LOCAL``, ``pg_advisory_xact_lock``,
cursors inside transactions), and asyncpg's own pre-release step always rolls back an open
transaction and drops listener callbacks. So a connection that ever called ``add_listener``
gets the full reset, and the others none.
"""

from __future__ import annotations

from typing import Any

import asyncpg


class TrackedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that remembers whether it ever LISTENed (see :func:`reset_if_dirty`)."""

    __slots__ = ("_listened",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listened = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._listened = True
        await super().add_listener(channel, callback)


async def reset_if_dirty(conn: Any) -> None:
    """The pool's ``reset``: the default reset query only for a connection that LISTENed."""
    if getattr(conn, "_listened", True):  # unknown connection class: be safe, reset fully
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)
        if isinstance(conn, TrackedConnection):
            conn._listened = False


async def create_pool(dsn: str, **options: Any) -> asyncpg.Pool:
    """``asyncpg.create_pool`` with :class:`TrackedConnection` and :func:`reset_if_dirty`."""
    pool = await asyncpg.create_pool(dsn, connection_class=TrackedConnection, reset=reset_if_dirty, **options)
    assert pool is not None
    return pool
