"""List-and-watch caches of the objects related to ComputeDomains.

Each informer keeps one kind (label-selected on the server, so it holds only what concerns
ComputeDomains), calls back on every change, and sets `synced` once its first list is loaded, so the
controller never acts on a half-known world.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from computedomain.controller.kube import Kind, Kube, KubeError, Object

logger = logging.getLogger(__name__)

# (event type, new or last-known object, previous object or None)
Handler = Callable[[str, Object, Object | None], None]


def object_key(obj: Object) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects."""
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def slim(obj: Object) -> Object:
    """Drop managedFields: nothing here reads them, and they are often a third of an object's size."""
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        meta.pop("managedFields")
    return obj


def _version(obj: Object | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except ValueError:
        return 0


class Informer:
    """A cache of one kind kept current by a watch; `store` maps `object_key` to the object."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        handler: Handler,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        name: str = "",
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.handler = handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = name or kind.plural
        self.store: dict[str, Object] = {}
        self.synced = asyncio.Event()
        self._resource_version = ""

    def upsert(self, obj: Object) -> None:
        """Record our own write's result before the watch echoes it (never moves backwards)."""
        key = object_key(obj)
        old = self.store.get(key)
        if old is not None and _version(old) >= _version(obj):
            return
        self.store[key] = slim(obj)
        self.handler("MODIFIED" if old else "ADDED", obj, old)

    def forget(self, obj: Object) -> None:
        """Drop an object we deleted ourselves."""
        old = self.store.pop(object_key(obj), None)
        if old is not None:
            self.handler("DELETED", old, old)

    async def run(self) -> None:
        """List, then watch forever; re-list when the watch expires or fails."""
        backoff = 0.5
        while True:
            try:
                await self._list()
                backoff = 0.5
                await self._watch()
            except asyncio.CancelledError:
                raise
            except (KubeError, OSError, TimeoutError, ValueError) as error:
                logger.warning("%s: watch failed (%s); re-listing in %.1fs", self.name, error, backoff)
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 30.0)

    async def _list(self) -> None:
        items, self._resource_version = await self.kube.list(self.kind, self.namespace, self.label_selector)
        fresh = {object_key(item): slim(item) for item in items}
        for key, old in list(self.store.items()):
            if key not in fresh:
                del self.store[key]
                self.handler("DELETED", old, old)
        for key, obj in fresh.items():
            known = self.store.get(key)
            if known is None or _version(obj) > _version(known):
                self.store[key] = obj
                self.handler("MODIFIED" if known else "ADDED", obj, known)
        self.synced.set()

    async def _watch(self) -> None:
        while True:
            async for event in self.kube.watch(
                self.kind, self._resource_version, self.namespace, self.label_selector
            ):
                if not self._apply(event):
                    return  # expired: re-list
            # The server ended the watch at its timeout; resume from the last version seen.

    def _apply(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        obj: Object = event.get("object") or {}
        if kind == "ERROR":
            logger.info("%s: watch error %s; re-listing", self.name, obj.get("message", obj))
            return False
        version = obj.get("metadata", {}).get("resourceVersion")
        if version:
            self._resource_version = version
        if kind == "BOOKMARK":
            return True
        key = object_key(obj)
        old = self.store.get(key)
        if kind == "DELETED":
            self.store.pop(key, None)
            self.handler("DELETED", obj, old)
        elif old is None or _version(obj) > _version(old):
            self.store[key] = slim(obj)
            self.handler(str(kind), obj, old)
        # else: the echo of our own write (already recorded by `upsert`) or an older state.
        return True
