"""Every name the operator shares with the outside world: API group, label keys, finalizer, child names.

These strings are a contract with NVIDIA's ComputeDomain kubelet plugin, daemon and with users'
tooling; changing one breaks compatibility. No other module spells them out.
"""

from __future__ import annotations

GROUP = "resource.nvidia.com"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"

DOMAIN_KIND = "ComputeDomain"
DOMAIN_PLURAL = "computedomains"
CLIQUE_KIND = "ComputeDomainClique"
CLIQUE_PLURAL = "computedomaincliques"
CHANNEL_CONFIG_KIND = "ComputeDomainChannelConfig"
DAEMON_CONFIG_KIND = "ComputeDomainDaemonConfig"

# Labels. The domain label's value is always the ComputeDomain's metadata.uid.
DOMAIN_LABEL = "resource.nvidia.com/computeDomain"
CLIQUE_LABEL = "resource.nvidia.com/computeDomain.cliqueID"
TARGET_LABEL = "resource.nvidia.com/computeDomainTarget"
TARGET_DAEMON = "Daemon"
TARGET_WORKLOAD = "Workload"
GPU_CLIQUE_LABEL = "nvidia.com/gpu.clique"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"

# Annotations of the claims generated from a domain's two ResourceClaimTemplates: where the domain
# is, so that a node's kubelet plugin finds it with one narrow read (a daemon claim lives in the
# operator's namespace, not in the domain's). The plugin checks the domain's UID before it trusts them.
DOMAIN_NAMESPACE_ANNOTATION = "resource.nvidia.com/computeDomainNamespace"
DOMAIN_NAME_ANNOTATION = "resource.nvidia.com/computeDomainName"

FINALIZER = "resource.nvidia.com/computeDomain"

# Dynamic Resource Allocation.
DRIVER = "compute-domain.nvidia.com"
DAEMON_DEVICE_CLASS = "compute-domain-daemon.nvidia.com"
CHANNEL_DEVICE_CLASS = "compute-domain-default-channel.nvidia.com"
DAEMON_REQUEST = "daemon"
CHANNEL_REQUEST = "channel"
DAEMON_CLAIM = "compute-domain-daemon"

DAEMON_SERVICE_ACCOUNT = "compute-domain-daemon-service-account"
DAEMON_CONTAINER = "compute-domain-daemon"

# Server-side apply field manager for everything the controller writes.
FIELD_MANAGER = "computedomain-operator"
# The node agent's own field manager, so its label never mixes with the controller's.
AGENT_FIELD_MANAGER = "computedomain-node-agent"

DEFAULT_MAX_NODES_PER_CLIQUE = 18

# Clique mode: the IMEX mode a domain was reconciled under, on the domain itself, so that a
# controller started in the other mode leaves it alone instead of rebuilding it.
IMEX_MODE_ANNOTATION = "resource.nvidia.com/imexMode"
IMEX_MODE_DOMAIN = "domain"
IMEX_MODE_CLIQUE = "clique"

# Clique mode's long-running IMEX daemons: their DaemonSet (and its daemon claim template) in the
# operator's namespace, the label on it, its pods, its template and the clique peer objects (no domain
# label, so nothing of a domain's bookkeeping sees them), and the `domainID` of their claim config,
# which names the mode, not a domain.
CLIQUE_DAEMONS_NAME = "computedomain-clique-daemons"
CLIQUE_DAEMONS_LABEL = "resource.nvidia.com/imexDaemons"
CLIQUE_DAEMONS_VALUE = IMEX_MODE_CLIQUE
CLIQUE_DAEMONS_SELECTOR = f"{CLIQUE_DAEMONS_LABEL}={CLIQUE_DAEMONS_VALUE}"
CLIQUE_DAEMON_DOMAIN_ID = IMEX_MODE_CLIQUE
_CLIQUE_PEERS_PREFIX = "imex."


def clique_peers_name(clique_id: str) -> str:
    """The name of a clique's peer object in clique mode (a ComputeDomainClique, no owner)."""
    return f"{_CLIQUE_PEERS_PREFIX}{clique_id}"


# The driver's channel count (/dev/nvidia-caps-imex-channels/channel0..2047).
DEFAULT_IMEX_CHANNELS = 2048
IMEX_HOST_PREFIX = "compute-domain-daemon-"


def daemon_name(domain_uid: str) -> str:
    """Name of the per-domain DaemonSet and of its daemon ResourceClaimTemplate."""
    return f"computedomain-daemon-{domain_uid}"


def clique_name(domain_uid: str, clique_id: str) -> str:
    """Name of the ComputeDomainClique of one domain in one NVLink clique."""
    return f"{domain_uid}.{clique_id}"


def imex_host(index: int) -> str:
    """The stable IMEX peer name of the daemon holding `index` in its clique."""
    return f"{IMEX_HOST_PREFIX}{index:04d}"


# The reasons of the kubelet plugin's Events on workload pods, read back by `kubectl computedomain`.
PLUGIN_WAITING_FOR_DAEMON = "WaitingForIMEXDaemon"
PLUGIN_DAEMON_NOT_READY = "IMEXDaemonNotReady"
PLUGIN_NO_CLIQUE = "NoNVLinkClique"
# Clique mode: the pod waits for its domain's channel in the node's clique (and the clique's daemon).
PLUGIN_WAITING_FOR_CHANNEL = "WaitingForIMEXChannel"
PLUGIN_CHANNEL_NOT_READY = "IMEXChannelNotReady"
# The oldest driver whose nvidia-imex reads our config; the kubelet plugin refuses to start below it.
MINIMUM_DRIVER_VERSION = "570.158.01"
# The IMEX daemon's readiness, kept in its config folder: written by the daemon, read by the kubelet
# plugin's gate and by the daemon's start and readiness probes.
IMEX_STATE_FILE = "imex-state.json"
