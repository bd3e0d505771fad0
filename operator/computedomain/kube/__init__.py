"""One Kubernetes client layer for every program: REST calls, server-side apply, patches, one error
type, Events, informers and one retry policy.

Nothing here imports a program (controller, agent, daemon, plugin): what a program wants to know of
each call (the controller's write metric) it passes in as a hook.
"""

from computedomain.kube.client import APPLY, JSON_PATCH, MERGE, Kube, ReceiveHook, WriteHook, identify
from computedomain.kube.errors import NAMESPACE_TERMINATING, KubeError, WatchExpired, is_transient
from computedomain.kube.kinds import (
    CLIQUES,
    DAEMONSETS,
    DOMAINS,
    EVENTS,
    LEASES,
    NODES,
    PODS,
    Kind,
    claim_templates,
    claims,
    device_classes,
    resource_slices,
)
from computedomain.objects import Object

__all__ = [
    "APPLY",
    "CLIQUES",
    "DAEMONSETS",
    "DOMAINS",
    "EVENTS",
    "JSON_PATCH",
    "LEASES",
    "MERGE",
    "NAMESPACE_TERMINATING",
    "NODES",
    "PODS",
    "Kind",
    "Kube",
    "KubeError",
    "Object",
    "ReceiveHook",
    "WatchExpired",
    "WriteHook",
    "claim_templates",
    "claims",
    "device_classes",
    "identify",
    "is_transient",
    "resource_slices",
]
