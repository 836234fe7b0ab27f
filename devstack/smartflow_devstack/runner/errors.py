"""Errors of the local runner (a dev/test tool, see :mod:`smartflow_devstack.runner`)."""

from __future__ import annotations

from ..errors import StackError


class RunnerError(StackError):
    """The local runner failed; the base of its own errors."""


class ContainerConfigError(RunnerError):
    """A replica cannot start from its Deployment as written: a missing Secret/ConfigMap (key),
    an unsupported field reference or an unmapped probe port. Like the kubelet's
    ``CreateContainerConfigError`` it is reported on the Deployment and retried with backoff."""

    def __init__(self, message: str, *, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


class KubeApiError(RunnerError):
    """A call to the kube-apiserver failed (transport error or a non-2xx answer)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retriable(self) -> bool:
        """Transport errors, throttling and server errors pass; a 4xx is the request's fault."""
        return self.status is None or self.status == 429 or self.status >= 500
