"""What a real kubelet node of the test bed is told: its KubeletConfiguration, its node labels and
the script that isolates it from the host's sysctls. Pure rendering, no processes."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cdtestbed.topology import FakeNode
from computedomain.api import names

# Host sysctls the kubelet rewrites at start (container manager and kernel tunables). Each kubelet
# sees a scratch copy instead, bind-mounted in its private mount namespace.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Host directories the kubelet writes into whatever its flags say (/var/log/containers holds a
# link per container); each kubelet gets an empty scratch directory over them instead.
KUBELET_SCRATCH_DIRS = ("/var/log",)
NODE_TYPE_LABEL = "type"
NODE_TYPE = "kubelet"


def kubelet_configuration(
    *,
    address: str = "127.0.0.1",
    port: int,
    healthz_port: int,
    runtime_socket: Path,
    pod_logs_dir: Path,
    volume_plugin_dir: Path,
    client_ca: Path,
) -> dict[str, Any]:
    """A KubeletConfiguration (v1beta1) that runs on a shared test machine without touching it.

    cgroup v1 is accepted and no cgroup hierarchy is built; authentication and authorization are
    open because the kubelet listens on loopback only; eviction thresholds are tiny so that a busy
    shared disk does not evict test pods.
    """
    endpoint = f"unix://{runtime_socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": port,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "readOnlyPort": 0,
        "failCgroupV1": False,
        "failSwapOn": False,
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False,
        "resolvConf": "",
        "podLogsDir": str(pod_logs_dir),
        # The default lives under /usr/libexec, which the kubelet would create on the host.
        "volumePluginDir": str(volume_plugin_dir),
        # Leave the test runner's OOM score alone (the kubelet lowers its own to -999 by default).
        "oomScoreAdj": 0,
        "serializeImagePulls": False,
        "registerNode": True,
    }


def node_labels(node: FakeNode) -> dict[str, str]:
    """The labels a GPU tray of `node`'s shape carries (what GPU feature discovery would set).

    The kubelet sets kubernetes.io/{arch,os,hostname} itself, and refuses most other
    kubernetes.io labels in --node-labels.
    """
    labels = {
        NODE_TYPE_LABEL: NODE_TYPE,
        names.GPU_PRESENT_LABEL: "true",
        names.GPU_PRODUCT_LABEL: node.product,
        names.GPU_COUNT_LABEL: str(node.gpus),
        **node.extra_labels,
    }
    if node.clique_id:
        labels[names.GPU_CLIQUE_LABEL] = node.clique_id
    return labels


def labels_flag(labels: Mapping[str, str]) -> str:
    """The value of --node-labels."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def namespace_script(
    scratch: Path,
    ready: Path,
    sysctls: Sequence[str] = KUBELET_SYSCTLS,
    directories: Sequence[str] = KUBELET_SCRATCH_DIRS,
    first: str = "",
) -> str:
    """The shell script that holds a kubelet node's private mount namespace open.

    It bind-mounts a scratch copy over each sysctl the kubelet writes (those missing on this kernel
    are skipped) and an empty scratch directory over each of `directories`, marks itself ready,
    then sleeps until it is stopped; the kubelet and its runtime then join the namespace with nsenter.
    `first` is a script run before all that (a real runtime's node mounts).
    """
    lines = ["set -eu"]
    if first:
        lines.append(first)
    for sysctl in sysctls:
        proc = f"/proc/sys/{sysctl}"
        copy = shlex.quote(str(scratch / sysctl.replace("/", ".")))
        lines.append(f"if [ -e {proc} ]; then cat {proc} > {copy}; mount --bind {copy} {proc}; fi")
    for directory in directories:
        copy = shlex.quote(str(scratch / directory.strip("/").replace("/", ".")))
        lines.append(f"if [ -d {directory} ]; then mkdir -p {copy}; mount --bind {copy} {directory}; fi")
    lines += [f"touch {shlex.quote(str(ready))}", "exec sleep infinity"]
    return "\n".join(lines)
