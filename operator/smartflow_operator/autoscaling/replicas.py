"""The replica count the reconciler applies to a role's Deployment (pure).

``replicas_for`` is the only source of the ``replicas`` field the reconciler applies:

- a role without autoscaling (or with it disabled): ``spec.roles.<role>.replicas``;
- autoscaling ``paused`` or mode ``External``: ``None``, meaning "leave the field out of the
  applied object", so server-side apply never fights the other owner (the reconciler hands
  the field over first, see :mod:`.handover`);
- otherwise the autoscaler's count: the decided one in the pass that applies a decision
  (``Controller.scale``), else the count the Deployment has now, never above the spec's current
  maxReplicas (lowering it applies at once; the lower bound is the autoscaler's,
  which may sit below minReplicas when the partition or shard count is smaller). Before the
  Deployment exists: ``replicas`` within [min, max]. The decision never travels through the
  status: ``status.roles.<role>.autoscaling`` only reports it.
"""

from __future__ import annotations

from ..names import Role
from ..spec import ScalableWorkloadSpec, SmartflowRuntimeSpec
from .spec import ScalingMode


def replicas_for(spec: SmartflowRuntimeSpec, role: Role, live_replicas: int | None) -> int | None:
    """Replicas for ``role``'s Deployment, or None to leave ``replicas`` to someone else.

    ``live_replicas``: the decided count, or the Deployment's ``spec.replicas`` as it is now (None:
    no Deployment yet)."""
    workload = spec.roles.for_role(role)
    if not isinstance(workload, ScalableWorkloadSpec) or not workload.autoscaling.enabled:
        return workload.replicas
    scaling = workload.autoscaling
    if scaling.mode is ScalingMode.EXTERNAL or scaling.paused:
        return None
    if live_replicas is not None:
        return min(live_replicas, scaling.max_replicas)
    return min(max(workload.replicas, scaling.min_replicas), scaling.max_replicas)
