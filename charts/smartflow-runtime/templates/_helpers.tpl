{{/* The runtime's name and the DSN Secret it reads. */}}

{{- define "smartflow-runtime.name" -}}
{{- default .Release.Name .Values.name }}
{{- end }}

{{- define "smartflow-runtime.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: smartflow
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret holding the DSN: the one the chart creates, or an existing one (required). */}}
{{- define "smartflow-runtime.dsnSecretName" -}}
{{- if .Values.database.createSecret.enabled }}
{{- if .Values.database.dsnSecret.name }}
{{- fail "set either database.dsnSecret.name (an existing Secret) or database.createSecret.enabled, not both" }}
{{- end }}
{{- printf "%s-database" (include "smartflow-runtime.name" .) }}
{{- else }}
{{- required "database.dsnSecret.name is required: the Secret holding the PostgreSQL DSN (or set database.createSecret.enabled and database.createSecret.dsn)" .Values.database.dsnSecret.name }}
{{- end }}
{{- end }}
