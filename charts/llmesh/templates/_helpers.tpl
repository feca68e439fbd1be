{{/* Labels every object carries. */}}
{{- define "llmesh.labels" -}}
app.kubernetes.io/part-of: llmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The namespace holding platform-wide llmesh policy. */}}
{{- define "llmesh.platformNamespace" -}}
{{- .Values.platformNamespace | default .Release.Namespace -}}
{{- end -}}

{{/* image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "llmesh.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .chart.AppVersion) -}}
{{- end -}}

{{/* The sidecar settings the injector reads (see crates/llmesh-injector/src/config.rs). */}}
{{- define "llmesh.sidecarConfig" -}}
{{- $quota := dict "store" .Values.quotaStore -}}
{{- if .Values.quotaLocalShare }}{{ $_ := set $quota "localShare" .Values.quotaLocalShare }}{{ end -}}
{{- $cfg := merge (dict "platformNamespace" (include "llmesh.platformNamespace" .) "quota" $quota) (deepCopy .Values.sidecar) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Namespaces the webhook never sees, one YAML list item a line. */}}
{{- define "llmesh.excludedNamespaces" -}}
{{- $ns := concat (list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace) .Values.injector.excludeNamespaces | uniq -}}
{{- range $ns }}
- {{ . }}
{{- end }}
{{- end -}}
