"""Clique mode: the one DaemonSet of long-running IMEX daemons, its claim template and the peer objects.

Every GPU node of an NVLink clique runs one IMEX daemon for as long as it is in the clique, ready before
any job arrives; domains attach to these daemons and start none of their own. The daemons of a clique
find each other through the clique's peer object `imex.<clique ID>`, kept by the controller exactly as
a domain's `<domain UID>.<clique ID>` object is in domain mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from computedomain.api import names
from computedomain.api.models import CliqueDaemon, ComputeDomainDaemonConfig
from computedomain.controller.render.daemonset import (
    TOLERATED_EFFECTS,
    daemon_container,
    field_env,
    pod_metadata,
)
from computedomain.controller.settings import Settings
from computedomain.dra.shapes import device_request, opaque_config
from computedomain.dra.versions import resource_api_version

# The DaemonSet, its daemon claim template and their label (see `api.names`).
NAME = names.CLIQUE_DAEMONS_NAME
DAEMONS_LABEL = names.CLIQUE_DAEMONS_LABEL
DAEMONS_VALUE = names.CLIQUE_DAEMONS_VALUE
SELECTOR = names.CLIQUE_DAEMONS_SELECTOR
# The daemon claim's config names no domain: the kubelet plugin gives the claim the daemon's device,
# the clique and a config folder of its own, and looks up no ComputeDomain.
DAEMON_DOMAIN_ID = names.CLIQUE_DAEMON_DOMAIN_ID
# Long-running infrastructure of every GPU node: preempted last, like the node's other agents.
DEFAULT_PRIORITY_CLASS = "system-node-critical"


def labels() -> dict[str, str]:
    """The label every object of the clique daemons carries."""
    return {DAEMONS_LABEL: DAEMONS_VALUE}


def peers_name(clique_id: str) -> str:
    """The name of a clique's peer object (a ComputeDomainClique in the operator's namespace)."""
    return names.clique_peers_name(clique_id)


def daemonset(settings: Settings) -> dict[str, Any]:
    """The DaemonSet of the clique daemons, in the controller's namespace: one pod on every node that
    carries an `nvidia.com/gpu.clique` label, whatever its value."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": labels()},
        "spec": {
            "selector": {"matchLabels": labels()},
            "template": {"metadata": pod_metadata(labels(), settings), "spec": _pod_spec(settings)},
        },
    }


def _pod_spec(settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": names.DAEMON_SERVICE_ACCOUNT,
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": names.GPU_CLIQUE_LABEL, "operator": "Exists"}]}
                    ]
                }
            }
        },
        "tolerations": [{"operator": "Exists", "effect": effect} for effect in TOLERATED_EFFECTS],
        "resourceClaims": [{"name": names.DAEMON_CLAIM, "resourceClaimTemplateName": NAME}],
        "containers": [_container(settings)],
        "priorityClassName": settings.daemon_priority_class or DEFAULT_PRIORITY_CLASS,
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in settings.image_pull_secrets]
    return spec


def _container(settings: Settings) -> dict[str, Any]:
    return daemon_container(settings, _env(settings))


def _env(settings: Settings) -> list[dict[str, Any]]:
    # As the per-domain daemons get it, less the domain's identity, which a clique daemon has none of.
    return [
        {"name": "IMEX_MODE", "value": names.IMEX_MODE_CLIQUE},
        {"name": "LOG_VERBOSITY", "value": str(settings.daemon_log_verbosity)},
        {"name": "LOG_FORMAT", "value": "json" if settings.json_logs else "text"},
        {"name": "MAX_NODES_PER_IMEX_DOMAIN", "value": str(settings.max_nodes_per_clique)},
        field_env("NODE_NAME", "spec.nodeName"),
        field_env("POD_IP", "status.podIP"),
        field_env("POD_UID", "metadata.uid"),
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
        {"name": "FEATURE_GATES", "value": settings.feature_gates},
    ]


def daemon_claim_template(settings: Settings, api_version: str) -> dict[str, Any]:
    """The template of the clique daemons' claims, beside the DaemonSet; its config names the clique
    mode (`domainID: clique`) instead of a domain."""
    config = ComputeDomainDaemonConfig(domain_id=DAEMON_DOMAIN_ID)
    return {
        "apiVersion": resource_api_version(api_version),
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": NAME,
            "namespace": settings.namespace,
            "labels": {**labels(), names.TARGET_LABEL: names.TARGET_DAEMON},
        },
        "spec": {
            "spec": {
                "devices": {
                    "requests": [
                        device_request(names.DAEMON_REQUEST, names.DAEMON_DEVICE_CLASS, api_version)
                    ],
                    "config": [opaque_config(names.DAEMON_REQUEST, names.DRIVER, config.to_parameters())],
                },
            },
        },
    }


def peers_object(settings: Settings, clique_id: str, daemons: Sequence[CliqueDaemon]) -> dict[str, Any]:
    """The peer object of one clique: its daemons (sorted by index, as the clique planner gives them).

    No owner: the clique outlives every domain that uses it.
    """
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CLIQUE_KIND,
        "metadata": {
            "name": peers_name(clique_id),
            "namespace": settings.namespace,
            "labels": {**labels(), names.CLIQUE_LABEL: clique_id},
        },
        "daemons": [daemon.model_dump(mode="json", exclude_none=True) for daemon in daemons],
    }
