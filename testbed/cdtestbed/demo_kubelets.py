"""The demo on real kubelet nodes: examples/01-single-rack, applied unchanged, on four real kubelets
(GB200 trays of one NVLink clique) with the real kubelet plugin and no ResourceSlice double, then
what each container received from its claims, as the nodes' container runtime resolved their CDI
devices. Everything it starts stops when it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from kubernetes_asyncio import client, config

from cdtestbed.cluster import LocalCluster
from cdtestbed.demo import EXAMPLE, apply_example, watch_domain
from cdtestbed.kubeletbed import NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.kubelets import KubeletNode
from cdtestbed.topology import FakeNode, nvl72_racks
from computedomain.api import names

TRAYS: list[FakeNode] = nvl72_racks(1, 4, prefix="gb200")
EXAMPLE_NAMESPACE = "team-a"
# Shown per container: what its CDI devices added (the daemon's full environment is long).
SHOWN_ENV = ("CLIQUE_ID", "COMPUTE_DOMAIN_UUID", "IMEX_CONFIG_DIR")


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def describe_device(device: dict[str, Any]) -> str:
    """`/dev/... (c 234:0)`."""
    return f"{device['path']} ({device['type']} {device['major']}:{device['minor']})"


def received(record: dict[str, Any]) -> list[str]:
    """Lines saying what one container received through CDI: device nodes, added environment, mounts."""
    resolution = record["cdi"]
    nodes = resolution["deviceNodes"]
    lines = [describe_device(d) for d in nodes[:3]]
    if len(nodes) > 3:
        lines.append(f"... {len(nodes)} device nodes in all")
    if not nodes:
        lines.append("no device nodes")
    lines += [f"env {kv}" for kv in resolution["addedEnv"] if kv.split("=", 1)[0] in SHOWN_ENV]
    lines += [f"mount {m['containerPath']} <- {m['hostPath']}" for m in resolution["mounts"]]
    return lines


def print_received(nodes: Sequence[KubeletNode], namespace: str, container: str | None = None) -> None:
    """One block per container of `namespace` (named `container`, if given) that the runtimes created."""
    for node in nodes:
        for record in node.records(namespace):
            if container is not None and record["container"] != container:
                continue
            print(
                f"{node.name}  {record['podNamespace']}/{record['podName']}  container {record['container']}"
            )
            for line in received(record):
                print(f"    {line}")


async def wait_job_running(api: client.ApiClient, timeout: float = 120.0) -> list[client.V1Pod]:
    """The example's four Job pods, once all run."""
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        pods = (await core.list_namespaced_pod(EXAMPLE_NAMESPACE, label_selector="job-name")).items
        if len(pods) == 4 and all(p.status.phase == "Running" for p in pods):
            return list(pods)
        if time.monotonic() > deadline:
            raise TimeoutError("the example's Job pods did not all start")
        await asyncio.sleep(0.5)


async def print_nodes(api: client.ApiClient, bed: KubeletBed) -> None:
    """Each node: kubelet version, clique, and the devices its plugin published."""
    custom = client.CustomObjectsApi(api)
    print(f"{'NODE':<14} {'KUBELET':<9} {'PLUGIN':<11} DEVICES PUBLISHED")
    for node in bed.nodes:
        live = await client.CoreV1Api(api).read_node(node.name)
        slices = await custom.list_cluster_custom_object(
            "resource.k8s.io", "v1", "resourceslices", field_selector=f"spec.nodeName={node.name}"
        )
        devices = [d["name"] for s in slices["items"] for d in s["spec"].get("devices", [])]
        registered = bed.plugins[node.name].metric("computedomain_plugin_registered") == 1
        plugin = "registered" if registered else "waiting"
        print(f"{node.name:<14} {live.status.node_info.kubelet_version:<9} {plugin:<11} {', '.join(devices)}")


async def run(cluster: LocalCluster) -> None:
    """Everything after the control plane is up (the caller starts and stops it)."""
    async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
        _step(
            f"Start {len(TRAYS)} real kubelet nodes (GB200 trays, one clique), the chart's objects, "
            "the kubelet plugin on each node and the controller"
        )
        started = time.monotonic()
        async with kubelet_bed(cluster, api, TRAYS) as bed:
            elapsed = time.monotonic() - started
            print(f"ready in {elapsed:.1f}s; no ResourceSlice double: each node's slice is its plugin's")
            await print_nodes(api, bed)
            _step(f"Apply {EXAMPLE} unchanged (a ComputeDomain and a 4-node training Job)")
            await apply_example(api)
            _step("Watch the domain: channels allocated, IMEX daemons started and Ready, pods prepared")
            await watch_domain(api)
            await wait_job_running(api)
            _step("What each Job container received (the runtime's CDI resolution of its claim)")
            print_received(bed.nodes, EXAMPLE_NAMESPACE)
            _step("What each IMEX daemon container received (its daemon claim's CDI edits)")
            print_received(bed.nodes, NAMESPACE, names.DAEMON_CONTAINER)
            _step("Pods")
            pods = await client.CoreV1Api(api).list_pod_for_all_namespaces()
            for pod in sorted(pods.items, key=lambda p: (p.metadata.namespace, p.metadata.name)):
                ready = all(c.ready for c in pod.status.container_statuses or [])
                print(
                    f"{pod.metadata.namespace:<22} {pod.metadata.name:<48} {pod.status.phase:<8} "
                    f"{'Ready' if ready else 'NotReady':<8} {pod.spec.node_name}"
                )
            print(f"\nLogs: {cluster.logs}; the demo stops its nodes and control plane now.")
            print(f"(demo ran for {time.monotonic() - started:.0f}s after the control plane was up)")
