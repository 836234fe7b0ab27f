"""``/healthz`` and ``/readyz`` of ``smartflow-operator run`` on ``--health-port``.

Served by the operator itself (not kopf's liveness endpoint), because kopf only runs while this
replica leads: a follower is alive (``/healthz`` 200) and not ready (``/readyz`` 503, "not
leading"), so a Service or a rollout never counts it as the working replica, and the kubelet never
restarts it for waiting. Set up and torn down by ``runner.serve``.
"""

from __future__ import annotations

from aiohttp import web


class HealthServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.ready = False
        self.reason = "starting"
        self._runner: web.AppRunner | None = None

    def set_ready(self, ready: bool, reason: str) -> None:
        self.ready, self.reason = ready, reason

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 503, text=f"{self.reason}\n")
