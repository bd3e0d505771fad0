"""A node for the kubelet plugin on the real API server: a Node object no kubelet runs, the node's
files, the plugin running in the test's process, and the objects a scheduler and kubelets would write.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import DOMAINS, NODES, PODS, Kind, Kube, claims, resource_slices
from computedomain.plugin.app import Plugin
from computedomain.plugin.kubelet.health import StaticHealth
from computedomain.plugin.settings import PluginSettings
from support import pluginkubelet
from support.plugindriver import install_imex_tools
from support.pluginview import PROC_DEVICES
from support.waiting import eventually

VERSION = "v1"
CLIQUE = "7d9c0f3e-1111-4222-8333-944455556666.3"
NOT_READY_TOLERATIONS = [
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
]
Object = dict[str, Any]


@dataclass
class RunningPlugin:
    node: str
    node_uid: str
    root: Path
    settings: PluginSettings
    plugin: Plugin
    kube: Kube

    @property
    def cdi(self) -> Path:
        return self.settings.cdi_root

    def spec(self, claim_uid: str) -> Path:
        return self.cdi / f"k8s.compute-domain.nvidia.com-claim_{claim_uid}.json"


@pytest_asyncio.fixture
async def kube(api: client.ApiClient) -> AsyncIterator[Kube]:
    kube = Kube(connection_of(api), field_manager="plugin-test")
    yield kube
    await kube.close()


@asynccontextmanager
async def start_plugin(
    api: client.ApiClient,
    kube: Kube,
    node: str,
    node_uid: str,
    root: Path,
    operator_namespace: str,
    env: dict[str, str] | None = None,
    *,
    register: bool = True,
) -> AsyncIterator[RunningPlugin]:
    """Run the plugin in this process on files under `root` until the block ends (`env`: settings
    beyond the bed's).

    With `register`, the test plays the kubelet's registration and the block starts once the plugin is
    ready (its slice published); without, it starts once the plugin serves, unregistered.
    """
    settings = PluginSettings.from_env(
        {
            "NODE_NAME": node,
            "NAMESPACE": operator_namespace,
            "KUBELET_ROOT_DIR": str(root / "kubelet"),
            "CDI_ROOT": str(root / "cdi"),
            "DRIVER_ROOT": str(root / "driver"),
            "PROC_DEVICES": str(root / "proc" / "devices"),
            "BOOT_ID_FILE": str(root / "boot_id"),
            "STATE_DIR": str(root / "state"),
            "HTTP_PORT": "0",
            "PREPARE_WAIT_SECONDS": "20",
            "EVENT_INTERVAL_SECONDS": "1",
            **(env or {}),
        }
    )
    plugin = Plugin(settings, connection_of(api), health=StaticHealth())
    task = asyncio.create_task(plugin.run())

    def running() -> None:
        if task.done():
            raise AssertionError(f"plugin exited with {task.result()}")

    async def serving() -> bool:
        running()
        return plugin.serving.is_set()

    async def ready() -> bool:
        running()
        return plugin.readiness()[0]

    try:
        await eventually(serving, timeout=60, what="plugin serving")
        if register:
            await pluginkubelet.register(settings.registration_socket)
            await eventually(ready, timeout=30, what="plugin ready")
        yield RunningPlugin(node, node_uid, root, settings, plugin, kube)
    finally:
        plugin.stop.set()
        assert await asyncio.wait_for(task, 30) == 0


@pytest_asyncio.fixture
async def node_root() -> AsyncIterator[Path]:
    """A node's files (short path: sockets): /proc/devices, boot ID, the driver's capability, IMEX tools."""
    with tempfile.TemporaryDirectory(prefix="cdp-", dir="/tmp") as scratch:
        root = Path(scratch)
        (root / "proc").mkdir()
        (root / "proc" / "devices").write_text(PROC_DEVICES)
        (root / "boot_id").write_text("boot-a\n")
        caps = root / "driver" / "proc" / "driver" / "nvidia" / "capabilities"
        caps.mkdir(parents=True)
        (caps / "fabric-imex-mgmt").write_text("DeviceFileMinor: 7\n")
        # A daemon claim on a node with a clique fails without the driver's IMEX tools.
        install_imex_tools(root)
        yield root


@pytest_asyncio.fixture
async def node(kube: Kube) -> AsyncIterator[tuple[str, str]]:
    """A Node object of its own, in a clique, that no kubelet runs: (name, uid)."""
    name = f"plugin-{uuid.uuid4().hex[:6]}"
    labels = {names.GPU_CLIQUE_LABEL: CLIQUE, names.GPU_PRESENT_LABEL: "true"}
    created = await kube.create(
        NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    )
    yield name, created["metadata"]["uid"]
    with contextlib.suppress(Exception):
        await kube.delete(resource_slices(VERSION), slice_name(name))
    await kube.delete(NODES, name)


async def create_domain(kube: Kube, namespace: str, name: str = "cd") -> Object:
    return await kube.create(
        DOMAINS,
        {
            "apiVersion": names.API_VERSION,
            "kind": names.DOMAIN_KIND,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
        },
    )


async def allocated_claim(
    kube: Kube, namespace: str, name: str, node: str, device: str, parameters: Object
) -> tuple[Object, Object]:
    """A ResourceClaim with `device` allocated on `node` for a pod that uses it (`<name>-pod`).

    Written as the scheduler would: the allocation, and the pod in `reservedFor`.
    """
    request = "channel" if device.startswith("channel") else "daemon"
    device_class = names.CHANNEL_DEVICE_CLASS if request == "channel" else names.DAEMON_DEVICE_CLASS
    opaque = {"driver": names.DRIVER, "parameters": parameters}
    claim = await kube.create(
        claims(VERSION),
        {
            "apiVersion": f"resource.k8s.io/{VERSION}",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "devices": {
                    "requests": [{"name": request, "exactly": {"deviceClassName": device_class}}],
                    "config": [{"requests": [request], "opaque": opaque}],
                }
            },
        },
    )
    consumer = await pod(kube, namespace, f"{name}-pod", node, claim=name)
    claim["status"] = {
        "allocation": {
            "devices": {
                "results": [{"request": request, "driver": names.DRIVER, "pool": node, "device": device}],
                "config": [{"source": "FromClaim", "requests": [request], "opaque": opaque}],
            },
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
        },
        "reservedFor": [{"resource": "pods", "name": f"{name}-pod", "uid": consumer["metadata"]["uid"]}],
    }
    allocated = await kube.call("PUT", claims(VERSION).path(namespace, name, "status"), body=claim)
    return allocated, consumer


SERVICE_ACCOUNTS = Kind("", "v1", "serviceaccounts", True)


async def pod(
    kube: Kube,
    namespace: str,
    name: str,
    node: str,
    labels: dict[str, str] | None = None,
    claim: str | None = None,
) -> Object:
    """A pod bound to `node` (which nothing runs), using `claim` if given."""
    container: Object = {"name": "c", "image": "registry.example/none:1"}
    metadata: Object = {"name": name, "namespace": namespace, "labels": labels or {}}
    if labels and names.DOMAIN_LABEL in labels:
        # A stand-in for a domain's IMEX daemon. Where a controller runs beside the test, the domain's
        # DaemonSet would adopt a pod matching its selector and delete it as surplus on its node; a
        # controller reference of its own (to an object that lives as long as the namespace) keeps
        # it out of that DaemonSet's reach.
        account = await kube.get(SERVICE_ACCOUNTS, "default", namespace)
        assert account is not None, f"namespace {namespace} has no default ServiceAccount"
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "name": "default",
                "uid": account["metadata"]["uid"],
                "controller": True,
            }
        ]
    spec: Object = {"nodeName": node, "tolerations": NOT_READY_TOLERATIONS, "containers": [container]}
    if claim:
        spec["resourceClaims"] = [{"name": "imex", "resourceClaimName": claim}]
        container["resources"] = {"claims": [{"name": "imex"}]}
    return await kube.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": spec,
        },
    )


async def delete_all(kube: Kube, namespace: str, objects: list[Object]) -> None:
    """Delete claims and pods a test made outside its own namespace."""
    for obj in objects:
        kind = PODS if obj["kind"] == "Pod" else claims(VERSION)
        await kube.delete(kind, obj["metadata"]["name"], namespace)


async def set_ready(kube: Kube, obj: Object) -> None:
    meta = obj["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        }
    }
    await kube.patch(PODS, meta["name"], meta["namespace"], status, subresource="status")


def ref(claim: Object) -> tuple[str, str, str]:
    meta = claim["metadata"]
    return meta["namespace"], meta["name"], meta["uid"]
