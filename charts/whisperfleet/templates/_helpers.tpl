{{/* Names, labels and images shared by the templates. */}}

{{- define "whisperfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<name>, or the release name alone when it already holds the name. */}}
{{- define "whisperfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "whisperfleet.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The (Cluster)KopfPeering's name: its own value, else the release's full name. */}}
{{- define "whisperfleet.peeringName" -}}
{{- default (include "whisperfleet.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
Names of pull Secrets, comma-separated, from a list of {name: …} (or of plain names, the
chart's first form). Call with the list.
*/}}
{{- define "whisperfleet.pullSecretNames" -}}
{{- $names := list -}}
{{- range . -}}
{{- if kindIs "map" . -}}
{{- $names = append $names .name -}}
{{- else -}}
{{- $names = append $names . -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* A pod spec's imagePullSecrets field, or nothing for an empty list; call with the list. */}}
{{- define "whisperfleet.imagePullSecrets" -}}
{{- with include "whisperfleet.pullSecretNames" . }}
imagePullSecrets:
{{- range splitList "," . }}
  - name: {{ . }}
{{- end }}
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
# The custom resource: kopf lists/watches it, patches its finalizers/annotations and status;
# the operator deletes a finished one when its spec.ttlSecondsAfterFinished ends.
- apiGroups: ["whisperfleet.io"]
  resources: ["transcriptionjobs"]
  verbs: ["get", "list", "watch", "patch", "delete"]
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
# Kueue: a queued job's Workload is read for Kueue's reason and, to suspend or resume an
# admitted job the way Kueue honours, its spec.active is patched.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["list", "patch"]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# kopf peering (namespaced mode): the KopfPeering object of this namespace only.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end -}}

{{/*
The labels the operator puts on every worker pod (whisperfleet_operator.naming.labels_for with
COMPONENT_WORKER), minus the per-job uid: fixed by the operator, not by this release's names.
*/}}
{{- define "whisperfleet.workerPodLabels" -}}
app.kubernetes.io/name: whisperfleet
app.kubernetes.io/component: worker
{{- end -}}

{{/* The namespaces whose worker pods are scraped: every one, or the watched ones. */}}
{{- define "whisperfleet.metricsNamespaceSelector" -}}
{{- if include "whisperfleet.clusterWide" . -}}
any: true
{{- else -}}
matchNames:
  {{- toYaml .Values.watchNamespaces | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
Target labels of a scraped worker: which TranscriptionJob (uid label and name annotation the
operator sets on the pod), and where it ran. The same for PodMonitor and ServiceMonitor, as
Prometheus' endpoints discovery carries the backing pod's metadata too.
*/}}
{{- define "whisperfleet.metricsRelabelings" -}}
- action: replace
  sourceLabels: [__meta_kubernetes_pod_label_whisperfleet_io_job_uid]
  targetLabel: job_uid
- action: replace
  sourceLabels: [__meta_kubernetes_pod_annotation_whisperfleet_io_transcriptionjob]
  targetLabel: transcriptionjob
- action: replace
  sourceLabels: [__meta_kubernetes_namespace]
  targetLabel: namespace
- action: replace
  sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
- action: replace
  sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
{{- end -}}

{{/*
The one scrape endpoint of a monitor, as a list item: the port named `metrics` (the pods'
container port, or the Service port of that name), /metrics, interval, timeout, relabelings.
Call with (list $monitorValues $root).
*/}}
{{- define "whisperfleet.metricsEndpoint" -}}
{{- $monitor := index . 0 -}}
{{- $root := index . 1 -}}
- port: metrics
  path: /metrics
  {{- with $monitor.interval }}
  interval: {{ . | quote }}
  {{- end }}
  {{- with $monitor.scrapeTimeout }}
  scrapeTimeout: {{ . | quote }}
  {{- end }}
  relabelings:
    {{- include "whisperfleet.metricsRelabelings" $root | nindent 4 }}
{{- end -}}

{{/* Labels of the monitoring objects; call with (list $root component). */}}
{{- define "whisperfleet.componentLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "whisperfleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}
