"""The operator installed by its Helm chart on real kubelets with real containers.

One network namespace of the bed's own (`cdtestbed.netns`) holds the control plane and N kubelet
nodes, each with its own containerd, runc and CNI bridge (`cdtestbed.kubelets`, runtime
"containerd"). The product image built by `make image` and a stand-in for the example's workload
image are imported into every node's containerd; `helm install` then runs the chart as it ships: the
controller Deployment, the node agent and the kubelet plugin DaemonSets, all as containers. Only what
this machine cannot have is faked, at the lowest boundary: the GPUs (the fake `libnvidia-ml.so` in
each node's driver root, loaded by the real pynvml inside the containers), the driver's device list
and the `nvidia-imex` binaries (the IMEX test doubles, in the same driver root), and the training
program of the example's image (`torchrun`, a script that waits).

Inside each node's mount namespace the kubelet root, CDI folder, driver root and plugin state lie at
one path for all nodes (`KubeletNodes.inside`), so the chart's host-path values are one string.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

from cdtestbed import images
from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.kubeletbed import advertise_gpus
from cdtestbed.kubelets import CONTAINERD, KubeletNode, KubeletNodes, KubeletOptions, ctr
from cdtestbed.netns import NetworkNamespace
from cdtestbed.nodes import wait_nodes_ready
from cdtestbed.pluginprocess import NodeHost
from cdtestbed.tools import Tools, repo_root
from cdtestbed.topology import FakeNode
from fakenvml.config import FakeGpuNode

NAMESPACE = "computedomain-system"
RELEASE = "computedomain-operator"
IMAGE_REPOSITORY = "localhost/computedomain-operator"
# Where, inside a plugin or agent container, the fake library finds the node's GPUs (the chart mounts
# the driver root at /driver-root).
FAKE_NVML_CONF = "fakenvml.conf"
FAKE_PROC_DEVICES = "proc/devices"
CONTAINER_DRIVER_ROOT = "/driver-root"
FATAL_WAITS = (
    "InvalidImageName",
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


class BedError(RuntimeError):
    """The bed could not be brought up; the message says what is missing or which log to read."""


def fake_gpus(node: FakeNode) -> FakeGpuNode:
    """What the fake NVML library reports on `node`: its clique's fabric, or no fabric at all."""
    if not node.clique_id:
        return FakeGpuNode(gpus=node.gpus, fabric=False)
    cluster_uuid, _, clique = node.clique_id.rpartition(".")
    return FakeGpuNode(gpus=node.gpus, cluster_uuid=cluster_uuid, clique_id=int(clique))


def prepare_driver_root(kubelet: KubeletNode) -> NodeHost:
    """The node's fake driver installation (device nodes, NVML library, IMEX doubles; see
    `NodeHost.create`), plus what the containers read from it: the GPUs the fake NVML library reports
    and the kernel's device list."""
    host = NodeHost(kubelet.home / "host")
    host.create()
    fake_gpus(kubelet.node).write(host.driver_root / FAKE_NVML_CONF)
    shutil.copyfile(host.proc_devices, host.driver_root / FAKE_PROC_DEVICES)
    return host


def helm_values(inside: Path, image_tag: str, extra: Mapping[str, str] | None = None) -> list[str]:
    """`--set` arguments: the chart as it ships, pointed at the bed's node paths and the local image,
    plus `extra` chart values (e.g. `imex.mode`)."""
    fake_env = [
        # The fake library reads the node's GPUs from a file in the driver root the chart mounts.
        ("FAKE_NVML_CONFIG", f"{CONTAINER_DRIVER_ROOT}/{FAKE_NVML_CONF}"),
    ]
    plugin_env = [
        *fake_env,
        # No NVIDIA kernel module here: the device majors come from the fake driver root's list.
        ("PROC_DEVICES", f"{CONTAINER_DRIVER_ROOT}/{FAKE_PROC_DEVICES}"),
    ]
    values = {
        "image.repository": IMAGE_REPOSITORY,
        "image.tag": image_tag,
        "kubeletPlugin.kubeletRootDir": str(inside / "kubelet"),
        "kubeletPlugin.cdiRoot": str(inside / "cdi"),
        "kubeletPlugin.driverRoot": str(inside / "driver"),
        "kubeletPlugin.stateDir": str(inside / "plugin-state"),
        "nodeAgent.driverRoot": str(inside / "driver"),
        **(extra or {}),
    }
    args = [f"--set={key}={value}" for key, value in values.items()]
    for component, env in (("kubeletPlugin", plugin_env), ("nodeAgent", fake_env)):
        for index, (name, value) in enumerate(env):
            args += [
                f"--set={component}.env[{index}].name={name}",
                f"--set={component}.env[{index}].value={value}",
            ]
    return args


@dataclass
class ContainerBed:
    """Everything running for the operator on real containers."""

    cluster: LocalCluster
    network: NetworkNamespace
    kubelets: KubeletNodes
    api: client.ApiClient
    image_tag: str
    # Chart values beyond the bed's own, as `--set key=value`.
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[KubeletNode]:
        """The kubelet nodes, in the order given."""
        return list(self.kubelets.running)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the bed (from the machine's own namespace, through the forwarder)."""
        result = subprocess.run(
            [str(self.cluster.tools.bin("kubectl")), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise BedError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def exec_in(self, namespace: str, pod: str, script: str) -> str:
        """Run `sh -c script` in the pod's first container (`kubectl exec`) and return its output."""
        return self.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c", script).stdout

    def helm_install(self) -> None:
        """`helm install` the chart as it ships, with the bed's values."""
        chart = repo_root() / "charts" / "computedomain-operator"
        args = [
            str(self.cluster.tools.bin("helm")),
            f"--kubeconfig={self.cluster.kubeconfig}",
            "install",
            RELEASE,
            str(chart),
            f"--namespace={NAMESPACE}",
            "--create-namespace",
            *helm_values(self.kubelets.inside, self.image_tag, self.values),
        ]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BedError(f"helm install failed: {result.stderr.strip()}")

    def containers(self, node: KubeletNode) -> list[dict[str, Any]]:
        """The node's containers as containerd lists them (k8s.io namespace): id, image, labels."""
        tools, socket = self.cluster.tools, node.runtime_socket
        found = []
        for cid in ctr(tools, socket, "containers", "ls", "-q").stdout.split():
            # A container removed between the listing and this look is simply gone.
            info = ctr(tools, socket, "containers", "info", cid, check=False)
            if info.returncode == 0:
                found.append(json.loads(info.stdout))
        return found

    async def stuck_containers(self, namespace: str = NAMESPACE) -> list[str]:
        """Containers of `namespace` that wait for a reason no wait will cure (a wrong image name, an
        image not imported), or that keep crashing: "pod/container: reason: message"."""
        pods = (await client.CoreV1Api(self.api).list_namespaced_pod(namespace)).items
        found = []
        for pod in pods:
            statuses = [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
            for status in statuses:
                waiting = status.state.waiting if status.state else None
                if waiting is None:
                    continue
                if waiting.reason in FATAL_WAITS or (
                    waiting.reason == "CrashLoopBackOff" and status.restart_count >= 3
                ):
                    found.append(
                        f"{pod.metadata.name}/{status.name}: {waiting.reason}: {waiting.message or ''}"
                    )
        return found

    async def wait_components(self, timeout: float = 240.0) -> None:
        """Until the chart's workloads run: the plugin and agent on every node, the controller's replicas."""
        apps = client.AppsV1Api(self.api)
        deadline = time.monotonic() + timeout
        want = len(self.nodes)
        while True:
            daemonsets = (await apps.list_namespaced_daemon_set(NAMESPACE)).items
            deployments = (await apps.list_namespaced_deployment(NAMESPACE)).items
            ds_ready = {
                d.metadata.labels.get("app.kubernetes.io/component"): (d.status.number_ready or 0)
                for d in daemonsets
            }
            dep_ready = {
                d.metadata.labels.get("app.kubernetes.io/component"): (
                    d.status.ready_replicas or 0,
                    d.spec.replicas,
                )
                for d in deployments
            }
            controller = dep_ready.get("controller", (0, 1))
            if (
                ds_ready.get("node-agent") == want
                and ds_ready.get("kubelet-plugin") == want
                and controller[0] == controller[1]
            ):
                return
            stuck = await self.stuck_containers()
            if stuck or time.monotonic() > deadline:
                pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
                why = "; ".join(stuck) or f"after {timeout:.0f}s"
                raise BedError(
                    f"the chart's workloads are not ready ({why}): daemonsets {ds_ready}, "
                    f"deployments {dep_ready}\n{pods}\nlogs: {self.cluster.logs}"
                )
            await asyncio.sleep(1.0)


def image_archives() -> tuple[Path, Path, str]:
    """The product image and the workload stand-in (OCI archives, built if needed) and the image tag."""
    product, tag = images.product_image()
    return product, images.workload_image(product), tag


@contextlib.asynccontextmanager
async def container_bed(
    workdir: Path,
    trays: Sequence[FakeNode],
    *,
    tie_to_parent: bool = True,
    install: bool = True,
    values: Mapping[str, str] | None = None,
) -> AsyncIterator[ContainerBed]:
    """Start the bed for `trays`, install the chart (unless `install` is False) with `values` beyond the
    bed's own, yield it, stop it.

    With `tie_to_parent=False` nothing is stopped at the end (the demo keeps it for a person to explore;
    `make cluster-down` stops it).
    """
    tools = Tools.default()
    product, workload, tag = await asyncio.to_thread(image_archives)
    os.makedirs(workdir / "logs", exist_ok=True)
    network = NetworkNamespace(workdir / "logs" / "netns.log", tie_to_parent=tie_to_parent)
    network.start()
    cluster = LocalCluster(workdir, tools, ClusterOptions(tie_to_parent=tie_to_parent), network=network)
    kubelets = KubeletNodes(
        cluster,
        trays,
        KubeletOptions(
            runtime=CONTAINERD,
            network=network,
            images=(product, workload),
            start_timeout=120.0,
            tie_to_parent=tie_to_parent,
        ),
    )
    try:
        await asyncio.to_thread(cluster.start)
        await asyncio.to_thread(kubelets.start)
        async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
            bed = ContainerBed(cluster, network, kubelets, api, tag, dict(values or {}))
            for kubelet in kubelets.running:
                prepare_driver_root(kubelet)
            await wait_nodes_ready(api, [t.name for t in trays])
            await advertise_gpus(api, trays)
            if install:
                await asyncio.to_thread(bed.helm_install)
                await bed.wait_components()
            yield bed
    finally:
        if tie_to_parent:
            await asyncio.to_thread(kubelets.stop)
            await asyncio.to_thread(cluster.stop)
            network.stop()
