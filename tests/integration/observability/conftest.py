"""A real Prometheus (built by devstack/build/build-prometheus.sh) on loopback, scraping targets
the test names, with the chart's rules; plus the autoscaling tests' runtime fixtures."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from smartflow_devstack.process import free_port, spawn, stop, wait_until
from tests.integration.autoscaling.conftest import cluster, names, outbox_dsn  # noqa: F401 (fixtures)
from tests.unit.chart import monitoring as mon


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    port: int
    labels: Mapping[str, str]
    honor_labels: bool = False


class Prometheus:
    """One Prometheus server: 1 s scrape and rule evaluation, loopback only, no Alertmanager."""

    def __init__(self, folder: Path, *, jobs: Sequence[ScrapeJob], rules: Path) -> None:
        self.port = free_port()
        self.log = folder / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "honor_labels": job.honor_labels,
                    "static_configs": [{"targets": [f"127.0.0.1:{job.port}"], "labels": dict(job.labels)}],
                }
                for job in jobs
            ],
        }
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.pid = spawn(
            [
                str(mon.binary("prometheus")),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=self.log,
        )
        wait_until(self._ready, what="prometheus", timeout=60, pid=self.pid, log=self.log)

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return list(self.api("query", query=expr)["result"])

    def value(self, expr: str) -> float | None:
        """The value of a query that returns one series, None when it returns none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def stop(self) -> None:
        stop(self.pid)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(*, jobs: Sequence[ScrapeJob], rules: Path) -> Prometheus:
        folder = tmp_path / f"prometheus-{len(started)}"
        folder.mkdir()
        server = Prometheus(folder, jobs=jobs, rules=rules)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_for(check: Any, *, what: str, timeout: float = 30.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")
