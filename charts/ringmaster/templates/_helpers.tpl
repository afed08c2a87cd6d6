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
The operator's rules on the namespaces it manages (ClusterRole or Role): exactly the
calls in src/operator/** (controllers, observe/apply/status) and nothing more.
- Writes are server-side apply (PATCH; creating through apply also needs `create`),
  `create` for write-once objects (Pods, the credentials Secret, new Shards) and
  `delete` for Pods and PVCs only. Nothing is written with PUT: no `update` (except the
  finalizers below).
- ringmaster.dev: reads ShardedClusters and writes only their status; creates and applies
  Shards (never deletes them: the garbage collector does) and writes their status;
  ShardMigrations are read-only for now (no controller writes them yet).
- `update` on shardedclusters/finalizers and shards/finalizers: owned objects carry
  ownerReferences with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
  admission plugin (e.g. OpenShift) allows only to those who may update the owner's
  finalizers. Shards are owned by
  ShardedClusters; Pods, PVCs and Services by Shards.
- Pods: created directly (role labels applied), deleted on failure and scale-down. No
  pods/exec, no pods/status. PVCs: applied (created, resized), deleted when a replica is
  removed with pvcRetention.whenScaled=Delete. Services, ConfigMaps (routing table): applied.
- Secrets: the credentials Secret is created once and only missing keys are re-added
  (merge patch); never updated or deleted by the operator (owner references let the
  garbage collector remove it).
- Events: events.k8s.io only (create, and patch for an Event series).
- `get` is granted with `list`/`watch` as the read set; it adds nothing `list` does not.
*/}}
{{- define "ringmaster.managedRules" -}}
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shardmigrations"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shards"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters/status", "shards/status", "shardmigrations/status"]
  verbs: ["patch"]
- apiGroups: ["ringmaster.dev"]
  resources: ["shardedclusters/finalizers", "shards/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
