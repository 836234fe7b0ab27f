"""From a Deployment (a plain dict, as the apiserver returns it) to the local process that stands in
for one of its pods: the pure half of the local runner. No I/O here; the reconcile loop
(:mod:`.loop`) fetches the Secrets/ConfigMaps named by :func:`referenced_objects`, picks free ports
and calls :func:`build_process_spec` for each replica it starts.

What a pod would get, and what the local process gets instead:

- the image's ``ENTRYPOINT`` -> the local command the :class:`ImageMap` maps the image to (by
  default ``smartflow-runtime`` of this virtualenv); the container's ``args`` follow it unchanged;
- ``envFrom`` then ``env`` (later wins), with Secret/ConfigMap references resolved, ``fieldRef`` for
  the pod's name, namespace, labels, annotations and IPs, and ``$(VAR)`` expansion as the kubelet
  does; a missing required reference is a :class:`ContainerConfigError`;
- a pod IP of its own -> ports of its own on loopback: ``SMARTFLOW_ADMIN_PORT`` and (when the
  container declares an ``http`` port) ``SMARTFLOW_HTTP_PORT`` are overridden with the ports the loop
  picked, ``SMARTFLOW_BIND_HOST`` with ``127.0.0.1`` and ``HOSTNAME`` with the replica's name;
- the readiness probe (``httpGet`` or ``tcpSocket`` on a named or numbered container port) is
  re-pointed at those ports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .errors import ContainerConfigError

MANAGED_BY_SELECTOR = "app.kubernetes.io/managed-by=smartflow-operator"
CONTAINER_NAME = "runtime"
ADMIN_PORT_NAME: Final = "admin"
HTTP_PORT_NAME: Final = "http"
ADMIN_PORT_ENV = "SMARTFLOW_ADMIN_PORT"
HTTP_PORT_ENV = "SMARTFLOW_HTTP_PORT"
BIND_HOST_ENV = "SMARTFLOW_BIND_HOST"  # the image sets 0.0.0.0 (a pod IP); locally: loopback only
DEFAULT_ADMIN_PORT = 9090
DEFAULT_HTTP_PORT = 8080
ANY_IMAGE = "*"
LOCAL_IP = "127.0.0.1"
LOCAL_NODE = "localhost"

# Kubelet-like reasons for a replica that cannot run (reported on the Deployment's conditions).
REASON_CONFIG_ERROR = "CreateContainerConfigError"
REASON_IMAGE_NOT_MAPPED = "ErrImageNeverPull"

Json = dict[str, Any]
PortName = Literal["admin", "http"]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


@dataclass(frozen=True)
class ImageMap:
    """Which local command stands for which image's ``ENTRYPOINT``.

    Keys are an image exactly as written in the Deployment, an image without its tag or digest,
    or ``*`` for any image.
    """

    commands: Mapping[str, tuple[str, ...]]

    @classmethod
    def parse(cls, entries: Sequence[str], *, default: Sequence[str] | None = None) -> ImageMap:
        """``IMAGE=COMMAND`` entries (COMMAND split like a shell would); ``default`` maps ``*``."""
        commands: dict[str, tuple[str, ...]] = {}
        if default is not None:
            commands[ANY_IMAGE] = tuple(default)
        for entry in entries:
            image, sep, command = entry.partition("=")
            argv = tuple(shlex.split(command))
            if not sep or not image.strip() or not argv:
                raise ValueError(f"image map entry {entry!r} is not IMAGE=COMMAND")
            commands[image.strip()] = argv
        return cls(commands)

    def command_for(self, image: str) -> tuple[str, ...]:
        for key in (image, _image_repository(image), ANY_IMAGE):
            if key in self.commands:
                return self.commands[key]
        raise ContainerConfigError(
            f"image {image!r} is not mapped to a local command (use --image-map)",
            reason=REASON_IMAGE_NOT_MAPPED,
        )


@dataclass(frozen=True)
class Probe:
    """A readiness probe, pointed at one of the replica's own ports."""

    kind: Literal["http", "tcp"]
    port: PortName
    path: str = "/"
    initial_delay_seconds: float = 0.0
    period_seconds: float = 10.0
    timeout_seconds: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class DeploymentFacts:
    """What the reconcile loop needs from a Deployment, with the apiserver's defaults applied."""

    namespace: str
    name: str
    uid: str
    generation: int
    replicas: int
    template_hash: str
    grace_seconds: float
    min_ready_seconds: float
    progress_deadline_seconds: float
    strategy: Literal["RollingUpdate", "Recreate"]
    max_surge: int
    max_unavailable: int
    wants_http_port: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RefNames:
    """The Secrets and ConfigMaps a Deployment's container reads its environment from."""

    secrets: frozenset[str] = frozenset()
    config_maps: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Refs:
    """Resolved Secret/ConfigMap contents by name (decoded to text); a missing name = not found."""

    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessSpec:
    """One local process standing in for one pod."""

    pod_name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    admin_port: int
    http_port: int | None
    readiness: Probe | None
    grace_seconds: float

    def probe_port(self) -> int | None:
        if self.readiness is None:
            return None
        return self.admin_port if self.readiness.port == ADMIN_PORT_NAME else self.http_port


def template_hash(template: Mapping[str, Any]) -> str:
    """A short stable hash of the pod template: a change of it is a rollout."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def runtime_container(deployment: Mapping[str, Any]) -> Json:
    """The container named ``runtime``, else the first one (sidecars are not run locally)."""
    containers: list[Json] = deployment.get("spec", {}).get("template", {}).get("spec", {}).get(
        "containers"
    ) or [{}]
    for container in containers:
        if container.get("name") == CONTAINER_NAME:
            return container
    return containers[0]


def deployment_facts(deployment: Mapping[str, Any]) -> DeploymentFacts:
    metadata = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    template = spec.get("template", {})
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    container = runtime_container(deployment)
    if strategy.get("type") == "Recreate":
        kind: Literal["RollingUpdate", "Recreate"] = "Recreate"
        surge, unavailable = 0, replicas
    else:
        kind = "RollingUpdate"
        rolling = strategy.get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1  # what the deployment controller does, so a rollout can always progress
    return DeploymentFacts(
        namespace=metadata.get("namespace", "default"),
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        generation=int(metadata.get("generation", 0)),
        replicas=replicas,
        template_hash=template_hash(template),
        grace_seconds=float(template.get("spec", {}).get("terminationGracePeriodSeconds", 30)),
        min_ready_seconds=float(spec.get("minReadySeconds", 0)),
        progress_deadline_seconds=float(spec.get("progressDeadlineSeconds", 600)),
        strategy=kind,
        max_surge=surge,
        max_unavailable=unavailable,
        wants_http_port=_find_port(container, HTTP_PORT_NAME) is not None,
    )


def referenced_objects(deployment: Mapping[str, Any]) -> RefNames:
    container = runtime_container(deployment)
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            secrets.add(source["secretRef"].get("name", ""))
        if "configMapRef" in source:
            config_maps.add(source["configMapRef"].get("name", ""))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            secrets.add(value_from["secretKeyRef"].get("name", ""))
        if "configMapKeyRef" in value_from:
            config_maps.add(value_from["configMapKeyRef"].get("name", ""))
    return RefNames(secrets=frozenset(secrets), config_maps=frozenset(config_maps))


def secret_values(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's ``data`` (base64) decoded to text, with any ``stringData`` on top."""
    values: dict[str, str] = {}
    for key, encoded in (secret.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode("utf-8", errors="replace")
        except binascii.Error:
            continue
    values.update(secret.get("stringData") or {})
    return values


def config_map_values(config_map: Mapping[str, Any]) -> dict[str, str]:
    return dict(config_map.get("data") or {})


def build_process_spec(
    deployment: Mapping[str, Any],
    *,
    refs: Refs,
    image_map: ImageMap,
    pod_name: str,
    admin_port: int,
    http_port: int | None,
    base_env: Mapping[str, str] | None = None,
) -> ProcessSpec:
    """The process for one replica; raises :class:`ContainerConfigError` when it cannot start.

    ``base_env`` (PATH, HOME, ...) is what a container image would bring; the container's own
    environment overrides it, and the replica's ports, bind host and ``HOSTNAME`` override both.
    """
    facts = deployment_facts(deployment)
    container = runtime_container(deployment)
    if container.get("command"):
        raise ContainerConfigError(
            "the container overrides the image ENTRYPOINT with `command`; the local runner maps only images"
        )
    command = image_map.command_for(str(container.get("image", "")))
    readiness = _readiness_probe(container)
    if readiness is not None and readiness.port == HTTP_PORT_NAME and http_port is None:
        raise ContainerConfigError("the readiness probe targets the http port, which has no local port")
    env = resolve_env(container, refs=refs, pod=_PodFields.of(deployment, pod_name))
    env[ADMIN_PORT_ENV] = str(admin_port)
    if facts.wants_http_port and http_port is not None:
        env[HTTP_PORT_ENV] = str(http_port)
    env[BIND_HOST_ENV] = LOCAL_IP
    env["HOSTNAME"] = pod_name
    args = tuple(expand(str(arg), env) for arg in container.get("args") or [])
    return ProcessSpec(
        pod_name=pod_name,
        argv=(*command, *args),
        env={**(base_env or {}), **env},
        admin_port=admin_port,
        http_port=http_port if facts.wants_http_port else None,
        readiness=readiness,
        grace_seconds=facts.grace_seconds,
    )


@dataclass(frozen=True)
class _PodFields:
    """The fields of the would-be pod that ``fieldRef`` can read."""

    name: str
    namespace: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    service_account: str

    @classmethod
    def of(cls, deployment: Mapping[str, Any], pod_name: str) -> _PodFields:
        facts = deployment_facts(deployment)
        template = deployment.get("spec", {}).get("template", {})
        metadata = template.get("metadata") or {}
        return cls(
            name=pod_name,
            namespace=facts.namespace,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{facts.uid}/{pod_name}")),
            labels={**(metadata.get("labels") or {}), "pod-template-hash": facts.template_hash},
            annotations=dict(metadata.get("annotations") or {}),
            service_account=str(template.get("spec", {}).get("serviceAccountName") or "default"),
        )

    def read(self, path: str) -> str:
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": LOCAL_NODE,
            "spec.serviceAccountName": self.service_account,
            "status.podIP": LOCAL_IP,
            "status.podIPs": LOCAL_IP,
            "status.hostIP": LOCAL_IP,
            "status.hostIPs": LOCAL_IP,
        }
        if path in simple:
            return simple[path]
        subscript = _FIELD_SUBSCRIPT.match(path)
        if subscript is not None:
            source = self.labels if subscript.group(1) == "labels" else self.annotations
            return source.get(subscript.group(2), "")
        raise ContainerConfigError(f"fieldRef {path!r} is not supported by the local runner")


def resolve_env(container: Mapping[str, Any], *, refs: Refs, pod: _PodFields) -> dict[str, str]:
    """``envFrom`` then ``env``, in order, as the kubelet builds a container's environment."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        if "configMapRef" in source:
            values = _lookup(refs.config_maps, source["configMapRef"], "configmap", pod.namespace)
        elif "secretRef" in source:
            values = _lookup(refs.secrets, source["secretRef"], "secret", pod.namespace)
        else:
            continue
        for key, value in (values or {}).items():
            if _ENV_NAME.match(prefix + key):  # the kubelet skips keys that are not valid names
                env[prefix + key] = value
    for var in container.get("env") or []:
        name = str(var["name"])
        if "valueFrom" in var:
            resolved = _value_from(var["valueFrom"], refs=refs, pod=pod, name=name)
            if resolved is not None:
                env[name] = resolved
        else:
            env[name] = expand(str(var.get("value", "")), env)
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _value_from(value_from: Mapping[str, Any], *, refs: Refs, pod: _PodFields, name: str) -> str | None:
    if "secretKeyRef" in value_from:
        return _lookup_key(refs.secrets, value_from["secretKeyRef"], "secret", pod.namespace)
    if "configMapKeyRef" in value_from:
        return _lookup_key(refs.config_maps, value_from["configMapKeyRef"], "configmap", pod.namespace)
    if "fieldRef" in value_from:
        return pod.read(str(value_from["fieldRef"].get("fieldPath", "")))
    raise ContainerConfigError(f"env {name}: only secretKeyRef, configMapKeyRef and fieldRef are supported")


def _lookup(
    objects: Mapping[str, Mapping[str, str]], ref: Mapping[str, Any], kind: str, namespace: str
) -> Mapping[str, str] | None:
    name = str(ref.get("name", ""))
    if name in objects:
        return objects[name]
    if ref.get("optional"):
        return None
    raise ContainerConfigError(f'{kind} "{name}" not found in namespace {namespace}')


def _lookup_key(
    objects: Mapping[str, Mapping[str, str]], ref: Mapping[str, Any], kind: str, namespace: str
) -> str | None:
    values = _lookup(objects, ref, kind, namespace)
    if values is None:
        return None
    key = str(ref.get("key", ""))
    if key in values:
        return values[key]
    if ref.get("optional"):
        return None
    raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{ref.get('name', '')}")


def _find_port(container: Mapping[str, Any], name: str) -> Json | None:
    for port in container.get("ports") or []:
        if port.get("name") == name:
            return dict(port)
    return None


def _probe_port(container: Mapping[str, Any], port: object) -> PortName:
    """Which of the replica's own ports a probe's (named or numbered) container port is."""
    admin = _find_port(container, ADMIN_PORT_NAME)
    http = _find_port(container, HTTP_PORT_NAME)
    if port == ADMIN_PORT_NAME or (
        isinstance(port, int) and port == (admin or {}).get("containerPort", DEFAULT_ADMIN_PORT)
    ):
        return ADMIN_PORT_NAME
    if http is not None and (port == HTTP_PORT_NAME or port == http.get("containerPort")):
        return HTTP_PORT_NAME
    raise ContainerConfigError(f"the readiness probe's port {port!r} is neither the admin nor the http port")


def _readiness_probe(container: Mapping[str, Any]) -> Probe | None:
    probe = container.get("readinessProbe")
    if not probe:
        return None
    kind: Literal["http", "tcp"]
    if "httpGet" in probe:
        kind, target = "http", probe["httpGet"]
    elif "tcpSocket" in probe:
        kind, target = "tcp", probe["tcpSocket"]
    else:
        raise ContainerConfigError("only httpGet and tcpSocket readiness probes are supported locally")
    return Probe(
        kind=kind,
        port=_probe_port(container, target.get("port")),
        path=str(target.get("path", "/")),
        initial_delay_seconds=float(probe.get("initialDelaySeconds", 0)),
        period_seconds=float(probe.get("periodSeconds", 10)),
        timeout_seconds=float(probe.get("timeoutSeconds", 1)),
        success_threshold=int(probe.get("successThreshold", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
    )


def _int_or_percent(value: object, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(str(value))


def _image_repository(image: str) -> str:
    """``registry:5000/smartflow/runtime:1.2@sha256:...`` -> ``registry:5000/smartflow/runtime``."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name
