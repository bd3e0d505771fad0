"""Publishing of this node's ResourceSlice: applied once, watched, and put back whenever it is deleted
or changed. Only this node's own slice is watched (a field selector on its name).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from computedomain.dra import slices as dra_slices
from computedomain.kube import Kube, KubeError, resource_slices
from computedomain.kube.informer import Informer
from computedomain.kube.retry import Retrier, RetryPolicy, always
from computedomain.objects import Object
from computedomain.plugin.kubelet.metrics import SLICE_PUBLISHES

log = logging.getLogger(__name__)

# How long a read of the node is reused while the slice is published; the Node's UID never changes.
NODE_TTL = 5.0

_PUBLISH_RETRY = RetryPolicy(initial=0.5, maximum=30.0, retry_on=always)


class SlicePublisher:
    """Publishes this node's ResourceSlice and puts it back whenever it is deleted or changed.

    `render(owner, generation)` is the driver's slice; `read_node(max_age)` this node's object, read
    at most every `max_age` seconds (its UID makes the Node the slice's owner).
    """

    def __init__(
        self,
        kube: Kube,
        node: str,
        version: str,
        render: Callable[[dra_slices.NodeOwner, int], Object],
        read_node: Callable[[float], Awaitable[Object]],
        node_ttl: float = NODE_TTL,
    ) -> None:
        self.kube = kube
        self.node = node
        self.render = render
        self.read_node = read_node
        self.node_ttl = node_ttl
        self.kind = resource_slices(version)
        self.name = dra_slices.slice_name(node)
        self.published = asyncio.Event()
        self._dirty = asyncio.Event()
        self.informer = Informer(
            kube,
            self.kind,
            self._on_slice,
            field_selector=f"metadata.name={self.name}",
            name="own ResourceSlice",
        )

    def _on_slice(self, event: str, obj: Object, old: Object | None) -> None:
        if event == "DELETED":
            log.info("ResourceSlice %s was deleted", self.name)
            self.published.clear()
        self._dirty.set()

    async def run(self) -> None:
        """Watch our slice and reconcile it after every change (forever)."""
        watch = asyncio.create_task(self.informer.run(), name="slice-informer")
        try:
            await self.informer.synced.wait()
            # No failure ends publishing: the kubelet's scheduler sees the node's devices only here.
            retrier = Retrier(f"publishing ResourceSlice {self.name}", _PUBLISH_RETRY, log=log)
            self._dirty.set()
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                try:
                    await self.reconcile()
                    retrier.reset()
                except Exception as error:
                    await retrier.failed(error)
                    self._dirty.set()
        finally:
            watch.cancel()

    async def reconcile(self) -> None:
        """Apply the slice unless the published one already says what it should."""
        node = await self.read_node(0 if not self.published.is_set() else self.node_ttl)
        owner = dra_slices.NodeOwner(self.node, str(node["metadata"]["uid"]))
        current = self.informer.store.get(self.name)
        generation = int(((current or {}).get("spec") or {}).get("pool", {}).get("generation", 1))
        desired = self.render(owner, generation)
        if not _needs_publish(current, desired):
            self.published.set()
            return
        if current is not None:
            # The pool's content changes: a new generation tells the scheduler to drop what it knew.
            desired["spec"]["pool"]["generation"] = generation + 1
        applied = await self.kube.apply(self.kind, desired)
        self.informer.upsert(applied)
        SLICE_PUBLISHES.inc()
        self.published.set()
        log.info(
            "published ResourceSlice %s (pool generation %s)",
            self.name,
            desired["spec"]["pool"]["generation"],
        )

    async def remove(self) -> None:
        """Delete the slice (on an orderly shutdown the kubelet would do so 30 s later anyway)."""
        try:
            await self.kube.delete(self.kind, self.name)
        except (KubeError, OSError, TimeoutError) as error:
            log.warning("could not delete ResourceSlice %s: %s", self.name, error)


def _needs_publish(current: Object | None, desired: Object) -> bool:
    if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
        return True
    return dra_slices.slice_differs(current, desired)
