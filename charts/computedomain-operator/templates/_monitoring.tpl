{{/*
Helpers of the monitoring objects (servicemonitor.yaml, podmonitor.yaml, prometheusrule.yaml,
dashboard.yaml).
*/}}

{{/*
"true" where the monitoring.coreos.com objects are to be rendered: the cluster serves the API, or the
values force it (a render without cluster access cannot ask); "" otherwise, so that a chart installed
before the Prometheus Operator does not fail on kinds the API server does not know.
*/}}
{{- define "computedomain-operator.monitoringApi" -}}
{{- if or .Values.monitoring.forceMonitoringApi (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
true
{{- end -}}
{{- end -}}

{{/* Labels of the monitoring objects: the chart's, then monitoring.labels for the Prometheus selector. */}}
{{- define "computedomain-operator.monitoringLabels" -}}
{{ include "computedomain-operator.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Seconds in a Prometheus duration (30s, 15m, 1h30m, 2d; ms, w and y too): the alerts compare ages in
seconds with it.
*/}}
{{- define "computedomain-operator.promSeconds" -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 "y" 31536000.0 -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" (toString .) -1 -}}
{{- $number := regexFind "^[0-9]+" $part | float64 -}}
{{- $unit := regexReplaceAll "^[0-9]+" $part "" -}}
{{- $total = addf $total (mulf $number (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* Relabelings every PodMonitor endpoint shares: the node the pod runs on, for the alerts to name. */}}
{{- define "computedomain-operator.nodeRelabeling" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: node
{{- end -}}
