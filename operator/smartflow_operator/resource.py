"""`SmartflowRuntime`: the typed value the reconciler and the builders work with, parsed from the
raw object the apiserver returns. Pure: no cluster access.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .names import API_VERSION, KIND
from .spec import SmartflowRuntimeSpec
from .status import SmartflowRuntimeStatus


@dataclass(frozen=True)
class SmartflowRuntime:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: SmartflowRuntimeSpec
    status: SmartflowRuntimeStatus = field(default_factory=SmartflowRuntimeStatus)

    @classmethod
    def from_object(cls, body: Mapping[str, Any]) -> SmartflowRuntime:
        """Parse a stored object. Raises ``pydantic.ValidationError`` when the spec does not parse."""
        metadata = body.get("metadata") or {}
        return cls(
            name=str(metadata["name"]),
            namespace=str(metadata["namespace"]),
            uid=str(metadata.get("uid", "")),
            generation=int(metadata.get("generation") or 0),
            spec=SmartflowRuntimeSpec.model_validate(body.get("spec") or {}),
            status=SmartflowRuntimeStatus.model_validate(body.get("status") or {}),
        )

    def owner_reference(self) -> dict[str, Any]:
        """Makes a child garbage-collected with this runtime, and marks the operator as its controller."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def event_reference(self) -> dict[str, Any]:
        """The ``involvedObject`` of Events about this runtime."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
        }
