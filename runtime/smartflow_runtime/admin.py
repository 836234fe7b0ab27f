"""The admin HTTP server every role runs: ``/healthz``, ``/readyz`` and ``/metrics``.

Started by the role runner (:mod:`smartflow_runtime.roles`) before the role's services, so the
kubelet can probe liveness during start-up, and stopped last, so Prometheus can scrape a drain.

- ``/healthz``: the process and its event loop answer. Nothing else is checked, so a database
  or broker outage makes a pod unready, never restarted in a loop.
- ``/readyz``: the runner's readiness (database reachable, schema current, every service alive
  with its dependencies up, not draining); 200 when all pass, 503 otherwise, with the failing
  checks and, per unavailable dependency, the reason and since when.
- ``/metrics``: the Prometheus text format of the registry passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .readiness import Unready

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    """Named checks (all must be true to be ready) and why the failing ones fail."""

    checks: Mapping[str, bool]
    unready: tuple[Unready, ...] = field(default=())

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    def body(self, now: datetime) -> dict[str, object]:
        body: dict[str, object] = {"ready": self.ready, "checks": dict(self.checks)}
        if self.unready:
            body["unready"] = [u.as_dict(now) for u in self.unready]
        return body


ReadinessCheck = Callable[[], Awaitable[Readiness]]


def build_admin_app(*, registry: CollectorRegistry, readiness: ReadinessCheck) -> web.Application:
    """The admin routes; ``readiness`` returns the named checks, all of which must be true to be ready."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        try:
            state = await readiness()
        except Exception as error:  # a failing check means "not ready", never a 500 the probe misreads
            log.warning("readiness check failed", exc_info=True)
            checks = {"readiness_check": False}
            return web.json_response({"ready": False, "checks": checks, "error": str(error)}, status=503)
        return web.json_response(state.body(datetime.now(UTC)), status=200 if state.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    """An aiohttp application served on one host/port with the :class:`~smartflow_runtime.service.Service`
    lifecycle; used for the admin server and the api role's business server alike."""

    def __init__(
        self,
        *,
        app: web.Application,
        host: str,
        port: int,
        name: str,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("%s listening", self._name, extra={"host": self._host, "port": self._port})

    async def stop(self) -> None:
        """Stop accepting connections, let in-flight requests finish (up to the shutdown timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("%s stopped", self._name)

    def is_alive(self) -> bool:
        return self._runner is not None

    def unready(self) -> tuple[Unready, ...]:
        return ()

    def is_healthy(self) -> bool:
        return self.is_alive()
