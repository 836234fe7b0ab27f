"""Live objects hold what we would apply, modulo apiserver defaults and canonical quantities."""

from __future__ import annotations

from decimal import Decimal

from smartflow_operator.drift import contains, parse_quantity


class TestContains:
    def test_defaults_added_by_the_apiserver_are_not_drift(self) -> None:
        desired = {"ports": [{"name": "admin", "containerPort": 9090}]}
        live = {
            "ports": [{"name": "admin", "containerPort": 9090, "protocol": "TCP"}],
            "dnsPolicy": "ClusterFirst",
        }
        assert contains(live, desired)

    def test_changed_value_and_missing_list_item_are_drift(self) -> None:
        assert not contains({"image": "a:2"}, {"image": "a:1"})
        assert not contains({"env": [{"name": "A"}]}, {"env": [{"name": "A"}, {"name": "B"}]})

    def test_quantities_compare_by_amount(self) -> None:
        assert contains({"cpu": "500m", "memory": "1Gi"}, {"cpu": "0.5", "memory": 1073741824})
        assert not contains({"cpu": "500m"}, {"cpu": "1"})

    def test_empty_desired_values_equal_absent(self) -> None:
        assert contains({"a": 1}, {"a": 1, "b": {}, "c": []})


class TestParseQuantity:
    def test_suffixes(self) -> None:
        assert parse_quantity("100m") == Decimal("0.1")
        assert parse_quantity("2Ki") == Decimal(2048)
        assert parse_quantity(3) == Decimal(3)
        assert parse_quantity("IfNotPresent") is None
        assert parse_quantity(True) is None
