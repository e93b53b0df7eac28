{{/*
Names, labels and the render-time checks every template shares.

Invariants:
- Pod N of the StatefulSet is node N+1, at
  <fullname>-N.<fullname>-headless.<namespace>.svc.<clusterDomain>:<grpc>,
  with its data in /var/lib/raftlog/node<N+1> (raftlog.nodeAddress, configmap.yaml).
- raftlog.validate fails the render (never a warning) when the values could
  cost the controller its quorum; every template that matters includes it.
*/}}

{{- define "raftlog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "raftlog.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "raftlog.headless" -}}
{{- printf "%s-headless" (include "raftlog.fullname" .) }}
{{- end }}

{{- define "raftlog.flagsName" -}}
{{- printf "%s-flags" (include "raftlog.fullname" .) }}
{{- end }}

{{- define "raftlog.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "raftlog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raftlog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "raftlog.labels" -}}
helm.sh/chart: {{ include "raftlog.chart" . }}
{{ include "raftlog.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: raftlog
{{- end }}

{{/* Node pods: selector labels plus the component. */}}
{{- define "raftlog.nodeSelectorLabels" -}}
{{ include "raftlog.selectorLabels" . }}
app.kubernetes.io/component: node
{{- end }}

{{- define "raftlog.flagsSelectorLabels" -}}
{{ include "raftlog.selectorLabels" . }}
app.kubernetes.io/component: flags
{{- end }}

{{- define "raftlog.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "raftlog.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "raftlog.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding cluster.secret and operator-key. */}}
{{- define "raftlog.authSecretName" -}}
{{- default (printf "%s-auth" (include "raftlog.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* The Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "raftlog.tlsSecretName" -}}
{{- if eq .Values.tls.source "certManager" }}
{{- printf "%s-tls" (include "raftlog.fullname" .) }}
{{- else }}
{{- .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* Node N's advertised gRPC address (N = ordinal). */}}
{{- define "raftlog.nodeAddress" -}}
{{- $root := index . 0 }}{{- $ordinal := index . 1 }}
{{- printf "%s-%d.%s.%s.svc.%s:%d" (include "raftlog.fullname" $root) (int $ordinal) (include "raftlog.headless" $root) $root.Release.Namespace $root.Values.clusterDomain (int $root.Values.ports.grpc) }}
{{- end }}

{{/* The client Service's in-cluster address. */}}
{{- define "raftlog.clientAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "raftlog.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.grpc) }}
{{- end }}

{{/* Container security context shared by every container of the chart. */}}
{{- define "raftlog.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "raftlog.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A container's envFrom: otel.envFrom (Secrets/ConfigMaps, e.g. OTLP auth
headers kept out of the pod spec). Renders nothing when the list is empty.
*/}}
{{- define "raftlog.otelEnvFrom" -}}
{{- with .Values.otel.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Where the zone-from-node init container leaves the zone for the node. */}}
{{- define "raftlog.zoneDir" -}}
/etc/raftlog/zone
{{- end }}

{{/*
The ClusterRole (and its binding) that lets the init container get Nodes:
cluster-scoped, so the name carries the namespace (two releases of the same
name in two namespaces must not share it).
*/}}
{{- define "raftlog.nodeReaderName" -}}
{{- printf "%s-%s-node-reader" .Release.Namespace (include "raftlog.fullname" .) }}
{{- end }}

{{/* OTEL_* passthrough, sorted by name so the pod spec is stable. */}}
{{- define "raftlog.otelEnv" -}}
{{- range $name := keys .Values.otel.env | sortAlpha }}
- name: {{ $name }}
  value: {{ index $.Values.otel.env $name | quote }}
{{- end }}
{{- end }}

{{/*
Render-time checks: the values must keep the metadata controller's quorum.
The controller's voters are ordinals 0..controllers-1; a majority of them
must stay up through any voluntary disruption the PDB admits.
*/}}
{{- define "raftlog.validate" -}}
{{- $controllers := int .Values.controllers }}
{{- $replicas := int .Values.replicas }}
{{- if or (lt $controllers 3) (eq (mod $controllers 2) 0) }}
{{- fail (printf "controllers=%d: the metadata controller needs an odd number of voters, at least 3 (an even count tolerates no more failures than one fewer, and splits votes)" $controllers) }}
{{- end }}
{{- if lt $replicas 3 }}
{{- fail (printf "replicas=%d: raftlog needs at least 3 nodes (the controller's 3 voters and 3 replicas per partition)" $replicas) }}
{{- end }}
{{- if gt $controllers $replicas }}
{{- fail (printf "controllers=%d > replicas=%d: every controller voter must be a node pod" $controllers $replicas) }}
{{- end }}
{{- if .Values.pdb.enabled }}
{{- $max := int .Values.pdb.maxUnavailable }}
{{- $tolerated := div (sub $controllers 1) 2 }}
{{- if ne $max 1 }}
{{- fail (printf "pdb.maxUnavailable=%d could lose quorum: the controller's %d voters tolerate %d down and a 3-replica partition tolerates 1; use 1" $max $controllers $tolerated) }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.tls.source "existingSecret") (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled with tls.source=existingSecret needs tls.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" }}
{{- end }}
{{- if and .Values.tls.enabled (eq .Values.tls.source "certManager") (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.source=certManager needs tls.certManager.issuerRef.name (the cert-manager Issuer or ClusterIssuer that signs the node certificate)" }}
{{- end }}
{{- end }}
