"""Pure builders of the node's configuration files (containerd, CNI, kubelet, kube-proxy).

Each takes the node's directories and returns file content; ``start.py`` writes and uses them.
The settings that matter on this kind of machine (cgroup v1, no CAP_SYS_RESOURCE, no registry) are
explained where they are set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import network

PAUSE_IMAGE = "localhost/smartflow/pause:1"


@dataclass(frozen=True)
class NodeDirs:
    """Every directory the node writes to, all under the stack's state dir."""

    home: Path

    @property
    def containerd_root(self) -> Path:
        return self.home / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.home / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.home / "containerd" / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.home / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.home / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.home / "kubelet"

    @property
    def volume_plugins(self) -> Path:
        return self.home / "volume-plugins"

    @property
    def pod_logs(self) -> Path:
        return self.home / "pod-logs"

    @property
    def shadow(self) -> Path:
        """Files bind-mounted over host-wide /proc/sys knobs kubelet insists on writing."""
        return self.home / "shadow"

    @property
    def var(self) -> Path:
        """Its log/ and cni/ are mounted over /var/log and /var/lib/cni inside the node's mount namespace."""
        return self.home / "var"

    @property
    def run(self) -> Path:
        """Mounted over /run inside the node's mount namespace (shim sockets, runc state, xtables lock)."""
        return self.home / "run"

    @property
    def tmp(self) -> Path:
        """TMPDIR of the node's daemons."""
        return self.home / "tmp"


def containerd_config(dirs: NodeDirs) -> str:
    root = dirs.containerd_root
    return f"""version = 2
root = "{root}"
state = "{dirs.containerd_state}"
# Plugins that would write outside the state dir or need kernel features we do not use.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{dirs.containerd_socket}"

[ttrpc]
  address = "{dirs.containerd_socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this runc cannot lower oom_score_adj and every
  # container start fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{dirs.cni_conf}"
    max_conf_num = 1
  # No registry is ever contacted: every image is imported locally. Any pull of an image that is
  # not there goes to a closed port on the namespace's own loopback and fails at once.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:1"]
"""


def cni_config(dirs: NodeDirs) -> str:
    plugins = [
        {
            "type": "bridge",
            "bridge": network.BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(dirs.cni_ipam),
                "ranges": [[{"subnet": network.POD_CIDR}]],
                # No default route: a pod reaches its own subnet, Services and the node, nothing else.
                "routes": [
                    {"dst": network.SERVICE_CIDR},
                    {"dst": network.LINK_CIDR},
                ],
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]
    return json.dumps({"cniVersion": "1.0.0", "name": "smartflow", "plugins": plugins}, indent=2)


def kubelet_config(dirs: NodeDirs, *, client_ca: Path, resolv_conf: Path) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "containerRuntimeEndpoint": f"unix://{dirs.containerd_socket}",
        # This machine has cgroup v1 and no systemd.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        # Pods' cgroups live under one root of their own, removed again by `make down`.
        "cgroupRoot": f"/{network.CGROUP_ROOT}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "volumePluginDir": str(dirs.volume_plugins),
        "podLogsDir": str(dirs.pod_logs),
        "resolvConf": str(resolv_conf),
        "clusterDomain": "cluster.local",
        # No DNS server runs here; a pod's resolver points at its own loopback and fails at once.
        "clusterDNS": ["127.0.0.1"],
        # A busy shared disk must not evict the test pods.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "shutdownGracePeriod": "0s",
        "shutdownGracePeriodCriticalPods": "0s",
        "serializeImagePulls": False,
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "localStorageCapacityIsolation": True,
    }
    return json.dumps(config, indent=2)


def kube_proxy_config(*, kubeconfig: Path) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": network.POD_CIDR,
        "hostnameOverride": network.NODE_NAME,
        "bindAddress": network.NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zeros keep kube-proxy from writing the host-wide conntrack sysctls.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "5s", "minSyncPeriod": "0s"},
    }
    return json.dumps(config, indent=2)


# The values kubelet wants for these host-wide knobs; the node sees shadow files holding them, so
# kubelet finds them already set and the host's own values are never touched.
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
