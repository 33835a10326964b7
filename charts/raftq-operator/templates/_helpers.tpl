{{- define "raftq-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "raftq-operator.labels" -}}
app.kubernetes.io/name: raftq-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "raftq-operator.selectorLabels" -}}
app.kubernetes.io/name: raftq-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "raftq-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "raftq-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What the operator may do with the objects of the JobQueues it manages. */}}
{{- define "raftq-operator.rules" -}}
- apiGroups: ["raftq.dev"]
  resources: ["jobqueues"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["raftq.dev"]
  resources: ["jobqueues/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Watched so that a deleted or edited one is put back at once.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The CA, the certificates, the admin token and the principals files it
# writes, and a user's principals Secret it checks: by name only (no list
# or watch, so no other Secret can be read or enumerated).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# The queue's pods, for the Node each runs on (its zone: placement
# spreads a shard's replicas over zones).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The ServiceMonitor of each JobQueue, while the Prometheus Operator's CRD
# is installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- if .Values.certManager.enabled }}
# tls.mode: certManager — the Certificates it asks cert-manager for.
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
{{- end }}
{{- end -}}
