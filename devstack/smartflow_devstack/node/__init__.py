"""The local stack's one real Kubernetes node: kubelet, containerd + runc, CNI bridge, kube-proxy.

The node lives in a network namespace and a mount namespace that the stack creates (held open by
an anchor process), so everything it writes stays under the stack's state directory and its pods'
traffic can only reach addresses inside that namespace. See ``docs/local-stack.md``.
"""
