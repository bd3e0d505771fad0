{{/*
Names and labels shared by every template.
*/}}

{{- define "computedomain-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped prefix of every object name (the release name alone when it already holds the chart's). */}}
{{- define "computedomain-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "computedomain-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "computedomain-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "computedomain-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "computedomain-operator.labels" -}}
helm.sh/chart: {{ include "computedomain-operator.chart" . }}
{{ include "computedomain-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "computedomain-operator.controllerName" -}}
{{- printf "%s-controller" (include "computedomain-operator.fullname" .) -}}
{{- end -}}

{{- define "computedomain-operator.nodeAgentName" -}}
{{- printf "%s-node-agent" (include "computedomain-operator.fullname" .) -}}
{{- end -}}

{{- define "computedomain-operator.kubeletPluginName" -}}
{{- printf "%s-kubelet-plugin" (include "computedomain-operator.fullname" .) -}}
{{- end -}}

{{- define "computedomain-operator.daemonName" -}}
{{- printf "%s-imex-daemon" (include "computedomain-operator.fullname" .) -}}
{{- end -}}

{{/*
The IMEX daemon pods' ServiceAccount. The controller names it in every per-domain DaemonSet it renders,
so the name is fixed (computedomain.api.names.DAEMON_SERVICE_ACCOUNT), not release-scoped.
*/}}
{{- define "computedomain-operator.daemonServiceAccount" -}}
compute-domain-daemon-service-account
{{- end -}}

{{/* The Lease the controller replicas elect their leader with. */}}
{{- define "computedomain-operator.leaseName" -}}
{{- include "computedomain-operator.controllerName" . -}}
{{- end -}}

{{- define "computedomain-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
resource.k8s.io version for the DeviceClasses: the override, else the highest one the cluster serves
(v1 > v1beta2 > v1beta1). Each version also needs the Kubernetes release that introduced it: a live
cluster's discovery already implies that, but offline rendering (`helm template`) claims every version
Helm knows, so the Kubernetes version (`--kube-version`) is what keeps that rendering honest.
*/}}
{{- define "computedomain-operator.resourceApiVersion" -}}
{{- $caps := .Capabilities -}}
{{- $kube := $caps.KubeVersion.Version -}}
{{- $version := "" -}}
{{- if .Values.resourceApiVersion -}}
{{- $version = .Values.resourceApiVersion -}}
{{- else if and ($caps.APIVersions.Has "resource.k8s.io/v1") (semverCompare ">=1.34.0-0" $kube) -}}
{{- $version = "v1" -}}
{{- else if and ($caps.APIVersions.Has "resource.k8s.io/v1beta2") (semverCompare ">=1.33.0-0" $kube) -}}
{{- $version = "v1beta2" -}}
{{- else if $caps.APIVersions.Has "resource.k8s.io/v1beta1" -}}
{{- $version = "v1beta1" -}}
{{- end -}}
{{- if not $version -}}
{{- fail "computedomain-operator: the cluster serves no resource.k8s.io version (v1, v1beta2 or v1beta1). ComputeDomains need Dynamic Resource Allocation: Kubernetes 1.34+, or 1.32/1.33 with the DynamicResourceAllocation feature gate and the resource.k8s.io beta APIs enabled (--runtime-config). Set resourceApiVersion to choose a version explicitly." -}}
{{- end -}}
{{- printf "resource.k8s.io/%s" $version -}}
{{- end -}}

{{/* A feature-gate map as the comma-separated `Name=bool` list FEATURE_GATES holds (sorted by name). */}}
{{- define "computedomain-operator.featureGates" -}}
{{- $gates := list -}}
{{- range $gate, $enabled := . -}}
{{- $gates = append $gates (printf "%s=%t" $gate $enabled) -}}
{{- end -}}
{{- join "," $gates -}}
{{- end -}}

{{/*
Extra environment variables of a container, after the chart's own. A plain value is quoted, since
`--set env[0].value=1` would otherwise give the API server a number where EnvVar takes a string.
*/}}
{{- define "computedomain-operator.extraEnv" -}}
{{- range . }}
- name: {{ .name | quote }}
  {{- if hasKey . "value" }}
  value: {{ .value | toString | quote }}
  {{- end }}
  {{- with .valueFrom }}
  valueFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
