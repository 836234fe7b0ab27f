"""The operator's error hierarchy.

Whether an error is worth retrying is a property of its class (``retriable``), never of its text.
Errors from the Kubernetes client are wrapped at the I/O boundary (``kube.py``) with ``raise ...
from e``, so nothing above it depends on the client library's exception types.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""

    retriable = True


class SchemaError(OperatorError):
    """The spec models cannot be expressed as a structural CRD schema (a bug in the models)."""

    retriable = False


class KubeError(OperatorError):
    """A call to the Kubernetes API failed."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """The object does not exist (HTTP 404)."""


class Conflict(KubeError):
    """The write conflicts with the object's current state (HTTP 409)."""


class NotLeading(KubeError):
    """A write refused before it was sent: this operator replica does not hold the leader Lease
    (or its last renewal is older than the renew deadline). Retried once it leads again."""


class Invalid(KubeError):
    """The apiserver rejected the object (HTTP 422 or 400): retrying the same object will not help."""

    retriable = False


class ConfigurationError(OperatorError):
    """The runtime cannot be reconciled as written, for a reason only the operator sees (a missing
    Secret or key, a spec that does not parse). Carries the condition ``reason`` to report.

    Retriable: the user fixes the Secret, the next attempt succeeds; existing workloads are left as
    they are meanwhile.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
