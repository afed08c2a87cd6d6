{{/* Chart name. */}}
{{- define "ringmaster.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-qualified, at most 63 characters. */}}
{{- define "ringmaster.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value. */}}
{{- define "ringmaster.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "ringmaster.labels" -}}
helm.sh/chart: {{ include "ringmaster.chart" . }}
{{ include "ringmaster.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: ringmaster
{{- end }}

{{/* Labels selecting the operator's Pods. */}}
{{- define "ringmaster.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringmaster.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "ringmaster.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringmaster.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference the operator runs (and hands to instance Pods). */}}
{{- define "ringmaster.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on the namespaces it manages (ClusterRole or Role).
Least privilege for what it does:
- ringmaster.dev: reads its resources, creates/deletes Shards and ShardMigrations it owns,
  writes status and finalizers; never creates or deletes ShardedClusters (users do).
- Pods, PVCs, Services, ConfigMaps (routing table): full lifecycle; Pods are managed
  directly (role labels, failover, fencing). No pods/exec, no pods/status.
- Deployments: the routers.
- Secrets: the credentials Secret is generated once and never regenerated or deleted by
  the operator (owner references let the garbage collector remove it): no update/delete.
- Events: events.k8s.io only.
*/}}
{{- define "ringmaster.managedRules" -}}
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters"]
  verbs: ["get", "list", "watch", "update", "patch"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shards", "shardmigrations"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters/status", "shards/status", "shardmigrations/status"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters/finalizers", "shards/finalizers", "shardmigrations/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods", "services", "persistentvolumeclaims", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
