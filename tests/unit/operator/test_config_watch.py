"""Which referenced Secrets/ConfigMaps changed between two looks (pure)."""

from __future__ import annotations

from smartflow_operator.config_watch import Versions, changed_refs


def test_the_first_look_reports_nothing() -> None:
    assert changed_refs(None, {("Secret", "db"): "7"}) == []


def test_a_new_version_a_deletion_and_a_creation_are_changes() -> None:
    previous: Versions = {("Secret", "db"): "7", ("ConfigMap", "env"): "3", ("Secret", "later"): None}
    current: Versions = {("Secret", "db"): "8", ("ConfigMap", "env"): None, ("Secret", "later"): "1"}
    assert changed_refs(previous, current) == [("ConfigMap", "env"), ("Secret", "db"), ("Secret", "later")]


def test_unchanged_versions_and_references_new_to_the_spec_are_not() -> None:
    previous: Versions = {("Secret", "db"): "7"}
    assert changed_refs(previous, {("Secret", "db"): "7", ("ConfigMap", "new"): "1"}) == []
