"""The bench's readout of the operator's request counter (pure parsing)."""

from bench.kube_tools import kube_requests, kube_requests_by_resource

SAMPLES = {
    'smartflow_operator_kube_requests_total{method="GET",resource="smartflowruntimes"}': 5.0,
    'smartflow_operator_kube_requests_total{method="GET",resource="secrets"}': 2.0,
    'smartflow_operator_kube_requests_total{method="PATCH",resource="smartflowruntimes/status"}': 7.0,
    'smartflow_operator_kube_request_seconds_count{method="GET"}': 99.0,
}


def test_requests_by_resource_and_by_method_agree() -> None:
    assert kube_requests_by_resource(SAMPLES) == {
        "GET smartflowruntimes": 5.0,
        "GET secrets": 2.0,
        "PATCH smartflowruntimes/status": 7.0,
    }
    assert kube_requests(SAMPLES) == {"GET": 7.0, "PATCH": 7.0}
