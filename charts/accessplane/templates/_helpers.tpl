{{/* Chart name, overridable. */}}
{{- define "accessplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-qualified unless the release name already contains the chart name. */}}
{{- define "accessplane.fullname" -}}
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

{{/*
Name of RBAC objects that may live outside the release namespace (ClusterRoles and
their bindings, Roles in watchNamespace or the lease namespace): the full name plus
the release namespace, so the same release name installed in two namespaces does not
collide. ':' cannot occur in either part, so no two releases map to one name.
*/}}
{{- define "accessplane.rbacName" -}}
{{- printf "%s:%s" (include "accessplane.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "accessplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "accessplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "accessplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "accessplane.labels" -}}
helm.sh/chart: {{ include "accessplane.chart" . }}
{{ include "accessplane.selectorLabels" . }}
app.kubernetes.io/version: {{ include "accessplane.tag" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: accessplane
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the `helm test` Pod (not the operator's selector: the Service must not pick it). */}}
{{- define "accessplane.testLabels" -}}
helm.sh/chart: {{ include "accessplane.chart" . }}
app.kubernetes.io/name: {{ include "accessplane.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/part-of: accessplane
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Pod and container hardening (restricted PodSecurity), shared by the operator and the test Pod. */}}
{{- define "accessplane.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "accessplane.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "accessplane.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "accessplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "accessplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when leader election is on: explicitly, or "auto"/unset with more than one replica. */}}
{{- define "accessplane.leaderElection" -}}
{{- $enabled := .Values.leaderElection.enabled }}
{{- if kindIs "bool" $enabled }}
{{- $enabled }}
{{- else }}
{{- gt (int .Values.replicaCount) 1 }}
{{- end }}
{{- end }}

{{/* Namespace of the leader-election Lease. */}}
{{- define "accessplane.leaseNamespace" -}}
{{- .Values.leaderElection.namespace | default .Release.Namespace }}
{{- end }}

{{/* Namespace of every ClusterConnection's credentials Secret. */}}
{{- define "accessplane.credentialsNamespace" -}}
{{- .Values.secrets.credentialsNamespace | default .Release.Namespace }}
{{- end }}

{{/* Names of the bundled CRDs, read from the chart's crds/. */}}
{{- define "accessplane.crdNames" -}}
{{- range $path, $_ := .Files.Glob "crds/*.yaml" }}
- {{ (fromYaml ($.Files.Get $path)).metadata.name }}
{{- end }}
{{- end }}

{{/* Fails rendering on settings that would let two operators write at once. */}}
{{- define "accessplane.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (ne (include "accessplane.leaderElection" .) "true") }}
{{- fail "replicaCount > 1 needs leader election: set leaderElection.enabled to true or \"auto\"" }}
{{- end }}
{{- if and (eq .Values.secrets.scope "credentialsNamespace") (ne .Values.watchNamespace "") }}
{{- fail "secrets.scope=credentialsNamespace works through ClusterConnections, which need a cluster-wide install: leave watchNamespace empty" }}
{{- end }}
{{- end }}
