"""The local runner: a DEVELOPMENT AND TEST TOOL, not shipped behaviour.

The local control plane (:mod:`smartflow_devstack.kube`) has no kubelet and no deployment
controller, so Deployments never get pods. The runner closes that loop on one machine: it watches
the operator's Deployments (label ``app.kubernetes.io/managed-by=smartflow-operator``) and keeps
``spec.replicas`` local processes running for each, started the way the container would start
(the image mapped to a local command, the container's args, its env with Secret/ConfigMap
references resolved), each on its own loopback ports; it probes readiness, restarts crashes with
backoff, rolls template changes, stops scaled-down replicas with SIGTERM then SIGKILL, and writes
the Deployments' ``status`` so the operator sees real ready counts. Nothing in the runtime or the
operator knows about it.

Layout (pure first, I/O after):

- :mod:`.spec` - Deployment dict -> the process for one replica (pure);
- :mod:`.rollout` - which replicas to start and stop (pure);
- :mod:`.status` - the Deployment status to write (pure);
- :mod:`.replica` - one process's lifecycle; :mod:`.kubeapi` - the apiserver calls;
- :mod:`.loop` - the reconcile loop; :mod:`.endpoints` - ``<state>/endpoints.json``;
- :mod:`.cli` - ``smartflow-devstack runner``; :mod:`.launch` - start/stop it in the background.
"""

from .endpoints import ready_urls
from .errors import ContainerConfigError, KubeApiError, RunnerError
from .launch import RunnerProcess, start_runner
from .loop import LocalRunner, RunnerSettings
from .spec import ImageMap

__all__ = [
    "ContainerConfigError",
    "ImageMap",
    "KubeApiError",
    "LocalRunner",
    "RunnerError",
    "RunnerProcess",
    "RunnerSettings",
    "ready_urls",
    "start_runner",
]
