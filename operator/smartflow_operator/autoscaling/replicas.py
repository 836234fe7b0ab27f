"""The replica count the operator writes into a role's Deployment.

``replicas_for`` is the only source of the ``replicas`` field the reconciler applies. This first
version returns the role's ``spec.roles.<role>.replicas``, and ``None`` when autoscaling is
handed to an external HPA/KEDA (``autoscaling.mode: External``): ``None`` means "leave the field
out of the applied object", so server-side apply never fights the other owner. The autoscaling
loop takes this module over and answers from its decisions (kept in ``status.roles.<role>``).
"""

from __future__ import annotations

from ..names import Role
from ..spec import ScalableWorkloadSpec, SmartflowRuntimeSpec
from ..status import SmartflowRuntimeStatus
from .spec import ScalingMode


def replicas_for(spec: SmartflowRuntimeSpec, role: Role, status: SmartflowRuntimeStatus) -> int | None:
    """Replicas for ``role``'s Deployment, or None to leave ``replicas`` to someone else."""
    workload = spec.roles.for_role(role)
    if (
        isinstance(workload, ScalableWorkloadSpec)
        and workload.autoscaling.enabled
        and workload.autoscaling.mode is ScalingMode.EXTERNAL
    ):
        return None
    return workload.replicas
