"""The per-domain DaemonSet that runs one IMEX daemon on every node of the domain."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.api.models import ComputeDomain
from computedomain.controller.render.meta import domain_labels
from computedomain.controller.settings import Settings

DAEMON_BINARY = "compute-domain-daemon"
# The daemon's readiness state file (`computedomain.daemon.readiness`) in its IMEX config folder, which
# the plugin's CDI edits name in IMEX_CONFIG_DIR. Dash builtins only: `read` takes the file's one line.
# The messages are those of `compute-domain-daemon check`.
STATE_PROBE = [
    "sh",
    "-c",
    f'f="${{IMEX_CONFIG_DIR:-/imexd}}/{names.IMEX_STATE_FILE}"; read -r s 2>/dev/null <"$f"; '
    'case "$s" in *\'"ready": true\'*) echo "IMEX daemon is ready"; exit 0;; esac; '
    'echo "IMEX daemon is not ready: ${s:-no state in $f}"; exit 1',
]
# The daemon tolerates every taint: it must run wherever the workload it serves was scheduled.
TOLERATED_EFFECTS = ("NoSchedule", "NoExecute", "PreferNoSchedule")
# Root, as NVIDIA's daemon runs, because the image's user (65532) could do none of the daemon's work:
# nvidia-imex opens the fabric-imex-mgmt capability device, which the driver makes readable by root
# alone (0400), and the daemon rewrites the container's /etc/hosts (the kubelet's file, root's) and
# writes the IMEX config into /imexd (a root-owned 0755 folder of the kubelet plugin). Owning them is
# all it needs: no capability is added and nothing is privileged; the runtime's default capabilities
# stay, as nvidia-imex has not been run without them, and no process of the container may gain more
# (no setuid, no file capabilities). The API server keeps every field as given (false included), so
# the live object contains exactly what is rendered here.
SECURITY_CONTEXT: dict[str, Any] = {
    "runAsUser": 0,
    "runAsGroup": 0,
    "runAsNonRoot": False,
    "allowPrivilegeEscalation": False,
}


def daemonset(domain: ComputeDomain, settings: Settings) -> dict[str, Any]:
    """The DaemonSet of the domain's IMEX daemons, in the controller's namespace.

    Pods land only on nodes labelled with the domain, which the controller labels as workload claims
    are allocated there. Any change of the rendered template rolls the daemons out by itself.
    """
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": names.daemon_name(domain.uid),
            "namespace": settings.namespace,
            "labels": domain_labels(domain),
        },
        "spec": {
            "selector": {"matchLabels": domain_labels(domain)},
            "template": {
                "metadata": pod_metadata(domain_labels(domain), settings),
                "spec": _pod_spec(domain, settings),
            },
        },
    }


def pod_metadata(labels: dict[str, str], settings: Settings) -> dict[str, Any]:
    """The daemon pods' labels, the chart's annotations (`DAEMON_POD_ANNOTATIONS`), and where they
    serve metrics once they do (`DAEMON_HTTP_PORT`): the annotations that Prometheus' pod discovery
    reads."""
    metadata: dict[str, Any] = {"labels": labels}
    annotations = dict(settings.daemon_pod_annotations)
    if settings.daemon_http_port:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(settings.daemon_http_port),
            "prometheus.io/path": "/metrics",
        }
    if annotations:
        metadata["annotations"] = annotations
    return metadata


def _pod_spec(domain: ComputeDomain, settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": names.DAEMON_SERVICE_ACCOUNT,
        "nodeSelector": domain_labels(domain),
        "tolerations": [{"operator": "Exists", "effect": effect} for effect in TOLERATED_EFFECTS],
        "resourceClaims": [
            {"name": names.DAEMON_CLAIM, "resourceClaimTemplateName": names.daemon_name(domain.uid)},
        ],
        "containers": [_container(domain, settings)],
    }
    # Empty lists and strings are left out: the API server drops them, and the live object must match.
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    if settings.daemon_priority_class:
        spec["priorityClassName"] = settings.daemon_priority_class
    return spec


def _container(domain: ComputeDomain, settings: Settings) -> dict[str, Any]:
    return daemon_container(settings, _env(domain, settings))


def daemon_container(settings: Settings, env: list[dict[str, Any]]) -> dict[str, Any]:
    """The IMEX daemon container with `env`: a domain's daemons and the clique daemons alike."""
    container: dict[str, Any] = {
        "name": names.DAEMON_CONTAINER,
        "image": settings.image,
        "command": daemon_command("run"),
        "env": env,
        "resources": {
            "requests": {"cpu": settings.daemon_cpu_request, "memory": settings.daemon_memory_request},
            "limits": {"memory": settings.daemon_memory_limit},
            "claims": [{"name": names.DAEMON_CLAIM}],
        },
        # Zero-valued probe fields (initialDelaySeconds) are omitted: the server does not echo them.
        # Startup and readiness read the state the daemon keeps (a shell builtin, no interpreter to
        # start every second); liveness asks IMEX itself, so that a daemon whose wrapper hangs while
        # its file still says ready is restarted all the same.
        "startupProbe": probe(STATE_PROBE, period=1, failures=1200),
        "livenessProbe": probe(daemon_command("check"), period=60, failures=20),
        "readinessProbe": probe(STATE_PROBE, period=10, failures=1),
        "securityContext": dict(SECURITY_CONTEXT),
    }
    if settings.daemon_http_port:
        # Named as every program's port of the chart, so that one pod monitor finds them all.
        container["env"] = [*env, {"name": "HTTP_PORT", "value": str(settings.daemon_http_port)}]
        container["ports"] = [{"name": "http", "containerPort": settings.daemon_http_port, "protocol": "TCP"}]
    return container


def daemon_command(subcommand: str) -> list[str]:
    """The daemon wrapper's command line for `subcommand`, with NVIDIA's klog verbosity."""
    return [DAEMON_BINARY, "-v", "$(LOG_VERBOSITY)", subcommand]


def probe(command: list[str], period: int, failures: int) -> dict[str, Any]:
    """An exec probe every `period` seconds that fails after `failures` misses."""
    return {
        "exec": {"command": list(command)},
        "periodSeconds": period,
        "timeoutSeconds": 10,
        "failureThreshold": failures,
    }


def _env(domain: ComputeDomain, settings: Settings) -> list[dict[str, Any]]:
    return [
        {"name": "LOG_VERBOSITY", "value": str(settings.daemon_log_verbosity)},
        # The daemons log in the format the operator was given (the chart's `logFormat`).
        {"name": "LOG_FORMAT", "value": "json" if settings.json_logs else "text"},
        {"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": str(settings.max_nodes_per_clique)},
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_IP", "status.podIP"),
        field_env("POD_UID", "metadata.uid"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        # Keeps the NVIDIA container runtime from injecting the node's GPUs; the claim brings the devices.
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
        {"name": "FEATURE_GATES", "value": settings.feature_gates},
        # Also delivered through CDI by NVIDIA's kubelet plugin; set here so the daemon works without it.
        {"name": "COMPUTE_DOMAIN_UUID", "value": domain.uid},
        {"name": "COMPUTE_DOMAIN_NAME", "value": domain.name},
        {"name": "COMPUTE_DOMAIN_NAMESPACE", "value": domain.namespace},
    ]


def field_env(name: str, path: str) -> dict[str, Any]:
    """An environment variable from the pod's own field `path` (the downward API)."""
    # apiVersion spelled out because the server fills it in, and the live object must match.
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
