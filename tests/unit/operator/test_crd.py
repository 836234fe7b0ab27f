"""The generated CRD: committed file is fresh, structural, documented, validated by CEL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from smartflow_operator.crd import CRD_FILENAME, build_crd, render_crd

CRD_FILE = Path(__file__).resolve().parents[3] / "crds" / CRD_FILENAME


def _version() -> dict[str, Any]:
    version: dict[str, Any] = build_crd()["spec"]["versions"][0]
    return version


def _properties(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from _properties(child, f"{path}.{name}")
    if "items" in node:
        yield from _properties(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _properties(node["additionalProperties"], f"{path}{{}}")


class TestCrdFile:
    def test_committed_crd_is_generated_from_the_models(self) -> None:
        assert CRD_FILE.read_text() == render_crd(), "crds/ is stale: run `make crds`"

    def test_identity(self) -> None:
        crd = yaml.safe_load(render_crd())
        assert crd["metadata"]["name"] == "smartflowruntimes.smartflow.io"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["shortNames"] == ["sfr"]
        assert crd["spec"]["names"]["kind"] == "SmartflowRuntime"
        assert _version()["name"] == "v1alpha1"
        assert _version()["subresources"] == {"status": {}}


class TestCrdSchema:
    def test_every_spec_and_status_field_has_a_description(self) -> None:
        root = _version()["schema"]["openAPIV3Schema"]
        fields = list(_properties(root["properties"]["spec"], "spec"))
        fields += list(_properties(root["properties"]["status"], "status"))
        assert len(fields) > 100
        assert [path for path, node in fields if not node.get("description")] == []

    def test_schema_is_structural(self) -> None:
        text = yaml.safe_dump(_version()["schema"])
        for forbidden in ("$ref", "anyOf: - type: 'null'", "title:", "null"):
            assert forbidden not in text
        for path, node in _properties(_version()["schema"]["openAPIV3Schema"], ""):
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
            if node.get("type") == "array":
                assert "items" in node, path
            assert not ("properties" in node and "additionalProperties" in node), path

    def test_cel_rules_guard_autoscaling_bounds_and_image(self) -> None:
        spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
        relay_scaling = spec["properties"]["roles"]["properties"]["relay"]["properties"]["autoscaling"]
        rules = [rule["rule"] for rule in relay_scaling["x-kubernetes-validations"]]
        assert any("self.minReplicas <= self.maxReplicas" in rule for rule in rules)
        # One rule, on the autoscaling object (where the fields are): once per scalable role.
        assert render_crd().count("self.minReplicas <= self.maxReplicas") == 2
        image_rules = spec["properties"]["image"]["x-kubernetes-validations"]
        assert image_rules[0]["rule"].startswith("self.matches(r'^")

    def test_loose_kubernetes_types_are_preserved(self) -> None:
        api = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["roles"][
            "properties"
        ]["api"]
        assert api["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
        cpu = api["properties"]["resources"]["properties"]["requests"]["additionalProperties"]
        assert cpu["x-kubernetes-int-or-string"] is True

    def test_status_admits_kopf_and_autoscaler_fields(self) -> None:
        status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
        relay = status["properties"]["roles"]["properties"]["relay"]
        assert relay["properties"]["autoscaling"]["x-kubernetes-preserve-unknown-fields"] is True
        assert relay["properties"]["lag"]["type"] == "integer"

    def test_printer_columns(self) -> None:
        columns = {column["name"]: column["jsonPath"] for column in _version()["additionalPrinterColumns"]}
        assert columns["Mode"] == ".spec.mode"
        assert columns["Relay"] == ".status.roles.relay.replicas"
        assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
        assert columns["Consumer-Lag"] == ".status.roles.consumer.lag"
        assert "Age" in columns

    def test_the_relay_lag_column_prints_the_reading_that_can_say_capped(self) -> None:
        column = next(c for c in _version()["additionalPrinterColumns"] if c["name"] == "Relay-Lag")
        assert (column["jsonPath"], column["type"]) == (".status.roles.relay.lagReading", "string")
        relay = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["roles"]
        reading = relay["properties"]["relay"]["properties"]["lagReading"]
        assert reading["type"] == "string" and "N+" in reading["description"]
