"""The store's connection helpers against a real PostgreSQL: a released pool proxy reads as
unusable instead of raising (the relay's LISTEN check that stalled every relay at a PostgreSQL
restart), and an unreachable server raises our DatabaseUnavailableError, acquire included."""

from __future__ import annotations

import asyncpg
import pytest

from smartflow_devstack.process import free_port
from smartflow_runtime.errors import DatabaseUnavailableError
from smartflow_runtime.outbox import store


async def test_a_proxy_the_pool_took_back_is_unusable_not_an_error(database_dsn: str) -> None:
    pool = await asyncpg.create_pool(database_dsn, min_size=0, max_size=2)
    try:
        conn = await pool.acquire()
        assert store.connection_usable(conn)
        await pool.release(conn)
        with pytest.raises(asyncpg.InterfaceError):
            conn.is_closed()  # what the relay used to call: asyncpg refuses any call on the proxy
        assert not store.connection_usable(conn)
    finally:
        await pool.close()


async def test_a_connection_terminated_by_the_server_is_unusable(database_dsn: str) -> None:
    pool = await asyncpg.create_pool(database_dsn, min_size=0, max_size=2)
    try:
        conn = await pool.acquire()
        pid = conn.get_server_pid()
        admin = await asyncpg.connect(database_dsn)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        # Which error depends on timing (even asyncpg's InternalClientError "cannot switch to
        # state 11"); every one of them is in the store's list of "unreachable" errors.
        with pytest.raises((asyncpg.PostgresError, *store.UNAVAILABLE_ERRORS)) as raised:
            await conn.fetchval("SELECT 1")
        assert isinstance(store.wrap_driver_error("q", raised.value), DatabaseUnavailableError)
        assert not store.connection_usable(conn)
    finally:
        pool.terminate()


async def test_an_unreachable_server_is_database_unavailable_at_acquire() -> None:
    pool = await asyncpg.create_pool(f"postgresql://x:y@127.0.0.1:{free_port()}/z", min_size=0, timeout=2)
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            async with store.connection(pool, "probe") as conn:
                await conn.fetchval("SELECT 1")
        assert raised.value.retriable and str(raised.value).startswith("probe: ")
        assert isinstance(raised.value.__cause__, OSError)
    finally:
        await pool.close()
