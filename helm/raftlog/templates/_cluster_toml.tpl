{{/*
cluster.toml as the nodes read it (cluster/static_config.py). No
cluster_secret_file: RAFTLOG_CLUSTER_SECRET_FILE names it. Node zones are
not in the file: each pod gets its own from RAFTLOG_ZONE.
*/}}
{{- define "raftlog.clusterToml" -}}
cluster_id = {{ .Values.cluster.id | quote }}
controller_nodes = [{{ range $i, $e := until (int .Values.controllers) }}{{ if $i }}, {{ end }}{{ add1 $i }}{{ end }}]
metrics_port = {{ int .Values.ports.metrics }}
min_free_bytes = {{ int64 .Values.cluster.minFreeBytes }}
node_dead_after_ms = {{ int64 .Values.cluster.nodeDeadAfterMs }}
{{- range $ordinal := until (int .Values.replicas) }}

[[nodes]]
id = {{ add1 $ordinal }}
address = {{ include "raftlog.nodeAddress" (list $ $ordinal) | quote }}
data_dir = "/var/lib/raftlog/node{{ add1 $ordinal }}"
{{- end }}

[raft]
tick_ms = {{ int .Values.cluster.raft.tickMs }}
election_ticks = {{ int .Values.cluster.raft.electionTicks }}
heartbeat_ticks = {{ int .Values.cluster.raft.heartbeatTicks }}
{{- with .Values.cluster.quotas }}
{{- if or (not (kindIs "invalid" .produceMbS)) (not (kindIs "invalid" .fetchMbS)) (not (kindIs "invalid" .requestsS)) (not (kindIs "invalid" .storageGb)) }}

[quotas]
{{- if not (kindIs "invalid" .produceMbS) }}
produce_mb_s = {{ .produceMbS }}
{{- end }}
{{- if not (kindIs "invalid" .fetchMbS) }}
fetch_mb_s = {{ .fetchMbS }}
{{- end }}
{{- if not (kindIs "invalid" .requestsS) }}
requests_s = {{ int64 .requestsS }}
{{- end }}
{{- if not (kindIs "invalid" .storageGb) }}
storage_gb = {{ .storageGb }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}

[tls]
ca_file = "/etc/raftlog/tls/ca.crt"
cert_file = "/etc/raftlog/tls/tls.crt"
key_file = "/etc/raftlog/tls/tls.key"
internal_port_offset = {{ int .Values.tls.internalPortOffset }}
{{- end }}
{{- range .Values.cluster.topics }}

[[topics]]
name = {{ .name | quote }}
partitions = {{ int .partitions }}
{{- end }}
{{- end }}
