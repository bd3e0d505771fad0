"""A channel claim prepared on a GPU node without an NVLink clique label, on the real API server.

The test plays the kubelet (the plugin's gRPC services), the scheduler (the claim's allocation) and the
IMEX daemon's kubelet (the daemon pod's Ready condition), as in `test_plugin_kubelet.py`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import EVENTS, NODES, PODS, Kube, resource_slices
from support.pluginbed import (
    VERSION,
    Object,
    allocated_claim,
    create_domain,
    kube,
    node_root,
    pod,
    ref,
    set_ready,
    start_plugin,
)
from support.pluginkubelet import kubelet
from support.pluginview import channel_config
from support.waiting import eventually

pytestmark = pytest.mark.cluster

__all__ = ["kube", "node_root"]  # fixtures


@pytest_asyncio.fixture
async def gpu_node_without_clique(kube: Kube) -> AsyncIterator[tuple[str, str]]:
    """A GPU node (`nvidia.com/gpu.present=true`) with no `nvidia.com/gpu.clique` label: (name, uid)."""
    name = f"noclique-{uuid.uuid4().hex[:6]}"
    created = await kube.create(
        NODES,
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {names.GPU_PRESENT_LABEL: "true"}},
        },
    )
    yield name, created["metadata"]["uid"]
    with contextlib.suppress(Exception):
        await kube.delete(resource_slices(VERSION), slice_name(name))
    await kube.delete(NODES, name)


async def test_the_pod_is_warned_that_it_gets_no_channel(
    api: client.ApiClient,
    kube: Kube,
    gpu_node_without_clique: tuple[str, str],
    node_root: Path,
    namespace: str,
    operator_ready: str,
) -> None:
    node = gpu_node_without_clique[0]
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    claim, worker = await allocated_claim(
        kube, namespace, "worker-0-channel", node, "channel-0", channel_config(uid)
    )
    daemon = await pod(
        kube, operator_ready, f"daemon-{uuid.uuid4().hex[:6]}", node, {names.DOMAIN_LABEL: uid}
    )
    # Without a clique the IMEX daemon idles and its probe passes at once.
    await set_ready(kube, daemon)
    try:
        async with (
            start_plugin(api, kube, *gpu_node_without_clique, node_root, operator_ready) as plugin,
            kubelet(plugin.settings.registration_socket) as kl,
        ):
            answer = (await kl.prepare([ref(claim)]))[claim["metadata"]["uid"]]

            assert answer.error == ""
            assert [list(d.cdi_device_ids) for d in answer.devices] == [[]]
            assert not plugin.spec(claim["metadata"]["uid"]).exists()

        async def warning() -> Object | None:
            items, _ = await kube.list(
                EVENTS, namespace, field_selector=f"involvedObject.name={worker['metadata']['name']}"
            )
            return next((e for e in items if e["reason"] == "NoNVLinkClique"), None)

        event = await eventually(warning, timeout=15, what="the NoNVLinkClique Event on the pod")
        assert event["type"] == "Warning"
        assert event["involvedObject"]["uid"] == worker["metadata"]["uid"]
        assert f"node {node} has no NVLink clique" in event["message"]
        assert "node agent" in event["message"]
        assert event["source"] == {"component": "compute-domain-kubelet-plugin", "host": node}
    finally:
        await kube.delete(PODS, daemon["metadata"]["name"], operator_ready)
