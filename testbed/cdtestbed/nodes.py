"""Create fake nodes and wait until the control plane treats them as schedulable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.topology import FakeNode, node_manifest

_NOT_READY_TAINT = "node.kubernetes.io/not-ready"


async def create_nodes(api: client.ApiClient, nodes: Iterable[FakeNode]) -> None:
    """Create each node; one that already exists is left as it is."""
    core = client.CoreV1Api(api)

    async def create(node: FakeNode) -> None:
        try:
            await core.create_node(cast(Any, node_manifest(node)))
        except ApiException as error:
            if error.status != 409:
                raise

    await asyncio.gather(*(create(node) for node in nodes))


async def wait_nodes_ready(api: client.ApiClient, names: Iterable[str], timeout: float = 120.0) -> None:
    """Wait until every named node is Ready and has lost the not-ready taint (so pods can land)."""
    core = client.CoreV1Api(api)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        listing = await core.list_node()
        for node in listing.items:
            if node.metadata.name in pending and _schedulable(node):
                pending.discard(node.metadata.name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not ready after {timeout:.0f}s: {sorted(pending)[:5]}")
        await asyncio.sleep(0.5)


def _schedulable(node: client.V1Node) -> bool:
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    taints = node.spec.taints or []
    return ready and not any(t.key == _NOT_READY_TAINT for t in taints)


async def delete_nodes(api: client.ApiClient, names: Iterable[str]) -> None:
    """Delete the named nodes, ignoring those already gone."""
    core = client.CoreV1Api(api)

    async def delete(name: str) -> None:
        try:
            await core.delete_node(name)
        except ApiException as error:
            if error.status != 404:
                raise

    await asyncio.gather(*(delete(name) for name in names))


async def add_ready_nodes(api: client.ApiClient, nodes: Sequence[FakeNode], timeout: float = 120.0) -> None:
    """Create the fake nodes and wait until pods can land on them."""
    await create_nodes(api, nodes)
    await wait_nodes_ready(api, [node.name for node in nodes], timeout)
