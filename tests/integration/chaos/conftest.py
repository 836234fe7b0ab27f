"""Fixtures of the fault drills: a PostgreSQL and a Kafka broker of their own, which the tests
stop and start again (the session's shared servers are never touched), and a fleet per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smartflow_devstack.errors import StackError

from .harness import Fleet, Servers, fleet_env, fresh_database, migrate


@pytest.fixture(scope="session")
def chaos_servers(test_state: Path) -> Iterator[Servers]:
    servers = Servers(test_state / "chaos")
    try:
        servers.start()
    except StackError as error:
        servers.stop()
        pytest.fail(f"the drill's PostgreSQL and Kafka could not be started: {error}", pytrace=False)
    yield servers
    servers.stop()


@pytest.fixture
async def servers(chaos_servers: Servers) -> AsyncIterator[Servers]:
    """The drill's servers, running at the start of every test (a failed test may leave one stopped)."""
    await chaos_servers.ensure_up()
    yield chaos_servers
    await chaos_servers.ensure_up()


@pytest.fixture
async def fleet(servers: Servers, tmp_path: Path, unique_name: str) -> AsyncIterator[Fleet]:
    """An empty fleet on a fresh migrated database and topic; every process is stopped at teardown."""
    dsn = await fresh_database(servers)
    topic, group = f"drill-{unique_name}", f"drill-{unique_name}"
    await migrate(dsn, servers.bootstrap, topic)
    fleet = Fleet(logs=tmp_path / "logs", env=fleet_env(dsn, servers.bootstrap, topic, group), dsn=dsn)
    yield fleet
    await asyncio.shield(fleet.stop_all())
