"""The report's findings for the saturation and convergence targets: ceilings worked out from the
measured per-event CPU and from what the machine did while the fleet converged (no servers)."""

from typing import Any

from bench.report import convergence_finding, saturation_finding


def latency(per_event: dict[str, float], *, sustained: float, capped: bool = False) -> dict[str, Any]:
    run = {
        "mode": "notify",
        "rate": 2000,
        "cpu_ms_per_event": per_event,
        "cpu_wait_cores": {"postgres_backends": 1.5},
    }
    return {
        "machine": {"cores": 2},
        "targets": [{"name": "saturation of 1 api + 1 relay + 1 consumer (notify)", "goal": 1500.0}],
        "figures": {
            "runs": [{"mode": "notify", "rate": 500, "cpu_ms_per_event": {}}, run],
            "saturation": {
                "offered_events_per_second": 2000,
                "sustained_events_per_second": sustained,
                "capped_by_offer": capped,
            },
        },
    }


def test_the_saturation_ceiling_counts_the_generator_on_the_same_cores() -> None:
    per = {"api_process": 0.5, "postgres_backends": 0.6, "relay_process": 0.2, "consumer_process": 0.2,
           "kafka_broker": 0.1, "pipeline_total": 1.6, "bench_generator": 0.4}  # fmt: skip
    (note,) = saturation_finding(latency(per, sustained=950.0))
    assert "pipeline 1.60 ms CPU (api 0.50, PostgreSQL 0.60" in note
    assert "2.00 ms per event caps the trio at about 1,000 ev/s on 2 cores" in note
    assert "1,500 ev/s asks for at most 1.33 ms per event" in note
    assert "waited for a core 1.50 cores" in note


def test_no_saturation_finding_when_the_offer_was_the_limit() -> None:
    per = {"pipeline_total": 0.5, "bench_generator": 0.1}
    assert saturation_finding(latency(per, sustained=1990.0, capped=True)) == []


def operator(busy: float, converge: float) -> dict[str, Any]:
    return {
        "machine": {"cores": 2},
        "targets": [{"name": "1,000 runtimes converge", "goal": 120.0}],
        "figures": {
            "many_runtimes": {
                "runtimes": 1000,
                "converge_seconds": converge,
                "converge_cpu_cores": {
                    "kube_apiserver": 1.0,
                    "etcd": 0.2,
                    "operator": 0.6,
                    "bench": 0.05,
                    "machine_busy": busy,
                },
                "converge_apiserver_requests_by_verb": {
                    "GET": 500,
                    "APPLY": 5000,
                    "PATCH": 3000,
                    "POST": 4000,
                },
                "converge_operator_requests_by_method": {"GET": 100, "PATCH": 6000, "POST": 1000},
            }
        },
    }


def test_the_convergence_finding_names_the_busiest_process_and_the_writes_per_runtime() -> None:
    (note,) = convergence_finding(operator(1.95, 180.0))
    assert note.startswith("Operator: 1,000 runtimes converged in 180.0 s (goal 120 s).")
    assert "1.95 of 2 cores were busy (kube-apiserver 1.00, operator 0.60, etcd 0.20, bench 0.05" in note
    assert "12,000 writes from every client (12.0 per runtime), 7,000 of them the operator's (7.0" in note
    assert note.endswith("the machine's CPU bounds the rate.")


def test_a_machine_with_cpu_to_spare_is_not_called_cpu_bound() -> None:
    (note,) = convergence_finding(operator(1.2, 100.0))
    assert "(goal" not in note
    assert note.endswith("the rate is bound by latency, not CPU.")


def test_no_convergence_finding_without_the_measurements() -> None:
    old = operator(1.9, 180.0)
    del old["figures"]["many_runtimes"]["converge_cpu_cores"]
    assert convergence_finding(old) == []
