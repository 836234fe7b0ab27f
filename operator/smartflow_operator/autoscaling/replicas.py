"""The replica count the operator writes into a role's Deployment (pure).

``replicas_for`` is the only source of the ``replicas`` field the reconciler applies:

- a role without autoscaling (or with it disabled): ``spec.roles.<role>.replicas``;
- autoscaling ``paused`` or mode ``External``: ``None``, meaning "leave the field out of the
  applied object", so server-side apply never fights the other owner (the reconciler hands
  the field over first, see :mod:`.handover`);
- otherwise the autoscaler's last decision, ``status.roles.<role>.autoscaling.desiredReplicas``
  (written by :mod:`.loop`), never above the spec's current maxReplicas, so lowering it applies
  at once (the lower bound is the decision's: it may sit below minReplicas when the partition or
  shard count is smaller); before the first decision, ``replicas`` within [min, max].
"""

from __future__ import annotations

from ..names import Role
from ..spec import ScalableWorkloadSpec, SmartflowRuntimeSpec
from ..status import SmartflowRuntimeStatus
from .spec import ScalingMode


def replicas_for(spec: SmartflowRuntimeSpec, role: Role, status: SmartflowRuntimeStatus) -> int | None:
    """Replicas for ``role``'s Deployment, or None to leave ``replicas`` to someone else."""
    workload = spec.roles.for_role(role)
    if not isinstance(workload, ScalableWorkloadSpec) or not workload.autoscaling.enabled:
        return workload.replicas
    scaling = workload.autoscaling
    if scaling.mode is ScalingMode.EXTERNAL or scaling.paused:
        return None
    role_status = status.roles.for_role(role)
    decided = (role_status.autoscaling or {}).get("desiredReplicas") if role_status else None
    if isinstance(decided, int) and not isinstance(decided, bool):
        return min(decided, scaling.max_replicas)
    return min(max(workload.replicas, scaling.min_replicas), scaling.max_replicas)
