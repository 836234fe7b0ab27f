"""What a role reads from Secrets/ConfigMaps, and the hash that rolls its pods."""

from __future__ import annotations

import pytest

from smartflow_operator.config_refs import (
    SECRET_KEY_NOT_FOUND,
    SECRET_NOT_FOUND,
    all_referenced_objects,
    config_hash,
    referenced_config,
)
from smartflow_operator.errors import ConfigurationError
from smartflow_operator.names import Role

from .conftest import make_runtime, with_spec

SPEC = with_spec(
    envFrom=[{"configMapRef": {"name": "shared"}}],
    roles={
        "relay": {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "relay-only", "key": "t"}}}]}
    },
)


class TestReferencedConfig:
    def test_refs_per_role(self) -> None:
        spec = make_runtime(SPEC).spec
        relay = {(ref.kind, ref.name, ref.key) for ref in referenced_config(spec, Role.RELAY)}
        api = {(ref.kind, ref.name, ref.key) for ref in referenced_config(spec, Role.API)}
        assert relay == {
            ("Secret", "db", "dsn"),
            ("ConfigMap", "shared", None),
            ("Secret", "relay-only", "t"),
        }
        assert api == {("Secret", "db", "dsn"), ("ConfigMap", "shared", None)}
        assert all_referenced_objects(spec) == [
            ("ConfigMap", "shared"),
            ("Secret", "db"),
            ("Secret", "relay-only"),
        ]


class TestConfigHash:
    FETCHED = {
        ("Secret", "db"): {"dsn": "ZHNu", "other": "eA=="},
        ("ConfigMap", "shared"): {"A": "1"},
        ("Secret", "relay-only"): {"t": "dA=="},
    }

    def _hash(self, role: Role, fetched: dict[tuple[str, str], object]) -> str:
        spec = make_runtime(SPEC).spec
        return config_hash(referenced_config(spec, role), fetched, namespace="team")  # type: ignore[arg-type]

    def test_hash_is_stable_and_tracks_consumed_values_only(self) -> None:
        base = self._hash(Role.API, dict(self.FETCHED))
        assert base == self._hash(Role.API, dict(self.FETCHED))
        unrelated_key = {**self.FETCHED, ("Secret", "db"): {"dsn": "ZHNu", "other": "changed"}}
        assert self._hash(Role.API, unrelated_key) == base
        new_dsn = {**self.FETCHED, ("Secret", "db"): {"dsn": "bmV3", "other": "eA=="}}
        assert self._hash(Role.API, new_dsn) != base
        relay_secret = {**self.FETCHED, ("Secret", "relay-only"): {"t": "bmV3"}}
        assert self._hash(Role.API, relay_secret) == base
        assert self._hash(Role.RELAY, relay_secret) != self._hash(Role.RELAY, dict(self.FETCHED))

    def test_missing_secret_names_the_field(self) -> None:
        with pytest.raises(ConfigurationError) as raised:
            self._hash(Role.API, {**self.FETCHED, ("Secret", "db"): None})
        assert raised.value.reason == SECRET_NOT_FOUND
        assert "team/db" in raised.value.message and "spec.database.dsnSecretRef" in raised.value.message

    def test_missing_key_names_the_key(self) -> None:
        with pytest.raises(ConfigurationError) as raised:
            self._hash(Role.API, {**self.FETCHED, ("Secret", "db"): {"other": "eA=="}})
        assert raised.value.reason == SECRET_KEY_NOT_FOUND
        assert "'dsn'" in raised.value.message

    def test_optional_reference_may_be_missing(self) -> None:
        spec = make_runtime(with_spec(envFrom=[{"secretRef": {"name": "maybe", "optional": True}}])).spec
        fetched = {("Secret", "db"): {"dsn": "ZHNu"}, ("Secret", "maybe"): None}
        assert config_hash(referenced_config(spec, Role.API), fetched, namespace="team")  # type: ignore[arg-type]
