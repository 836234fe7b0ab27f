{{/*
The operator's permissions: the same list as operator/smartflow_operator/rbac.py (PERMISSIONS),
one rule per resource, no wildcards. tests/unit/chart/test_rbac.py fails when the two differ, and
tests/integration/chart/test_rbac_necessity.py shows the operator fails without any one of them.
Used by the Role in each watched namespace and by the ClusterRole (allNamespaces).
*/}}
{{- define "smartflow-operator.rules" -}}
# Watch runtimes; kopf records handler progress in annotations (patch).
- apiGroups: ["smartflow.io"]
  resources: ["smartflowruntimes"]
  verbs: ["get", "list", "watch", "patch"]
# Report conditions, per-role replicas, lag readings and scaling decisions.
- apiGroups: ["smartflow.io"]
  resources: ["smartflowruntimes/status"]
  verbs: ["patch"]
# Children carry an owner reference with blockOwnerDeletion, which clusters enforcing
# OwnerReferencesPermissionEnforcement only allow with update on the owner's finalizers.
- apiGroups: ["smartflow.io"]
  resources: ["smartflowruntimes/finalizers"]
  verbs: ["update"]
# One Deployment per role: server-side apply (a patch, never a PUT), prune, watch readiness and replicas (no GET).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The API role's Service: watched (passes read children from the watch, never LIST them),
# server-side applied; wanted in every mode, never pruned.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
# A disruption budget per role that can run two or more pods: watched, applied, pruned.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The optional NetworkPolicy (spec.networkPolicy): watched, server-side applied, pruned.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# The schema migration Job: read by name, watched for completion, created once per spec
# (never updated or deleted: finished Jobs go by their TTL or with the runtime).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# Find the pod of a failed migration Job (listed by the Job's uid label) ...
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# ... and quote its last log lines in the MigrationFailed condition and Event.
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Read (never list) the Secrets a runtime names (DSN, TLS, SASL, env): validate and hash them; the
# lag probes read the DSN, the SASL credentials and the client certificates through them.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Read (never list) the ConfigMaps a runtime names (CA bundles, env): validate and hash them.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Events about applied changes, scaling decisions and problems (always created, never patched).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The leader election rules (operator/smartflow_operator/rbac.py, leader_election_permissions):
a Role in the release namespace only. create cannot be narrowed to a name; get and update can.
*/}}
{{- define "smartflow-operator.leaderElectionRules" -}}
# Create the leader Lease the first time any replica starts.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Read, renew and release the leader Lease (update with resourceVersion: one leader).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ .Values.leaderElection.leaseName | quote }}]
  verbs: ["get", "update"]
{{- end }}
