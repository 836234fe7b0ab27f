"""A tiny stand-in for the runtime image's process, run by the local runner in its integration tests.

It keeps the runtime's process contract (docs/contracts.md): admin HTTP on ``SMARTFLOW_ADMIN_PORT``
(``/healthz``, ``/readyz``), business HTTP on ``SMARTFLOW_HTTP_PORT`` when set, bound to
``SMARTFLOW_BIND_HOST``, exit 0 on SIGTERM. For the tests it also serves ``GET /env`` (its argv, pid
and environment) and prints what it does, so a test can read the replica's log. Knobs:
``FAKE_IGNORE_SIGTERM=1`` (only SIGKILL stops it), ``FAKE_READY_AFTER=<seconds>``.

Run as ``python -m tests.integration.runner.fake_workload ARGS...``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

STARTED = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ready_after = float(os.environ.get("FAKE_READY_AFTER", "0"))
        if self.path == "/readyz":
            ok = time.monotonic() - STARTED >= ready_after
            self._reply(200 if ok else 503, {"ready": ok})
        elif self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif self.path == "/env":
            self._reply(200, {"argv": sys.argv[1:], "pid": os.getpid(), "env": dict(os.environ)})
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet: probes come every pass
        pass


def main() -> int:
    host = os.environ.get("SMARTFLOW_BIND_HOST", "127.0.0.1")
    ports = [int(os.environ.get("SMARTFLOW_ADMIN_PORT", "9090"))]
    if os.environ.get("SMARTFLOW_HTTP_PORT"):
        ports.append(int(os.environ["SMARTFLOW_HTTP_PORT"]))
    servers = [ThreadingHTTPServer((host, port), Handler) for port in ports]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        ignored = os.environ.get("FAKE_IGNORE_SIGTERM") == "1"
        print(f"fake_workload: SIGTERM received{' (ignored)' if ignored else ''}", flush=True)
        if not ignored:
            stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    print(f"fake_workload: pid {os.getpid()} args {sys.argv[1:]} serving on {host}:{ports}", flush=True)
    while not stop.wait(0.5):
        pass
    for server in servers:
        server.shutdown()
    print("fake_workload: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
