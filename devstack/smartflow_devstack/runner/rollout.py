"""The local runner's replica-set decisions: how many replicas of the current template to start and
which replicas to stop, from the Deployment's facts and the replicas it has. Pure; called once per
Deployment on every pass of :mod:`.loop`, which is level-based: the same inputs give the same step.

Strategies, as the deployment controller applies them to pods:

- ``RollingUpdate`` (the default): up to ``maxSurge`` replicas above ``spec.replicas`` while a new
  template rolls out, and old replicas stop only while at least ``spec.replicas - maxUnavailable``
  stay available (the operator's Deployments get the defaults, 25%/25%: with few replicas that is
  "surge one new replica, stop an old one once the new one is ready");
- ``Recreate``: every old replica stops first; the new ones start once the old ones are gone.

On scale-down the replicas that are not ready go first, then the newest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .spec import DeploymentFacts


@dataclass(frozen=True)
class ReplicaView:
    """A replica as the decisions see it (terminating replicas are not passed in)."""

    name: str
    seq: int  # start order: a higher number is a newer replica
    current: bool  # runs the Deployment's current template
    ready: bool
    available: bool


@dataclass(frozen=True)
class RolloutStep:
    start: int = 0  # replicas of the current template to add
    stop: tuple[str, ...] = ()  # replicas to terminate


def plan_rollout(
    facts: DeploymentFacts, replicas: Sequence[ReplicaView], *, old_terminating: int = 0
) -> RolloutStep:
    """The next step towards ``facts.replicas`` replicas, all of the current template."""
    desired = max(facts.replicas, 0)
    new = [r for r in replicas if r.current]
    old = [r for r in replicas if not r.current]
    if facts.strategy == "Recreate":
        if old:
            return RolloutStep(stop=tuple(r.name for r in old))
        if old_terminating:
            return RolloutStep()
        return _scale(new, desired)
    if not old:
        return _scale(new, desired)
    start = max(0, min(desired - len(new), desired + facts.max_surge - len(new) - len(old)))
    stop = [r.name for r in _victims(new, len(new) - desired)]
    min_available = desired - facts.max_unavailable
    available = sum(1 for r in replicas if r.available and r.name not in stop)
    for replica in _victims(old, len(old)):
        if not replica.available:
            stop.append(replica.name)  # holds no availability: always safe to stop
        elif available - 1 >= min_available:
            stop.append(replica.name)
            available -= 1
    return RolloutStep(start=start, stop=tuple(stop))


def _scale(replicas: Sequence[ReplicaView], desired: int) -> RolloutStep:
    if len(replicas) < desired:
        return RolloutStep(start=desired - len(replicas))
    return RolloutStep(stop=tuple(r.name for r in _victims(replicas, len(replicas) - desired)))


def _victims(replicas: Sequence[ReplicaView], count: int) -> list[ReplicaView]:
    """The ``count`` replicas to stop first: not available, then not ready, then the newest."""
    if count <= 0:
        return []
    ranked = sorted(replicas, key=lambda r: (r.available, r.ready, -r.seq))
    return ranked[:count]
