"""The node's addresses: fixed, private and only ever inside the node's network namespace.

The host reaches the namespace through one veth pair (``HOST_LINK`` <-> ``eth0``); the host gets
routes for the pod and Service ranges via ``NODE_IP`` so tests on the host can talk to pods and
Services. The namespace has no default route: a pod cannot send a packet anywhere else.
PostgreSQL, Kafka and kube-apiserver stay on the host's loopback; pods reach them at ``NODE_IP``
through forwarders that listen inside the namespace (``forward.py``).
"""

from __future__ import annotations

NODE_NAME = "smartflow-node"
HOST_LINK = "sfnode0"
HOST_SIDE_IP = "10.88.0.1"
NODE_IP = "10.88.0.2"
LINK_PREFIX = 30
LINK_CIDR = "10.88.0.0/30"
POD_CIDR = "10.244.0.0/24"
BRIDGE = "cni0"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
CGROUP_ROOT = "smartflow-node"
