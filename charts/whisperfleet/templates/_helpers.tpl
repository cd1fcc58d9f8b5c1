{{/* Names, labels and images shared by the templates. */}}

{{- define "whisperfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "whisperfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "whisperfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "whisperfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "whisperfleet.labels" -}}
{{ include "whisperfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "whisperfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "whisperfleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. Call with (list $image $root). */}}
{{- define "whisperfleet.image" -}}
{{- $image := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* true when the operator watches every namespace (and so gets a ClusterRole). */}}
{{- define "whisperfleet.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/*
The namespaced part of the operator's RBAC: exactly what the operator and kopf call.
Used as the rules of the ClusterRole (all namespaces) or of each per-namespace Role.
*/}}
{{- define "whisperfleet.namespacedRules" -}}
# The custom resource: kopf lists/watches it, patches its finalizers/annotations and status.
- apiGroups: ["whisperfleet.io"]
  resources: ["transcriptionjobs"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["whisperfleet.io"]
  resources: ["transcriptionjobs/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion need this where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift).
- apiGroups: ["whisperfleet.io"]
  resources: ["transcriptionjobs/finalizers"]
  verbs: ["update"]
# The planner Job and the Indexed worker Job (suspend/parallelism are patched).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# Pods are only read: node, GPU identities and termination messages for the status.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# kopf and the operator post Events on the TranscriptionJob.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Dynamic Resource Allocation: one ResourceClaimTemplate per job asks for specific GPUs.
- apiGroups: ["resource.k8s.io"]
  resources: ["resourceclaimtemplates"]
  verbs: ["create", "get", "list", "delete"]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# kopf peering (namespaced mode): the KopfPeering object of this namespace only.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}
