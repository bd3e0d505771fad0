"""The controller's domain label on nodes, against a real API server: a node deleted after the plan
named it stays deleted, another writer's label is left alone, and a label already ours is kept."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import ClusterOptions
from cdtestbed.connection import connection_of
from computedomain.api import names
from computedomain.controller.reconcile import nodelabels
from computedomain.kube import NODES, Kube
from support.testbed import ControlPlane, private_control_plane

pytestmark = pytest.mark.cluster

UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
OTHER = "11111111-2222-3333-4444-555555555555"
_names = (f"gb200-nodelabels-{i}" for i in itertools.count())

# No controller manager or KWOK: nothing but the test creates or deletes a Node.
plane = private_control_plane("nodelabels-", ClusterOptions(controllers=False))


@pytest.fixture
def api(plane: ControlPlane) -> client.ApiClient:
    return plane.api


@pytest_asyncio.fixture
async def kube(api: client.ApiClient) -> AsyncIterator[Kube]:
    """The client layer as the controller builds it: its own field manager."""
    controller_kube = Kube(connection_of(api))
    try:
        yield controller_kube
    finally:
        await controller_kube.close()


async def new_node(kube: Kube, labels: dict[str, str] | None = None) -> str:
    name = next(_names)
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    await kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": metadata})
    return name


async def domain_label(kube: Kube, node: str) -> str | None:
    live = await kube.get(NODES, node)
    assert live is not None
    return (live["metadata"].get("labels") or {}).get(names.DOMAIN_LABEL)


async def test_a_node_deleted_between_plan_and_write_stays_deleted(kube: Kube) -> None:
    node = await new_node(kube, {"kubernetes.io/hostname": "x"})
    # The plan named the node while it existed; it goes before the label is written.
    assert await kube.get(NODES, node) is not None
    assert await kube.delete(NODES, node)

    # Gone, not refused: the domain must not report a label conflict for it.
    assert await nodelabels.add_label(kube, node, UID) == nodelabels.GONE
    # Nothing holding only our label has taken its place (the DaemonSet would start a daemon there).
    assert await kube.get(NODES, node) is None


async def test_a_label_is_added_and_removed(kube: Kube) -> None:
    node = await new_node(kube, {"kubernetes.io/hostname": "x"})
    added = await nodelabels.add_label(kube, node, UID)
    assert added is not None
    assert added["metadata"]["labels"][names.DOMAIN_LABEL] == UID
    assert added["metadata"]["labels"]["kubernetes.io/hostname"] == "x"

    removed = await nodelabels.remove_label(kube, node, UID)
    assert removed is not None
    assert await domain_label(kube, node) is None
    assert await nodelabels.remove_label(kube, node, UID) is None


async def test_a_node_without_any_label_is_labelled(kube: Kube) -> None:
    node = await new_node(kube)
    assert await nodelabels.add_label(kube, node, UID) is not None
    assert await domain_label(kube, node) == UID


async def test_another_domains_label_is_left_alone(kube: Kube) -> None:
    node = await new_node(kube, {names.DOMAIN_LABEL: OTHER})
    assert await nodelabels.add_label(kube, node, UID) is None
    assert await domain_label(kube, node) == OTHER
    assert await nodelabels.remove_label(kube, node, UID) is None
    assert await domain_label(kube, node) == OTHER


async def test_a_label_already_ours_is_kept(kube: Kube) -> None:
    node = await new_node(kube, {names.DOMAIN_LABEL: UID})
    kept = await nodelabels.add_label(kube, node, UID)
    assert kept is not None
    assert kept["metadata"]["labels"][names.DOMAIN_LABEL] == UID
