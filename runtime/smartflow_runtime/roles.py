"""Role composition: which services a role runs, and the thin runner that runs and drains them.

``smartflow-runtime run --role R`` (see :mod:`smartflow_runtime.cli`) ends up in
:func:`run_role`. The table :data:`ROLE_COMPONENTS` is the whole answer to "what does role R
build?" and is pure data; the api role has only the HTTP app, so it never creates a Kafka
consumer and never joins the consumer group.

The runner's life, in order:

1. create the PostgreSQL pool (lazily: it connects on first use), start the admin server
   (``/healthz`` answers from here on) and the readiness monitor (database ping and schema
   version, every second);
2. wait, unready, until the database answers with a current schema (``/readyz`` says why not);
3. build the role's components from the table and start them in table order;
4. report ready; watch the services: an outage only makes ``/readyz`` fail with the dependency
   and since when; a loop task that *ended* is a dead loop (log, drain, exit 1);
5. on SIGTERM/SIGINT: report not ready first (an api keeps serving for a short deregistration
   delay so load balancers stop sending to it), then stop the services in reverse table order
   within ``SMARTFLOW_SHUTDOWN_GRACE_SECONDS``, close the pool, stop the admin server, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry

from .admin import HttpServer, Readiness, build_admin_app
from .config import Role, Settings
from .db.schema import REQUIRED_SCHEMA_VERSION, schema_version
from .errors import DatabaseAuthenticationError, DatabaseError, DatabaseTlsError, SchemaNotReadyError
from .metrics import RuntimeMetrics
from .outbox.store import UNAVAILABLE_ERRORS, wrap_driver_error
from .readiness import DATABASE, SCHEMA, DependencyStatus, merge
from .security import ClientSecurity, load_client_security
from .service import NamedService, Service

log = logging.getLogger(__name__)


class Component(enum.StrEnum):
    """A service a role can run."""

    CONSUMER = "consumer"
    MEMORY_WORKER = "memory-worker"
    RELAY = "relay"
    HTTP_API = "http-api"


# Start order, left to right; stop order is the reverse. Consumers of work start first so they
# are ready when work arrives, and on drain the producers of work stop first: the api stops
# taking requests, the relay stops publishing, then the consumer finishes its in-flight
# events, commits offsets and leaves the group.
ROLE_COMPONENTS: Mapping[Role, tuple[Component, ...]] = {
    Role.API: (Component.HTTP_API,),
    Role.RELAY: (Component.RELAY,),
    Role.CONSUMER: (Component.CONSUMER,),
    Role.MEMORY_WORKER: (Component.MEMORY_WORKER,),
    Role.WORKER: (Component.CONSUMER, Component.MEMORY_WORKER, Component.RELAY),
    Role.ALL: (Component.CONSUMER, Component.MEMORY_WORKER, Component.RELAY, Component.HTTP_API),
}

KAFKA_COMPONENTS = frozenset({Component.CONSUMER, Component.RELAY})


def deregistration_delay(grace_seconds: float) -> float:
    """How long the api keeps serving after turning unready: a tenth of the grace period, at most 3 s."""
    return min(3.0, grace_seconds / 10)


def components_for(role: Role) -> tuple[Component, ...]:
    return ROLE_COMPONENTS[role]


def uses_kafka(role: Role) -> bool:
    return any(c in KAFKA_COMPONENTS for c in ROLE_COMPONENTS[role])


def joins_consumer_group(role: Role) -> bool:
    return Component.CONSUMER in ROLE_COMPONENTS[role]


def stop_order(role: Role) -> tuple[Component, ...]:
    return tuple(reversed(ROLE_COMPONENTS[role]))


@dataclass(frozen=True)
class Dependencies:
    """What components are built from; one per process. ``security``: the driver arguments every
    Kafka client gets (the pool already carries the database's)."""

    settings: Settings
    pool: asyncpg.Pool
    registry: CollectorRegistry
    metrics: RuntimeMetrics
    security: ClientSecurity = field(default_factory=ClientSecurity)


ComponentFactory = Callable[[Component, Dependencies], Service]


class RunOutcome(enum.IntEnum):
    """The process exit code of ``run``: documented in the CLI's help."""

    DRAINED = 0
    FAILED = 1


class RoleRunner:
    """Runs one role's services until a signal or a dead loop, then drains them.

    Outages never end the process: the pool opens lazily (no connection at start), a monitor
    pings PostgreSQL and reads the schema version every ``probe_interval`` seconds, and the
    services reconnect by themselves; ``/readyz`` names what is down and since when. The
    services are started once the database answered with a schema at least
    :data:`~smartflow_runtime.db.schema.REQUIRED_SCHEMA_VERSION` (a start while PostgreSQL is
    down, or before ``migrate``, waits unready). The process exits non-zero only when a loop
    task ended (a service's, or the monitor's) or a service failed to start.
    """

    def __init__(
        self,
        *,
        role: Role,
        settings: Settings,
        registry: CollectorRegistry,
        factory: ComponentFactory,
        security: ClientSecurity | None = None,
        watch_interval: float = 0.5,
        probe_interval: float = 1.0,
        db_ping_timeout: float = 2.0,
    ) -> None:
        self._role = role
        self._settings = settings
        # The CLI loads it before the event loop starts (a bad certificate file is exit 3, not a crash).
        self._security = security or load_client_security(settings, kafka=uses_kafka(role))
        self._registry = registry
        self._metrics = RuntimeMetrics(registry)
        self._factory = factory
        self._watch_interval = watch_interval
        self._probe_interval = probe_interval
        self._db_ping_timeout = db_ping_timeout
        self._services: list[NamedService] = []
        self._pool: asyncpg.Pool | None = None
        self._ping_conn: asyncpg.Connection | None = None
        self._status = DependencyStatus()
        self._schema_ok = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._ready = False
        self._stop_requested = asyncio.Event()

    # -- readiness -------------------------------------------------------------------------------

    async def readiness(self) -> Readiness:
        """Named checks behind ``/readyz`` and the reasons of the failing ones; ``running`` is false
        until the services run and from the moment a drain begins. No I/O: the monitor and the
        services keep their state current, so a probe answers at once even during an outage."""
        checks: dict[str, bool] = {"running": self._ready and not self._stop_requested.is_set()}
        own = self._status.unready()
        checks[DATABASE] = not self._status.is_down(DATABASE)
        checks[SCHEMA] = self._schema_ok.is_set() and not self._status.is_down(SCHEMA)
        reports = list(own)
        for named in self._services:
            unready = tuple(named.service.unready())
            checks[named.name] = named.service.is_alive() and not unready
            reports.extend(unready)
        return Readiness(checks=checks, unready=merge(reports))

    async def _probe_database(self) -> None:
        """One monitor round: reach PostgreSQL on a connection of its own (a pool saturated by real
        work must not read as down) and compare the schema version with the one this code needs."""
        try:
            async with asyncio.timeout(self._db_ping_timeout):
                if self._ping_conn is None or self._ping_conn.is_closed():
                    self._ping_conn = await asyncpg.connect(
                        self._settings.require_database_dsn(), **self._security.database
                    )
                found = await schema_version(self._ping_conn)
        except (DatabaseError, *UNAVAILABLE_ERRORS, asyncpg.PostgresError) as error:
            await self._close_ping_conn()
            # By type: a refused login or certificate says so ("authentication failed", "certificate
            # verify failed"); other failures keep the driver's class name and message.
            wrapped = wrap_driver_error("database", error)
            refused = isinstance(wrapped, DatabaseAuthenticationError | DatabaseTlsError)
            self._status.down(DATABASE, str(wrapped) if refused else f"{type(error).__name__}: {error}")
            return
        if self._status.is_down(DATABASE):
            log.info("database reachable again")
        self._status.up(DATABASE)
        if found < REQUIRED_SCHEMA_VERSION:
            self._status.down(SCHEMA, str(SchemaNotReadyError(found, REQUIRED_SCHEMA_VERSION)))
            return
        if self._status.is_down(SCHEMA) or not self._schema_ok.is_set():
            log.info("database schema ready", extra={"schema_version": found})
        self._status.up(SCHEMA)
        self._schema_ok.set()

    async def _monitor_loop(self) -> None:
        while not self._stop_requested.is_set():
            was = self._status.unready()
            await self._probe_database()
            now = self._status.unready()
            if now and {u.dependency for u in now} != {u.dependency for u in was}:
                log.warning("not ready: %s", "; ".join(f"{u.dependency}: {u.reason}" for u in now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._stop_requested.wait()

    async def _close_ping_conn(self) -> None:
        conn, self._ping_conn = self._ping_conn, None
        if conn is not None:
            conn.terminate()

    def request_stop(self, reason: str) -> None:
        if not self._stop_requested.is_set():
            log.info("drain requested", extra={"reason": reason})
            self._ready = False
            self._stop_requested.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        started_at = time.monotonic()
        admin: HttpServer | None = None
        outcome = RunOutcome.DRAINED
        try:
            self._pool = await self._open_pool()
            admin = HttpServer(
                app=build_admin_app(registry=self._registry, readiness=self.readiness),
                host=self._settings.bind_host,
                port=self._settings.admin_port,
                name="admin server",
                shutdown_timeout=1.0,
            )
            await admin.start()
            self._monitor = asyncio.create_task(self._monitor_loop(), name="readiness monitor")
            waited = await self._wait_for_schema()
            if waited is _Startup.MONITOR_DIED:
                outcome = RunOutcome.FAILED
            elif waited is _Startup.STOPPED:
                pass  # a stop request while waiting: nothing runs yet, exit 0
            elif not await self._start_services():
                outcome = RunOutcome.FAILED
            elif not self._stop_requested.is_set():
                self._ready = True
                log.info(
                    "role running",
                    extra={
                        "role_components": [n.name for n in self._services],
                        "startup_seconds": round(time.monotonic() - started_at, 3),
                    },
                )
                if not await self._watch():
                    outcome = RunOutcome.FAILED
        except OSError as error:  # the admin port is taken: nothing else can fix that
            log.error("role could not start: %s", error, exc_info=True)
            outcome = RunOutcome.FAILED
        finally:
            self._ready = False
            self._stop_requested.set()
            drained = await self._drain()
            if self._monitor is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._monitor
            await self._close_ping_conn()
            if self._pool is not None:
                try:
                    async with asyncio.timeout(5):
                        await self._pool.close()
                except TimeoutError:
                    log.warning("database pool did not close in time; terminating its connections")
                    self._pool.terminate()
            if admin is not None:
                await admin.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if not drained:
            outcome = RunOutcome.FAILED
        log.info("role exiting", extra={"exit_code": int(outcome)})
        return outcome

    async def _open_pool(self) -> asyncpg.Pool:
        """A lazy pool: ``min_size=0`` opens no connection here, so a start while PostgreSQL is down
        does not fail; each acquire connects (bounded by ``timeout``) and fails fast while it is."""
        dsn = self._settings.require_database_dsn()
        from .db.pool import create_pool

        return await create_pool(
            dsn,
            min_size=0,
            max_size=self._settings.db_pool_max_size,
            timeout=5,
            command_timeout=30,
            **self._security.database,
        )

    async def _wait_for_schema(self) -> _Startup:
        """Until the monitor saw a reachable database with a current schema, or a stop request.

        The watchdog covers this phase too: a monitor task that ended is a dead loop."""
        while not self._schema_ok.is_set():
            if self._stop_requested.is_set():
                return _Startup.STOPPED
            if self._monitor is not None and self._monitor.done():
                log.error("readiness monitor ended during start-up: exiting non-zero")
                return _Startup.MONITOR_DIED
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._watch_interval):
                    await self._schema_ok.wait()
        return _Startup.STOPPED if self._stop_requested.is_set() else _Startup.SCHEMA_READY

    async def _start_services(self) -> bool:
        """Build and start the role's components in order; a failure stops what was started."""
        assert self._pool is not None
        deps = Dependencies(
            settings=self._settings,
            pool=self._pool,
            registry=self._registry,
            metrics=self._metrics,
            security=self._security,
        )
        for component in components_for(self._role):
            named = NamedService(component.value, self._factory(component, deps))
            start = asyncio.ensure_future(named.service.start())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not start.done():
                # A signal during start-up: abandon this start and drain what already runs.
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await start
                self._services.append(named)
                return True
            self._services.append(named)
            if (error := start.exception()) is not None:
                log.error("%s failed to start: %s", component.value, error, exc_info=error)
                return False
        return True

    async def _watch(self) -> bool:
        """Wait for a stop request; False as soon as a loop task ended (a service's or the monitor's).

        An unready service (dependency down) is not dead: it keeps retrying and is only reported."""
        while not self._stop_requested.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._watch_interval):
                    await self._stop_requested.wait()
            dead = [n.name for n in self._services if not n.service.is_alive()]
            if self._monitor is not None and self._monitor.done() and not self._stop_requested.is_set():
                dead.append("readiness monitor")
            if dead and not self._stop_requested.is_set():
                log.error("%s ended: treating it as dead, draining and exiting non-zero", ", ".join(dead))
                self.request_stop(f"{', '.join(dead)} ended")
                return False
        return True

    async def _drain(self) -> bool:
        """Stop services in reverse start order within the grace period; False if any overran or failed."""
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds * 0.9
        clean = True
        if self._stop_requested.is_set() and any(n.name == Component.HTTP_API.value for n in self._services):
            # Keep answering requests briefly while /readyz is already false, so load balancers
            # drop this pod from their endpoints before its listener closes (no refused requests).
            delay = deregistration_delay(self._settings.shutdown_grace_seconds)
            log.info("draining: serving %.1fs more while endpoints deregister", delay)
            await asyncio.sleep(delay)
        for named in reversed(self._services):
            remaining = deadline - time.monotonic()
            stopped_at = time.monotonic()
            try:
                async with asyncio.timeout(max(remaining, 0.1)):
                    await named.service.stop()
            except TimeoutError:
                log.error("%s did not stop within the grace period", named.name)
                clean = False
            except Exception:
                log.exception("%s failed while stopping", named.name)
                clean = False
            else:
                log.info(
                    "%s stopped", named.name, extra={"stop_seconds": round(time.monotonic() - stopped_at, 3)}
                )
        self._services.clear()
        return clean


class _Startup(enum.Enum):
    SCHEMA_READY = "schema ready"
    STOPPED = "stop requested"
    MONITOR_DIED = "monitor died"


async def run_role(
    *,
    role: Role,
    settings: Settings,
    registry: CollectorRegistry,
    factory: ComponentFactory,
    security: ClientSecurity | None = None,
) -> int:
    runner = RoleRunner(role=role, settings=settings, registry=registry, factory=factory, security=security)
    return int(await runner.run())


# --- the real components ------------------------------------------------------------------------


def build_component(component: Component, deps: Dependencies) -> Service:
    """Construct one component from the data layer's services (the default :data:`ComponentFactory`).

    Every tunable comes from :class:`Settings` (``SMARTFLOW_*``, documented in docs/runtime.md).
    """
    settings = deps.settings
    if component is Component.HTTP_API:
        from .api import build_api_app

        app = build_api_app(
            pool=deps.pool,
            registry=deps.registry,
            topic=settings.kafka_topic,
            max_attempts=settings.outbox_max_attempts,
        )
        return HttpServer(
            app=app,
            host=settings.bind_host,
            port=settings.http_port,
            name="api server",
            # In-flight requests get a share of the grace period; the rest is for the workers.
            shutdown_timeout=max(1.0, settings.shutdown_grace_seconds / 3),
        )
    if component is Component.RELAY:
        from .outbox.model import BackoffPolicy
        from .outbox.relay import Relay

        return Relay(
            pool=deps.pool,
            bootstrap_servers=settings.require_bootstrap_servers(),
            metrics=deps.metrics,
            batch_size=settings.relay_batch_size,
            lease_seconds=settings.relay_lease_seconds,
            poll_interval_seconds=settings.relay_poll_interval_seconds,
            listen_notify=settings.relay_listen_notify,
            notify_linger_seconds=settings.relay_notify_linger_seconds,
            backoff=BackoffPolicy(*settings.backoff_seconds),
            producer_options=deps.security.kafka,
            lanes=settings.relay_lanes,
        )
    if component is Component.CONSUMER:
        from .handlers.core import HandlerDependencies, build_registry
        from .outbox.consumer import Consumer
        from .outbox.model import BackoffPolicy
        from .outbox.store import utcnow

        return Consumer(
            pool=deps.pool,
            bootstrap_servers=settings.require_bootstrap_servers(),
            topic=settings.kafka_topic,
            group_id=settings.kafka_consumer_group,
            registry=build_registry(HandlerDependencies(clock=utcnow)),
            metrics=deps.metrics,
            backoff=BackoffPolicy(*settings.backoff_seconds),
            max_poll_records=settings.consumer_max_poll_records,
            commit_interval_seconds=settings.consumer_commit_interval_seconds,
            consumer_options=deps.security.kafka,
        )
    if component is Component.MEMORY_WORKER:
        from .memory.worker import MemoryWorker

        return MemoryWorker(
            pool=deps.pool,
            metrics=deps.metrics,
            concurrency=settings.memory_worker_concurrency,
            lease_seconds=settings.memory_worker_lease_seconds,
        )
    raise AssertionError(f"no builder for {component}")  # every Component has a branch above
