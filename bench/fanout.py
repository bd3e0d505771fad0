"""What one node's node-side programs receive from the API server: bytes and events, per watch.

`NodeFanout` runs, for one node, exactly the watches the product runs on that node, through the
product's own classes: the kubelet plugin's `KubeNodeView` (the IMEX daemon pods on the node), the
plugin's watch of the node's own ResourceSlice (`SlicePublisher.informer`, watched but never
written here) and the IMEX daemon's watch of its ComputeDomainClique (`daemon.kube.watch_clique`).
They share one `Kube` whose `on_receive` hook counts every response body and watch event by request
path. The node agent watches nothing.

The benchmark driver imports this module (it is no script) and uses it so:

    connection = computedomain.kube.config.from_kubeconfig(path)  # or connection_of(api), test bed
    fanout = NodeFanout(connection, node="node-0", operator_namespace="computedomain-system",
                        resource_version="v1", clique_name=names.clique_name(domain_uid, clique_id))
    # or NodeFanout(kube_factory=lambda hook: Kube(connection, on_receive=hook), node=..., ...)
    await fanout.start()      # opens the watches; returns once each loaded its first list
    fanout.reset()            # count from here: the first lists are a start-up cost, not fan-out
    ...                       # change the cluster: grow a domain, rewrite statuses, add domains
    for watch, figures in fanout.received().items():
        print(watch, figures.event_bytes, figures.events)
    await fanout.stop()

Several instances (one per simulated node) may share one `Connection`; each opens its own HTTP
connections, as each node's programs do.
What a node receives must not grow with the size or the number of domains: only its own daemon pods,
its own slice and its own clique (at most the clique's size) reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from computedomain.daemon.kube import watch_clique
from computedomain.kube import CLIQUES, PODS, Kube, ReceiveHook, resource_slices
from computedomain.kube.config import Connection
from computedomain.plugin.kubeio import FIELD_MANAGER, KubeNodeView, slice_publisher

# The names under which `received` reports each watch.
PLUGIN_PODS = "plugin: IMEX daemon pods on the node"
PLUGIN_SLICE = "plugin: the node's ResourceSlice"
DAEMON_CLIQUE = "daemon: its ComputeDomainClique"


@dataclass
class Figures:
    """What arrived on one request path."""

    events: int = 0
    event_bytes: int = 0
    reads: int = 0
    read_bytes: int = 0

    @property
    def bytes(self) -> int:
        """Every byte, watch events and whole responses (lists, GETs) together."""
        return self.event_bytes + self.read_bytes


class NodeFanout:
    """The node-side watches of one node over a counting `Kube` (see the module docstring)."""

    def __init__(
        self,
        connection: Connection | None = None,
        *,
        node: str,
        operator_namespace: str,
        resource_version: str,
        clique_name: str,
        kube_factory: Callable[[ReceiveHook], Kube] | None = None,
    ) -> None:
        """Watch through `connection`, or through the `Kube` that `kube_factory(on_receive)` makes
        (the factory must pass the hook on as the `Kube`'s `on_receive`)."""
        self._by_path: dict[str, Figures] = {}
        if kube_factory is None:
            if connection is None:
                raise ValueError("NodeFanout needs a Connection or a Kube factory")
            self.kube = Kube(connection, field_manager=FIELD_MANAGER, on_receive=self._count)
        else:
            self.kube = kube_factory(self._count)
        self.node = node
        self.operator_namespace = operator_namespace
        self.clique_name = clique_name
        self.view = KubeNodeView(self.kube, node, operator_namespace, resource_version)
        self.slice_watch = slice_publisher(self.kube, self.view).informer
        self.clique_updates = 0
        self._names = {
            PODS.path(operator_namespace): PLUGIN_PODS,
            resource_slices(resource_version).path(): PLUGIN_SLICE,
            CLIQUES.path(operator_namespace): DAEMON_CLIQUE,
        }
        self._clique_seen = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def _count(self, path: str, size: int, event: bool) -> None:
        figures = self._by_path.get(path)
        if figures is None:
            figures = self._by_path[path] = Figures()
        if event:
            figures.events += 1
            figures.event_bytes += size
        else:
            figures.reads += 1
            figures.read_bytes += size

    async def _follow_clique(self) -> None:
        async for _daemons in watch_clique(self.kube, self.operator_namespace, self.clique_name):
            self.clique_updates += 1
            self._clique_seen.set()

    async def start(self, timeout: float = 60.0) -> None:
        """Open the watches; return once each has loaded its first list."""
        self._tasks = [
            asyncio.create_task(self.view.run(), name=f"fanout-pods-{self.node}"),
            asyncio.create_task(self.slice_watch.run(), name=f"fanout-slice-{self.node}"),
            asyncio.create_task(self._follow_clique(), name=f"fanout-clique-{self.node}"),
        ]
        loaded = asyncio.gather(
            self.view.wait_synced(), self.slice_watch.synced.wait(), self._clique_seen.wait()
        )
        await asyncio.wait_for(loaded, timeout)

    def reset(self) -> None:
        """Forget what arrived so far."""
        self._by_path.clear()
        self.clique_updates = 0

    def received(self) -> dict[str, Figures]:
        """What arrived since the start or the last `reset`, by watch name (other paths by path)."""
        return {self._names.get(path, path): figures for path, figures in self._by_path.items()}

    def total_bytes(self) -> int:
        """Every byte that arrived since the start or the last `reset`."""
        return sum(figures.bytes for figures in self._by_path.values())

    async def stop(self) -> None:
        """Close the watches and the connections."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.kube.close()
