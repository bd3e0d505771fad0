"""Create fake nodes and wait until the control plane treats them as schedulable."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, cast

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.topology import FakeNode, node_manifest

_NOT_READY_TAINT = "node.kubernetes.io/not-ready"


async def create_nodes(api: client.ApiClient, nodes: Iterable[FakeNode], concurrency: int = 64) -> None:
    """Create each node, `concurrency` at a time; one that already exists is left as it is."""
    core = client.CoreV1Api(api)
    gate = asyncio.Semaphore(concurrency)

    async def create(node: FakeNode) -> None:
        async with gate:
            try:
                await core.create_node(cast(Any, node_manifest(node)))
            except ApiException as error:
                if error.status != 409:
                    raise

    await asyncio.gather(*(create(node) for node in nodes))


async def wait_nodes_ready(api: client.ApiClient, names: Iterable[str], timeout: float = 120.0) -> None:
    """Wait until every named node is Ready and has lost the not-ready taint (so pods can land).

    One list, then a watch from it: thousands of nodes are not listed again and again.
    """
    core = client.CoreV1Api(api)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        listing = await _raw(core.list_node(_preload_content=False))
        _discard_schedulable(pending, listing["items"])
        version = listing["metadata"]["resourceVersion"]
        while pending and time.monotonic() < deadline:
            left = max(1, int(deadline - time.monotonic()))
            stream = watch.Watch(return_type="object").stream(
                core.list_node, resource_version=version, timeout_seconds=min(left, 60)
            )
            try:
                async with stream:
                    async for event in stream:
                        version = event["object"]["metadata"]["resourceVersion"]
                        _discard_schedulable(pending, [event["object"]])
                        if not pending:
                            break
            except ApiException as error:
                if error.status != 410:
                    raise
                break  # the version expired: list again
        if pending and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pending)} nodes not ready after {timeout:.0f}s: {sorted(pending)[:5]}")


async def _raw(call: Awaitable[Any]) -> Any:
    response = await call
    return json.loads(await response.read())


def _discard_schedulable(pending: set[str], nodes: Iterable[dict[str, Any]]) -> None:
    for node in nodes:
        if node["metadata"]["name"] in pending and _schedulable(node):
            pending.discard(node["metadata"]["name"])


def _schedulable(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = (node.get("spec") or {}).get("taints") or []
    return ready and not any(t.get("key") == _NOT_READY_TAINT for t in taints)


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
