"""The benchmark harness runs end to end in smoke mode and writes sane result files and a report.

This checks the harness, not speed: tiny sizes, a few seconds per section, figures only checked
for being present and positive. The servers are this session's (passed to the harness as a
stack file), and results go to a temporary directory, so real results in bench/results stay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from bench.run import USES_KAFKA

from smartflow_devstack import kafka, kube, postgres
from smartflow_devstack.versions import REPO_ROOT

pytestmark = pytest.mark.timeout(600)


def run_bench(tmp_path: Path, servers: dict[str, Any], *sections: str) -> dict[str, dict[str, Any]]:
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(servers))
    command = [sys.executable, "-m", "bench.run", "--smoke", "--stack-file", str(stack_file)]
    command += ["--results-dir", str(tmp_path / "results"), "--report-dir", str(tmp_path)]
    for section in sections:
        command += ["--only", section]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, f"bench failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    warmed = {"warmup"} if USES_KAFKA & set(sections) else set()  # the broker is warmed first
    assert set(results) == set(sections) | warmed
    for result in results.values():
        assert result["mode"] == "smoke"
        assert result["machine"]["cores"] >= 1 and result["machine"]["memory_mib"] > 0
        assert result["versions"]["python"] and result["versions"]["postgres"]
        assert result["settings"] and result["figures"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "Mode: smoke" in report
    return results


def test_runtime_sections(
    tmp_path: Path, postgres_server: postgres.PostgresInfo, kafka_server: kafka.KafkaInfo
) -> None:
    servers = {"postgres": asdict(postgres_server), "kafka": asdict(kafka_server)}
    results = run_bench(tmp_path, servers, "relay", "consumer", "latency", "profile")

    warmup = results["warmup"]["figures"]  # run before the first section that uses Kafka
    assert warmup["broker_cpu_ms_per_1k_messages_by_burst"] and warmup["seconds"] > 0

    relay = results["relay"]["figures"]
    assert relay["raw_producer_median_events_per_second"] > 0
    for run in relay["relay_runs"]:
        assert run["events_per_second"] > 0 and run["ratio_to_raw"] > 0
    assert 900 <= relay["envelope_mean_bytes"] <= 1100  # the 1 KB events
    assert relay["raw_batch_producer_median_events_per_second"] > 0
    for run in relay["relay_runs"] + relay["relay_variant_runs"]:
        assert run["ratio_to_raw_batch"] > 0
    assert [r["variant"] for r in relay["relay_variant_runs"]] == ["lanes=1"]
    assert relay["relay_variant_runs"][0]["events_per_second"] > 0

    consumer = results["consumer"]["figures"]
    assert consumer["raw_median_events_per_second"] > 0
    for run in consumer["real_runs"]:
        assert run["events_per_second"] > 0 and run["ratio_to_raw"] > 0
        assert run["business_rows_written"] == results["consumer"]["settings"]["events_per_run"]

    runs = results["latency"]["figures"]["runs"]
    assert {r["mode"] for r in runs} == {"notify", "polling"}
    for run in runs:
        assert run["accepted"] > 0 and run["not_consumed_after_60s"] == 0
        assert 0 < run["e2e_ms"]["p50"] <= run["e2e_ms"]["p99"]
        per_event = run["cpu_ms_per_event"]
        # Every component of the pipeline did work for the events (the relay only when notified).
        for component in ("api_process", "consumer_process", "postgres_backends", "kafka_broker"):
            assert per_event[component] > 0, (run["mode"], component)
        assert per_event["pipeline_total"] >= per_event["api_process"] + per_event["consumer_process"]
        assert run["consumed_per_second"] > 0
    saturation = results["latency"]["figures"]["saturation"]
    assert saturation["offered_events_per_second"] == 100
    assert 0 < saturation["sustained_events_per_second"] <= saturation["accepted_events_per_second"]

    profile = results["profile"]["figures"]
    for role in ("relay", "consumer"):
        assert profile[role]["total_seconds"] > 0 and profile[role]["top_own_time"]
    api = profile["api"]
    assert api["requests_profiled"] > 0 and api["errors"] == 0
    layers = {x["layer"]: x for x in api["by_layer"]}
    # A request's time is seen in the HTTP server, the database driver and our own code.
    for layer in ("aiohttp (HTTP server, yarl, multidict)", "asyncpg (PostgreSQL protocol, pool)",
                  "smartflow_runtime (our code)"):  # fmt: skip
        assert layers[layer]["us_per_request"] > 0, layer

    for name in ("relay", "consumer"):
        assert all(t["measured"] is not None for t in results[name]["targets"])
    assert (tmp_path / "plots" / "relay_throughput.png").stat().st_size > 0


def test_operator_sections(
    tmp_path: Path,
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    kube_server: kube.KubeInfo,
) -> None:
    servers = {
        "postgres": asdict(postgres_server),
        "kafka": asdict(kafka_server),
        "kube": asdict(kube_server),
    }
    results = run_bench(tmp_path, servers, "scaling", "operator", "pods_ready")

    scaling = results["scaling"]["figures"]
    assert scaling["relay_scale_up_first_s"]["count"] == 1 and scaling["relay_scale_up_first_s"]["max"] > 0
    assert scaling["consumer_scale_down_s"]["count"] == 1

    operator = results["operator"]["figures"]
    assert operator["apply_to_deployments_ms"]["p50"] > 0
    fleet = operator["many_runtimes"]
    assert fleet["converged"] == fleet["runtimes"] and fleet["converge_seconds"] > 0
    assert fleet["peak_rss_mib"] > 0
    # Where the convergence time went: the control plane and the operator worked, the operator wrote.
    assert fleet["converge_cpu_cores"]["kube_apiserver"] > 0 and fleet["converge_cpu_cores"]["operator"] > 0
    assert 0 < fleet["converge_cpu_cores"]["machine_busy"] <= (os.cpu_count() or 1) * 1.05
    assert fleet["converge_operator_requests_by_method"].get("PATCH", 0) > 0
    assert sum(fleet["converge_apiserver_requests_by_verb"].values()) > 0
    assert fleet["apply_at_size_ms"]["count"] == 2 and fleet["apply_at_size_ms"]["p50"] > 0
    assert fleet["idle_window_seconds"] > 0 and fleet["idle_apiserver_requests_per_second"] > 0
    assert fleet["idle_operator_writes"] == 0  # the fleet's idle window: a quiet operator writes nothing
    assert fleet["settled"] == 3 and fleet["rolled_out_runtimes_written_in_window"] == 0
    assert operator["noop_resync"]["requests_by_method"].get("GET", 0) > 0
    assert isinstance(operator["noop_resync"]["writes"], int)
    assert {t["name"] for t in results["operator"]["targets"]} >= {
        "3 runtimes converge",
        "CR apply -> Deployments p50 with 3 runtimes",
        "rolled-out runtimes written in a resync period, 3 runtimes",
    }

    # Without a node in the stack file the section says why it measured nothing.
    pods_ready = results["pods_ready"]["figures"]
    assert pods_ready["measured"] is False and "node" in pods_ready["why_not"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "Not measured: the stack has no node" in report and "**Idle, 3 runtimes**" in report
