"""For tests on real kubelet nodes: whether they may be skipped here, and what the nodes recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from cdtestbed.kubelets import KubeletNode, can_run_containers, can_run_kubelet
from computedomain.api import names
from support.waiting import eventually

# Set (to 1) where real kubelets must run, as in CI: a machine that cannot run them fails the tests
# that need them instead of skipping them.
REQUIRE_KUBELETS = "CD_REQUIRE_KUBELETS"
CDI_VENDOR = "k8s.compute-domain.nvidia.com"
RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSION = "v1"


def require_kubelets() -> None:
    """Skip the calling test (or fail it, where CD_REQUIRE_KUBELETS=1) when kubelets cannot run here."""
    require(can_run_kubelet(), "real kubelets")


def require_containers() -> None:
    """The same for real containers (containerd, runc and CNI under real kubelets)."""
    require(can_run_containers(), "real containers")


def require(reason: str | None, what: str) -> None:
    """Skip (or fail, where CD_REQUIRE_KUBELETS=1) when `reason` says why `what` cannot run here."""
    if reason is None:
        return
    if os.environ.get(REQUIRE_KUBELETS, "") not in ("", "0"):
        pytest.fail(f"{REQUIRE_KUBELETS} is set, but {what} cannot run here: {reason}")
    pytest.skip(f"cannot run {what}: {reason}")


def cdi_spec(node: KubeletNode, claim_uid: str) -> Path:
    """Where the plugin writes the CDI spec of a claim on `node`."""
    return node.cdi_dir / f"{CDI_VENDOR}-claim_{claim_uid}.json"


def cdi_specs(node: KubeletNode) -> list[Path]:
    """Every claim spec in the node's CDI folder."""
    return sorted(node.cdi_dir.glob(f"{CDI_VENDOR}-claim_*.json"))


def channel_node(minor: int, major: int = 234) -> dict[str, Any]:
    """An IMEX channel device node as the runtime double records it."""
    return {
        "path": f"/dev/nvidia-caps-imex-channels/channel{minor}",
        "type": "c",
        "major": major,
        "minor": minor,
        "fileMode": "0666",
    }


def container_record(node: KubeletNode, namespace: str, pod: str, container: str) -> dict[str, Any]:
    """The newest record of one container of a pod on `node`."""
    found = [r for r in node.records(namespace, pod) if r["container"] == container]
    assert found, f"no container {container} of {namespace}/{pod} recorded on {node.name}"
    return found[-1]


async def claim_uid(api: client.ApiClient, namespace: str, name: str) -> str:
    """The UID of a ResourceClaim."""
    claim = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims", name
    )
    return str(claim["metadata"]["uid"])


async def pod_claim_uids(api: client.ApiClient, pod: client.V1Pod) -> list[str]:
    """The UIDs of the claims generated or named for a pod."""
    statuses = pod.status.resource_claim_statuses or []
    return [await claim_uid(api, pod.metadata.namespace, s.resource_claim_name) for s in statuses]


async def node_slices(api: client.ApiClient, node: str) -> dict[str, str]:
    """name -> UID of the node's ResourceSlices of the ComputeDomain driver."""
    listing = await client.CustomObjectsApi(api).list_cluster_custom_object(
        RESOURCE_GROUP,
        RESOURCE_VERSION,
        "resourceslices",
        field_selector=f"spec.nodeName={node},spec.driver={names.DRIVER}",
    )
    return {s["metadata"]["name"]: s["metadata"]["uid"] for s in listing["items"]}


async def events_of(api: client.ApiClient, namespace: str, pod: str) -> list[client.CoreV1Event]:
    """The Events about one pod."""
    listing = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod}"
    )
    return list(listing.items)


async def wait_event(
    api: client.ApiClient, namespace: str, pod: str, reason: str, timeout: float = 90.0
) -> client.CoreV1Event:
    """The first Event of `reason` about the pod, once there is one."""

    async def probe() -> client.CoreV1Event | None:
        return next((e for e in await events_of(api, namespace, pod) if e.reason == reason), None)

    found: client.CoreV1Event = await eventually(
        probe, timeout=timeout, interval=0.5, what=f"{reason} on {pod}"
    )
    return found


async def wait_running(
    api: client.ApiClient, namespace: str, name: str, timeout: float = 120.0
) -> client.V1Pod:
    """The pod, once its containers run."""
    core = client.CoreV1Api(api)

    async def probe() -> client.V1Pod | None:
        pod = await core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" else None

    found: client.V1Pod = await eventually(probe, timeout=timeout, interval=0.5, what=f"pod {name} Running")
    return found
