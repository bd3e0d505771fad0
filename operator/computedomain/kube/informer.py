"""List-and-watch caches.

Each informer keeps one kind (label- or field-selected on the server, so it holds only what concerns
its program), calls back on every change, and sets `synced` once its first list is loaded, so a
program never acts on a half-known world. A watch that fails for any reason is resumed with jittered
backoff from the last resourceVersion it saw; only a version the server no longer holds (410 Gone)
costs a new list. Losing the connection to the API server is routine, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from computedomain.kube.client import Kube
from computedomain.kube.errors import WatchExpired
from computedomain.kube.kinds import Kind
from computedomain.kube.ownership import keep_applied
from computedomain.kube.retry import Retrier, RetryPolicy, always
from computedomain.kube.store import Store
from computedomain.objects import Object

# Re-exported: the caches are keyed by it.
from computedomain.objects import object_key as object_key

logger = logging.getLogger(__name__)

# (event type, new or last-known object, previous object or None)
Handler = Callable[[str, Object, Object | None], None]
# What a program keeps of an object: a projection onto the fields it reads.
Shape = Callable[[Object], Object]
# A cut connection takes many shapes, and none may end a watch.
WATCH_RETRY = RetryPolicy(initial=0.5, maximum=30.0, retry_on=always)


def slim(obj: Object) -> Object:
    """Drop managedFields: nothing here reads them, and they are often a third of an object's size."""
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        meta.pop("managedFields")
    return obj


def resource_version_of(obj: Object | None) -> int:
    """An object's resourceVersion as a number (0 when absent), for "which state is newer"."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except ValueError:
        return 0


class Informer:
    """A cache of one kind kept current by a watch; `store` maps `object_key` to the object.

    The store holds each object as `shape` leaves it (everything but managedFields without one),
    encoded (`kube.store`); handlers get the new and the previous object in that same form.
    """

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        handler: Handler,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        name: str = "",
        keep_applied_by: str | None = None,
        shape: Shape | None = None,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.handler = handler
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.name = name or kind.plural
        # Keep this field manager's apply entry of managedFields (see `kube.ownership`).
        self.keep_applied_by = keep_applied_by
        self.shape = shape
        self.store = Store()
        self.synced = asyncio.Event()
        self._resource_version = ""

    def upsert(self, obj: Object) -> None:
        """Record our own write's result before the watch echoes it (never moves backwards)."""
        key = object_key(obj)
        old = self.store.get(key)
        if old is not None and resource_version_of(old) >= resource_version_of(obj):
            return
        kept = self._slim(obj)
        self.store.put(key, kept)
        self.handler("MODIFIED" if old else "ADDED", kept, old)

    def forget(self, obj: Object) -> None:
        """Drop an object we deleted ourselves."""
        old = self.store.pop(object_key(obj))
        if old is not None:
            self.handler("DELETED", old, old)

    def _slim(self, obj: Object) -> Object:
        kept = slim(obj) if self.keep_applied_by is None else keep_applied(obj, self.keep_applied_by)
        return kept if self.shape is None else self.shape(kept)

    async def run(self) -> None:
        """List, then watch forever: resume from the last version after a cut, re-list on 410."""
        retrier = Retrier(f"{self.name}: list", WATCH_RETRY, log=logger)
        listed = False
        while True:
            try:
                if not listed:
                    await self._list()
                    listed = True
                    retrier.reset()
                if not await self._watch(retrier):
                    listed = False  # the server said the version is gone: list again at once
            except WatchExpired as expired:
                logger.info("%s: watch expired (%s); re-listing", self.name, expired)
                listed = False
            except Exception as error:
                # After a failed watch the next attempt resumes it; after a failed list it lists.
                await retrier.failed(error, f"{self.name}: {'watch' if listed else 'list'}")

    async def _list(self) -> None:
        items, self._resource_version = await self.kube.list(
            self.kind, self.namespace, self.label_selector, self.field_selector
        )
        fresh = {object_key(item): item for item in items}
        for key in list(self.store):
            if key not in fresh:
                old = self.store.pop(key)
                assert old is not None
                self.handler("DELETED", old, old)
        for key, obj in fresh.items():
            known = self.store.get(key)
            if known is None or resource_version_of(obj) > resource_version_of(known):
                kept = self._slim(obj)
                self.store.put(key, kept)
                self.handler("MODIFIED" if known else "ADDED", kept, known)
        self.synced.set()

    async def _watch(self, retrier: Retrier) -> bool:
        """Watch until the stream fails; False when the informer must list again."""
        while True:
            async for event in self.kube.watch(
                self.kind,
                self._resource_version,
                self.namespace,
                self.label_selector,
                field_selector=self.field_selector,
            ):
                retrier.reset()  # the connection works again
                if not self._apply(event):
                    return False
            # The server ended the watch at its timeout; resume from the last version seen.

    def _apply(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        obj: Object = event.get("object") or {}
        if kind == "ERROR":
            # Any other error the server reports in the stream: a fresh list is the safe answer.
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
            self.store.pop(key)
            self.handler("DELETED", self._slim(obj), old)
        elif old is None or resource_version_of(obj) > resource_version_of(old):
            kept = self._slim(obj)
            self.store.put(key, kept)
            self.handler(str(kind), kept, old)
        # else: the echo of our own write (already recorded by `upsert`) or an older state.
        return True
