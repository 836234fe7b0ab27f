"""The one Event builder shared by the reconciler and the autoscaler."""

from __future__ import annotations

from smartflow_operator.events import build_event
from smartflow_operator.names import API_VERSION, KIND, OPERATOR_NAME

BODY = {"metadata": {"name": "shop", "namespace": "prod", "uid": "u-1"}}


class TestBuildEvent:
    def test_points_at_the_runtime(self) -> None:
        event = build_event(BODY, "Normal", "ScaledUp", "relay 1 -> 3", "2026-11-29T12:00:00Z")
        assert event["involvedObject"] == {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": "shop",
            "namespace": "prod",
            "uid": "u-1",
        }
        assert event["metadata"] == {"generateName": "shop.", "namespace": "prod"}
        assert (event["type"], event["reason"], event["message"]) == ("Normal", "ScaledUp", "relay 1 -> 3")
        assert event["source"] == {"component": OPERATOR_NAME}
        assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-29T12:00:00Z"

    def test_long_messages_are_cut_to_the_api_limit(self) -> None:
        event = build_event(BODY, "Warning", "SecretNotFound", "x" * 5000, "2026-11-29T12:00:00Z")
        assert len(event["message"]) == 1024
