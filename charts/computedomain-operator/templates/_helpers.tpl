{{/*
Names and labels shared by every template.
*/}}

{{- define "computedomain-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Release-scoped prefix of every object name: fullnameOverride, else <release>-<name>, or the release name
alone when it already holds the name.
*/}}
{{- define "computedomain-operator.fullname" -}}
{{- $name := include "computedomain-operator.name" . -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
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
{{- /* NVIDIA's chart spells it resource.k8s.io/<version>. */ -}}
{{- $version = .Values.resourceApiVersion | trimPrefix "resource.k8s.io/" -}}
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

{{/* An update strategy; rollingUpdate only where the type is RollingUpdate (the API refuses it elsewhere). */}}
{{- define "computedomain-operator.updateStrategy" -}}
{{- if eq (toString .type) "RollingUpdate" -}}
{{- toYaml . -}}
{{- else -}}
{{- toYaml (omit . "rollingUpdate") -}}
{{- end -}}
{{- end -}}

{{/*
Pod affinity: the chart's own (YAML in .own), with each of nodeAffinity, podAffinity and
podAntiAffinity that the values give (.values) in place of the chart's.
*/}}
{{- define "computedomain-operator.affinity" -}}
{{- $affinity := fromYaml .own -}}
{{- range $kind, $terms := .values -}}
{{- $_ := set $affinity $kind $terms -}}
{{- end -}}
{{- toYaml $affinity -}}
{{- end -}}

{{/* The chart's own affinity of the pods that belong on GPU nodes (kubelet plugin, node agent). */}}
{{- define "computedomain-operator.gpuNodeAffinity" -}}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      - matchExpressions:
          - key: nvidia.com/gpu.present
            operator: In
            values: ["true"]
{{- end -}}

{{/*
The chart's own affinity of the controller: the standby preferably on another node, so that losing one
node does not cost the leader and its heir.
*/}}
{{- define "computedomain-operator.controllerAffinity" -}}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "computedomain-operator.selectorLabels" . | nindent 12 }}
            app.kubernetes.io/component: controller
{{- end -}}

{{/* Seconds in a Go duration such as 15s, 1m30s or 500ms (NVIDIA's chart gives lease timings so). */}}
{{- define "computedomain-operator.seconds" -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(h|ms|m|s)" (toString .) -1 -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $part | float64 -}}
{{- $unit := regexReplaceAll "^[0-9.]+" $part "" -}}
{{- if eq $unit "h" -}}
{{- $total = addf $total (mulf $number 3600) -}}
{{- else if eq $unit "m" -}}
{{- $total = addf $total (mulf $number 60) -}}
{{- else if eq $unit "s" -}}
{{- $total = addf $total $number -}}
{{- else -}}
{{- $total = divf $number 1000 | addf $total -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/*
Values written for NVIDIA's chart (dra-driver-nvidia-gpu), moved onto this chart's own in .Values, so
that the templates read only ours. Which template Helm renders first is its own affair, so each one that
reads a value NVIDIA's chart spells differently starts with this; each value moved is removed, so a
second call finds nothing left to move. Ours wins where it is set to anything but its default (the
defaults are repeated here: a chart cannot read its own values.yaml); where ours is left at its
default, NVIDIA's takes its place. Lists (env) are joined, NVIDIA's first. Values of NVIDIA's with no
meaning here are left alone (the schema accepts them; README.md says why each is ignored); those whose
loss would surprise are refused in validation.yaml, or here where moving them finds them wrong.
*/}}
{{- define "computedomain-operator.adoptNvidiaValues" -}}
{{- $v := .Values -}}
{{- $ctl := $v.controller -}}
{{- $plugin := $v.kubeletPlugin -}}
{{- $daemon := $v.daemon -}}

{{- /* NVIDIA's chart takes {name: ...} objects, this one names. */ -}}
{{- $secrets := list -}}
{{- range $secret := $v.imagePullSecrets -}}
{{- if kindIs "map" $secret -}}
{{- $secrets = append $secrets $secret.name -}}
{{- else -}}
{{- $secrets = append $secrets $secret -}}
{{- end -}}
{{- end -}}
{{- $_ := set $v "imagePullSecrets" $secrets -}}

{{- if hasKey $v "nvidiaDriverRoot" -}}
{{- range $part := list $v.nodeAgent $plugin -}}
{{- if eq (toJson $part.driverRoot) (toJson "/") -}}
{{- $_ := set $part "driverRoot" $v.nvidiaDriverRoot -}}
{{- end -}}
{{- end -}}
{{- $_ := unset $v "nvidiaDriverRoot" -}}
{{- end -}}

{{- if hasKey $v "altProcDevices" -}}
{{- if not $plugin.procDevices -}}
{{- $_ := set $plugin "procDevices" $v.altProcDevices -}}
{{- end -}}
{{- $_ := unset $v "altProcDevices" -}}
{{- end -}}

{{- /* NVIDIA's verbosity is every component's; here only the IMEX daemons take one (the other programs log at LOG_LEVEL). */ -}}
{{- if hasKey $v "logVerbosity" -}}
{{- if eq (toJson $daemon.logVerbosity) "4" -}}
{{- $_ := set $daemon "logVerbosity" (int $v.logVerbosity) -}}
{{- end -}}
{{- $_ := unset $v "logVerbosity" -}}
{{- end -}}

{{- /* Gate by gate: ours wins where it is not the default. */ -}}
{{- if hasKey $v "featureGates" -}}
{{- $defaults := dict "ComputeDomainCliques" true "IMEXDaemonsWithDNSNames" true -}}
{{- $gates := deepCopy ($v.featureGates | default dict) -}}
{{- range $gate, $on := $daemon.featureGates -}}
{{- if or (not (hasKey $gates $gate)) (ne (toJson $on) (toJson (get $defaults $gate))) -}}
{{- $_ := set $gates $gate $on -}}
{{- end -}}
{{- end -}}
{{- $_ := set $daemon "featureGates" $gates -}}
{{- $_ := unset $v "featureGates" -}}
{{- end -}}

{{- $lease := $ctl.leaderElection -}}
{{- $leaseDefaults := dict "leaseDurationSeconds" 15 "renewDeadlineSeconds" 10 "retryPeriodSeconds" 2 -}}
{{- range $nvidia, $ours := dict "leaseDuration" "leaseDurationSeconds" "renewDeadline" "renewDeadlineSeconds" "retryPeriod" "retryPeriodSeconds" -}}
{{- if hasKey $lease $nvidia -}}
{{- if eq (toJson (get $lease $ours)) (toJson (get $leaseDefaults $ours)) -}}
{{- $_ := set $lease $ours (include "computedomain-operator.seconds" (get $lease $nvidia) | float64) -}}
{{- end -}}
{{- $_ := unset $lease $nvidia -}}
{{- end -}}
{{- end -}}

{{- $controllerContainer := dig "containers" "computeDomain" dict $ctl -}}
{{- if hasKey $controllerContainer "env" -}}
{{- $env := list -}}
{{- range $entry := $controllerContainer.env -}}
{{- if and (eq $entry.name "MAX_NODES_PER_IMEX_DOMAIN") (hasKey $entry "value") -}}
{{- if eq (toJson $daemon.maxNodesPerIMEXDomain) "18" -}}
{{- $_ := set $daemon "maxNodesPerIMEXDomain" (int $entry.value) -}}
{{- end -}}
{{- else if eq $entry.name "ADDITIONAL_NAMESPACES" -}}
{{- if or $entry.value $entry.valueFrom -}}
{{- fail "computedomain-operator: controller.containers.computeDomain.env sets ADDITIONAL_NAMESPACES, which this controller does not take: it keeps every IMEX DaemonSet in its own namespace (the release namespace) and manages no other. Remove it; delete what NVIDIA's controller left in those namespaces before switching (docs/install.md, Migrating from NVIDIA's chart)." -}}
{{- end -}}
{{- else -}}
{{- $env = append $env $entry -}}
{{- end -}}
{{- end -}}
{{- $_ := set $ctl "env" (concat $env ($ctl.env | default list)) -}}
{{- $_ := unset $controllerContainer "env" -}}
{{- end -}}
{{- if $controllerContainer.resources -}}
{{- if eq (toJson $ctl.resources) (toJson (dict "requests" (dict "cpu" "100m" "memory" "128Mi") "limits" (dict "memory" "512Mi"))) -}}
{{- $_ := set $ctl "resources" $controllerContainer.resources -}}
{{- end -}}
{{- end -}}
{{- $_ := unset $controllerContainer "resources" -}}

{{- $pluginContainer := dig "containers" "computeDomains" dict $plugin -}}
{{- if hasKey $pluginContainer "env" -}}
{{- $_ := set $plugin "env" (concat ($pluginContainer.env | default list) ($plugin.env | default list)) -}}
{{- $_ := unset $pluginContainer "env" -}}
{{- end -}}
{{- if $pluginContainer.resources -}}
{{- if eq (toJson $plugin.resources) (toJson (dict "requests" (dict "cpu" "10m" "memory" "128Mi") "limits" (dict "memory" "512Mi"))) -}}
{{- $_ := set $plugin "resources" $pluginContainer.resources -}}
{{- end -}}
{{- end -}}
{{- $_ := unset $pluginContainer "resources" -}}

{{- /* NVIDIA's chart names the kubelet's two plugin folders; this one takes the root they are both in. */ -}}
{{- $root := "" -}}
{{- range $key, $folder := dict "kubeletRegistrarDirectoryPath" "/plugins_registry" "kubeletPluginsDirectoryPath" "/plugins" -}}
{{- if hasKey $plugin $key -}}
{{- $path := get $plugin $key | toString | trimSuffix "/" -}}
{{- if or (not (hasSuffix $folder $path)) (eq $path $folder) -}}
{{- fail (printf "computedomain-operator: kubeletPlugin.%s=%s does not end in %s. This chart takes the kubelet's root directory (kubeletPlugin.kubeletRootDir) and uses <root>/plugins_registry and <root>/plugins; set kubeletPlugin.kubeletRootDir instead." $key $path $folder) -}}
{{- end -}}
{{- $this := trimSuffix $folder $path -}}
{{- if and $root (ne $root $this) -}}
{{- fail (printf "computedomain-operator: kubeletPlugin.kubeletRegistrarDirectoryPath and kubeletPlugin.kubeletPluginsDirectoryPath are in different kubelet roots (%s and %s); this chart takes one root, kubeletPlugin.kubeletRootDir." $root $this) -}}
{{- end -}}
{{- $root = $this -}}
{{- $_ := unset $plugin $key -}}
{{- end -}}
{{- end -}}
{{- if and $root (eq (toJson $plugin.kubeletRootDir) (toJson "/var/lib/kubelet")) -}}
{{- $_ := set $plugin "kubeletRootDir" $root -}}
{{- end -}}
{{- end -}}

{{/* Values of NVIDIA's chart that have no meaning here and whose silent loss would surprise. */}}
{{- define "computedomain-operator.refuseNvidiaValues" -}}
{{- $v := .Values -}}
{{- $resources := $v.resources | default dict -}}
{{- $account := $v.serviceAccount | default dict -}}
{{- if dig "gpus" "enabled" false $resources -}}
{{- fail "computedomain-operator: resources.gpus.enabled=true is refused: this chart installs ComputeDomains only, not the GPU driver (gpu.nvidia.com). Keep NVIDIA's chart for GPUs with resources.computeDomains.enabled=false, and drop resources.gpus from these values." -}}
{{- end -}}
{{- if not (dig "computeDomains" "enabled" true $resources) -}}
{{- fail "computedomain-operator: resources.computeDomains.enabled=false is refused: ComputeDomains are all this chart installs. To go without them, do not install it." -}}
{{- end -}}
{{- if eq (dig "computeDomains" "imex" "mode" "driverManaged" $resources) "hostManaged" -}}
{{- fail "computedomain-operator: resources.computeDomains.imex.mode=hostManaged is refused: this operator always runs the IMEX daemons itself (imex.mode=domain, one DaemonSet per ComputeDomain, or imex.mode=clique, long-running daemons per NVLink clique), never the host's nvidia-imex service." -}}
{{- end -}}
{{- if eq (dig "computeDomains" "imex" "isolation" "domain" $resources) "channel" -}}
{{- fail "computedomain-operator: resources.computeDomains.imex.isolation=channel is refused: NVIDIA's chart does not implement it either. The nearest here is imex.mode=clique, which gives each ComputeDomain an IMEX channel of its own in each NVLink clique (workloads of one domain share it)." -}}
{{- end -}}
{{- with $v.namespaceOverride -}}
{{- if ne . $.Release.Namespace -}}
{{- fail (printf "computedomain-operator: namespaceOverride=%s is refused: everything goes into the release namespace; install with --namespace %s instead." . .) -}}
{{- end -}}
{{- end -}}
{{- if or (not (dig "create" true $account)) (dig "name" "" $account) -}}
{{- fail "computedomain-operator: serviceAccount.create=false and serviceAccount.name are refused: this chart gives the controller, the kubelet plugin, the node agent and the IMEX daemons a ServiceAccount each, which its RBAC rules and admission policies name; one account of your own would hold none of those rights." -}}
{{- end -}}
{{- range $component := list "controller" "kubeletPlugin" -}}
{{- if dig "networkPolicy" "enabled" false (get $v $component) -}}
{{- fail (printf "computedomain-operator: %s.networkPolicy.enabled=true is refused: this chart renders no NetworkPolicy. Write your own for the release namespace (the IMEX daemons of a domain talk to each other across nodes, every component to the API server)." $component) -}}
{{- end -}}
{{- end -}}
{{- if regexMatch "(^|/)(k8s-dra-driver-gpu|k8s-dra-driver|dra-driver-nvidia-gpu)$" $v.image.repository -}}
{{- fail (printf "computedomain-operator: image.repository=%s is NVIDIA's driver image; this chart runs its own (built from this repository's Dockerfile, e.g. <registry>/computedomain-operator)." $v.image.repository) -}}
{{- end -}}
{{- end -}}
