"""The status the operator reports, computed from what it found: the role Deployments as they
are live, and the problem (if any) that kept it from applying the spec. Pure.

Ready means every expected role's Deployment has at least as many ready pods as it asks for.
When a problem blocks reconciling, the workloads already running are left alone and Ready keeps
describing them, while Degraded names the problem and Progressing says the rollout is blocked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import conditions as c
from .names import CONTAINER_NAME, LABEL_COMPONENT, Role
from .status import ConditionStatus, RoleStatus, SmartflowRuntimeStatus

if TYPE_CHECKING:
    from .schema_gate import SchemaGate

TRUE, FALSE = ConditionStatus.TRUE, ConditionStatus.FALSE


@dataclass(frozen=True)
class Problem:
    """Why the spec could not be applied: a condition reason and a precise message."""

    reason: str
    message: str


def deployments_by_role(deployments: Sequence[Mapping[str, Any]]) -> dict[Role, Mapping[str, Any]]:
    by_role: dict[Role, Mapping[str, Any]] = {}
    for deployment in deployments:
        component = (deployment.get("metadata", {}).get("labels") or {}).get(LABEL_COMPONENT)
        if component in {role.value for role in Role}:
            by_role[Role(component)] = deployment
    return by_role


def role_status(deployment: Mapping[str, Any]) -> RoleStatus:
    spec = deployment.get("spec", {})
    observed = deployment.get("status") or {}
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    image = next((c_["image"] for c_ in containers if c_.get("name") == CONTAINER_NAME), "")
    desired = spec.get("replicas", 1)
    ready = int(observed.get("readyReplicas") or 0)
    return RoleStatus(
        deployment=deployment["metadata"]["name"],
        image=image,
        desired_replicas=desired,
        ready_replicas=ready,
        updated_replicas=int(observed.get("updatedReplicas") or 0),
        replicas=f"{ready}/{desired}",
    )


def reported_fingerprint(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a Deployment the runtime's status reports (its role status, rolled out or not) plus
    its generation (a spec edit, someone's or ours): equal fingerprints, equal status. The
    Deployment controller's many updates that only touch conditions leave it alone."""
    status = role_status(deployment)
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    return (tuple(sorted(status.dump().items())), _rolled_out(deployment, status), generation)


def _rolled_out(deployment: Mapping[str, Any], status: RoleStatus) -> bool:
    observed = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    desired = status.desired_replicas or 0
    return (
        int(observed.get("observedGeneration") or 0) >= generation
        and status.updated_replicas >= desired
        and status.ready_replicas >= desired
    )


def _describe(roles: Mapping[Role, RoleStatus], missing: Sequence[Role]) -> str:
    parts = [
        f"{role.value} {status.replicas} ready"
        for role, status in roles.items()
        if status.ready_replicas < (status.desired_replicas or 0)
    ]
    parts += [f"{role.value} has no Deployment" for role in missing]
    return "; ".join(parts)


def compute_status(
    *,
    generation: int,
    mode: str | None,
    expected_roles: Sequence[Role],
    deployments: Sequence[Mapping[str, Any]],
    previous: SmartflowRuntimeStatus,
    problem: Problem | None,
    now: str,
    schema: SchemaGate | None = None,
) -> dict[str, Any]:
    """The operator's part of ``status`` (camelCase), ready to compare with the live status.

    With a ``problem``, readiness is judged on the Deployments that exist (nothing was changed).
    ``schema`` is this pass's migration gate (None when the pass stopped before it: the previous
    ``SchemaReady`` and ``status.schema`` are kept); Ready requires SchemaReady.
    """
    live = deployments_by_role(deployments)
    expected = list(live) if problem is not None else list(expected_roles)
    roles = {role: role_status(live[role]) for role in expected if role in live}
    missing = [role for role in expected if role not in live]

    # Only the reconciler's own condition types; the autoscaler's are merged in by status_patch.
    conditions = [cond for cond in previous.conditions if cond.type in c.CONDITION_TYPES]

    def set_(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = c.set_condition(
            conditions,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )

    if schema is not None:
        set_(c.SCHEMA_READY, TRUE if schema.ready else FALSE, schema.reason, schema.message)
    schema_ready = c.find(conditions, c.SCHEMA_READY)

    not_ready = _describe(roles, missing)
    if not expected:
        set_(c.READY, FALSE, c.RECONCILE_BLOCKED, problem.message if problem else "no workloads")
    elif schema_ready is not None and schema_ready.status is not TRUE:
        set_(c.READY, FALSE, c.SCHEMA_NOT_READY, schema_ready.message)
    elif not_ready:
        set_(c.READY, FALSE, c.ROLES_NOT_READY, not_ready)
    else:
        set_(c.READY, TRUE, c.ALL_ROLES_READY, f"{len(roles)} role Deployment(s) have their pods ready")

    if problem is not None:
        set_(c.PROGRESSING, FALSE, c.RECONCILE_BLOCKED, problem.message)
        set_(c.DEGRADED, TRUE, problem.reason, problem.message)
    elif schema is not None and not schema.open:
        set_(c.PROGRESSING, TRUE, c.MIGRATING, schema.message)
        set_(c.DEGRADED, FALSE, c.AS_EXPECTED, "the spec is applied once the schema is migrated")
    else:
        rolling = [role.value for role in roles if not _rolled_out(live[role], roles[role])]
        if rolling or missing:
            set_(
                c.PROGRESSING,
                TRUE,
                c.ROLLING_OUT,
                "rolling out: " + ", ".join(rolling + [r.value for r in missing]),
            )
        else:
            set_(c.PROGRESSING, FALSE, c.ROLLOUT_COMPLETE, "every role runs the current spec")
        set_(c.DEGRADED, FALSE, c.AS_EXPECTED, "the spec is applied")

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": [condition.dump() for condition in conditions],
        "roles": {role.spec_key: roles[role].dump() for role in roles},
    }
    if mode is not None:
        status["mode"] = mode
    if schema is not None:
        status["schema"] = dict(schema.status)
    return status


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch turning the operator's fields of ``current`` into ``desired`` ({} if equal).

    Fields others own (``roles.<role>.lag``/``lagReading``/``autoscaling``, ``kopf``) are never in
    the patch, so a merge patch leaves them alone; a role that is no longer reported is removed
    (``None``). The ``conditions`` list is sent whole (a merge patch cannot do less) with the
    autoscaler's condition types kept as in ``current``: send it with ``current``'s resourceVersion
    (``status_writer.write_status``) so a concurrent autoscaler write is not undone.
    """
    patch: dict[str, Any] = {}
    for key in ("observedGeneration", "mode"):
        if key in desired and current.get(key) != desired[key]:
            patch[key] = desired[key]
    if "conditions" in desired:
        # The list is replaced as a whole: keep the other writers' condition types as they are.
        conditions = c.merge_by_type(
            current.get("conditions"), desired["conditions"], owned_types=c.CONDITION_TYPES
        )
        if current.get("conditions") != conditions:
            patch["conditions"] = conditions
    if "schema" in desired and current.get("schema") != desired["schema"]:
        # A merge patch merges objects: clear the keys the desired value no longer has.
        gone = dict.fromkeys((current.get("schema") or {}).keys() - desired["schema"].keys())
        patch["schema"] = {**gone, **desired["schema"]}
    current_roles: Mapping[str, Any] = current.get("roles") or {}
    desired_roles: Mapping[str, Any] = desired.get("roles") or {}
    roles_patch: dict[str, Any] = {}
    for key, fields in desired_roles.items():
        live = current_roles.get(key) or {}
        changed = {name: value for name, value in fields.items() if live.get(name) != value}
        if changed:
            roles_patch[key] = changed
    for key in current_roles:
        if key not in desired_roles:
            roles_patch[key] = None
    if roles_patch:
        patch["roles"] = roles_patch
    return patch
