"""An in-memory API server behind the `computedomain.kube.Kube` interface, for reconcile tests that run
in milliseconds.

It keeps objects per kind with increasing resourceVersions, answers get/list/watch (label-selected,
resumable from a resourceVersion), create (409 on a taken name), server-side apply (our field
manager's apply owns exactly the fields it sent, so a field dropped from the next apply goes, and a
non-forced apply over another writer's value conflicts), merge and JSON patches (a failed `test` is
a 422), PUT and delete (an object with finalizers only gets a deletionTimestamp). Every write is
logged, and an error can be injected per (verb, resource). It is a double of the API server's
behaviour that the controller relies on, not of all of it: lists are atomic, nothing is defaulted
and no controller runs (no DaemonSet creates pods; tests add what they need).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from computedomain.api import names
from computedomain.kube import APPLY, JSON_PATCH, MERGE, Kind, KubeError, Object
from computedomain.kube.ownership import APPLY_OPERATION, applied_fields
from support.patches import conflicts, fields_of, json_patch, merge, selected, without_applied

# (group, plural, namespace or "", name)
Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class Write:
    """One write request that reached the fake: its verb, resource (`plural` or `plural/sub`) and key."""

    verb: str
    resource: str
    key: str


@dataclass(frozen=True)
class _Change:
    version: int
    group: str
    plural: str
    kind: str  # ADDED, MODIFIED, DELETED
    obj: Object
    old: Object | None


class FakeKube:
    """An in-memory `Kube`; see the module's docstring for what it does and does not do."""

    def __init__(self, field_manager: str = names.FIELD_MANAGER) -> None:
        self.field_manager = field_manager
        self.objects: dict[Key, Object] = {}
        self.writes: list[Write] = []
        self._errors: dict[tuple[str, str], KubeError] = {}
        self._history: list[_Change] = []
        self._version = 100
        self._changed = asyncio.Event()
        self._watch_positions: dict[int, int] = {}

    # -- test controls --------------------------------------------------------------------------

    def fail(self, verb: str, resource: str, status: int, message: str, reason: str = "") -> None:
        """Answer every `verb` ("create", "apply", "patch", "delete", "put", "get", "list") on
        `resource` (a plural, or `plural/status`) with this error until `heal` is called."""
        self._errors[(verb, resource)] = KubeError(status, message, reason)

    def heal(self) -> None:
        """Stop injecting errors."""
        self._errors.clear()

    def take_writes(self) -> list[Write]:
        """The writes since the last call."""
        writes, self.writes = self.writes, []
        return writes

    def stored(self, kind: Kind, name: str, namespace: str | None = None) -> Object | None:
        """The stored object (not a copy: read only)."""
        return self.objects.get(self._key(kind, namespace, name))

    def of_kind(self, kind: Kind) -> list[Object]:
        """Every stored object of a kind, in key order."""
        return [o for key, o in sorted(self.objects.items()) if key[:2] == (kind.group, kind.plural)]

    async def drain(self) -> None:
        """Wait until every open watch has delivered every change (informers are then current)."""
        # Yielding is the point: each pass lets the informer tasks take the changes waiting for them.
        while any(position < len(self._history) for position in self._watch_positions.values()):  # noqa: ASYNC110
            await asyncio.sleep(0)
        await asyncio.sleep(0)

    # -- the Kube interface ---------------------------------------------------------------------

    async def close(self) -> None:
        """Nothing to close."""

    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Object | None:
        self._check("get", kind.plural)
        obj = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Object], str]:
        self._check("list", kind.plural)
        items = [
            copy.deepcopy(obj)
            for obj in self.of_kind(kind)
            if (not namespace or obj["metadata"].get("namespace") == namespace)
            and selected(obj, label_selector)
        ]
        return items, str(self._version)

    async def watch(
        self,
        kind: Kind,
        resource_version: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        field_selector: str | None = None,
    ) -> AsyncIterator[Object]:
        since = int(resource_version or 0)
        position = next((i for i, c in enumerate(self._history) if c.version > since), len(self._history))
        token = id(object())
        self._watch_positions[token] = position
        try:
            while True:
                while position < len(self._history):
                    change = self._history[position]
                    position += 1
                    self._watch_positions[token] = position
                    event = self._event(change, kind, namespace, label_selector)
                    if event is not None:
                        yield event
                changed = self._changed
                await changed.wait()
        finally:
            self._watch_positions.pop(token, None)

    async def create(self, kind: Kind, obj: Object) -> Object:
        meta = obj["metadata"]
        self._write("create", kind.plural, kind, meta.get("namespace"), meta["name"])
        key = self._key(kind, meta.get("namespace"), meta["name"])
        if key in self.objects:
            raise KubeError(409, f'{kind.plural} "{meta["name"]}" already exists', "AlreadyExists")
        created = copy.deepcopy(obj)
        created["metadata"]["managedFields"] = [
            {"manager": self.field_manager, "operation": "Update", "fieldsV1": fields_of(obj)}
        ]
        return self._store(kind, key, created, None)

    async def apply(
        self, kind: Kind, obj: Object, *, subresource: str | None = None, force: bool = True
    ) -> Object:
        meta = obj["metadata"]
        self._write("apply", kind.plural, kind, meta.get("namespace"), meta["name"])
        key = self._key(kind, meta.get("namespace"), meta["name"])
        live = self.objects.get(key)
        owned = applied_fields(live, self.field_manager) if live is not None else None
        if live is not None and not force and conflicts(live, obj, owned):
            raise KubeError(409, "Apply failed with 1 conflict", "Conflict")
        result = copy.deepcopy(live) if live is not None else {}
        if owned:
            without_applied(result, owned, obj)
        result = merge(result, obj)
        entries = [
            e
            for e in result["metadata"].get("managedFields") or []
            if (e.get("manager"), e.get("operation")) != (self.field_manager, APPLY_OPERATION)
        ]
        entries.append(
            {"manager": self.field_manager, "operation": APPLY_OPERATION, "fieldsV1": fields_of(obj)}
        )
        result["metadata"]["managedFields"] = entries
        return self._store(kind, key, result, live)

    async def patch(
        self,
        kind: Kind,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        content_type: str = MERGE,
        subresource: str | None = None,
    ) -> Object:
        resource = kind.plural + (f"/{subresource}" if subresource else "")
        self._write("patch", resource, kind, namespace, name)
        key = self._key(kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise self._not_found(kind, name)
        if content_type == JSON_PATCH:
            result = json_patch(live, patch)
        elif content_type == APPLY:
            raise NotImplementedError("use apply()")
        else:
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != live["metadata"]["resourceVersion"]:
                raise KubeError(409, "the object has been modified; please apply your changes", "Conflict")
            result = merge(live, patch)
        if subresource == "status":
            result = {**copy.deepcopy(live), "status": result.get("status")}
        return self._store(kind, key, result, live)

    async def delete(
        self,
        kind: Kind,
        name: str,
        namespace: str | None = None,
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> bool:
        self._write("delete", kind.plural, kind, namespace, name)
        key = self._key(kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            return False
        # As the API server: the object was replaced or written since the caller read it.
        if preconditions and any(str(live["metadata"].get(k)) != v for k, v in preconditions.items()):
            raise KubeError(409, "Precondition failed", "Conflict")
        if live["metadata"].get("finalizers"):
            if not live["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(live)
                marked["metadata"]["deletionTimestamp"] = _now()
                self._store(kind, key, marked, live)
            return True
        del self.objects[key]
        self._version += 1
        self._record(kind, "DELETED", copy.deepcopy(live), live)
        return True

    async def call(self, method: str, path: str, **kwargs: Any) -> Object:
        """PUT of a whole object (the only raw call the reconcile makes)."""
        if method != "PUT":
            raise NotImplementedError(f"{method} {path}")
        kind, namespace, name = _parse(path)
        self._write("put", kind.plural, kind, namespace, name)
        key = self._key(kind, namespace, name)
        live = self.objects.get(key)
        if live is None:
            raise self._not_found(kind, name)
        body: Object = copy.deepcopy(kwargs["body"])
        if body["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
            raise KubeError(409, "the object has been modified; please apply your changes", "Conflict")
        return self._store(kind, key, body, live)

    # -- internals ------------------------------------------------------------------------------

    def _key(self, kind: Kind, namespace: str | None, name: str) -> Key:
        return (kind.group, kind.plural, (namespace or "") if kind.namespaced else "", name)

    def _check(self, verb: str, resource: str) -> None:
        error = self._errors.get((verb, resource))
        if error is not None:
            raise KubeError(error.status, str(error), error.reason)

    def _write(self, verb: str, resource: str, kind: Kind, namespace: str | None, name: str) -> None:
        self.writes.append(Write(verb, resource, f"{namespace}/{name}" if namespace else name))
        self._check(verb, resource)

    def _not_found(self, kind: Kind, name: str) -> KubeError:
        return KubeError(404, f'{kind.plural} "{name}" not found', "NotFound", kind=kind.plural)

    def _store(self, kind: Kind, key: Key, obj: Object, old: Object | None) -> Object:
        meta = obj["metadata"]
        if old is not None:
            unchanged = {k: v for k, v in obj.items() if k != "metadata"} == {
                k: v for k, v in old.items() if k != "metadata"
            } and {k: v for k, v in meta.items() if k != "resourceVersion"} == {
                k: v for k, v in old["metadata"].items() if k != "resourceVersion"
            }
            if unchanged:
                return copy.deepcopy(old)
            if obj.get("spec") != old.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            for fixed in ("uid", "creationTimestamp"):
                meta[fixed] = old["metadata"][fixed]
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
        if kind.namespaced and not meta.get("namespace"):
            meta["namespace"] = key[2]
        obj.setdefault("apiVersion", kind.api_version)
        self._version += 1
        meta["resourceVersion"] = str(self._version)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self.objects.pop(key, None)
            self._record(kind, "DELETED", obj, old)
            return copy.deepcopy(obj)
        self.objects[key] = obj
        self._record(kind, "MODIFIED" if old is not None else "ADDED", obj, old)
        return copy.deepcopy(obj)

    def _record(self, kind: Kind, event: str, obj: Object, old: Object | None) -> None:
        self._history.append(_Change(self._version, kind.group, kind.plural, event, copy.deepcopy(obj), old))
        self._changed.set()
        self._changed = asyncio.Event()

    def _event(
        self, change: _Change, kind: Kind, namespace: str | None, selector: str | None
    ) -> Object | None:
        if (change.group, change.plural) != (kind.group, kind.plural):
            return None
        if namespace and change.obj["metadata"].get("namespace") != namespace:
            return None
        now, before = selected(change.obj, selector), selected(change.old, selector)
        if change.kind == "DELETED":
            kind_of = "DELETED" if before or now else None
        elif now:
            kind_of = "MODIFIED" if before else "ADDED"
        else:
            kind_of = "DELETED" if before else None
        if kind_of is None:
            return None
        return {"type": kind_of, "object": copy.deepcopy(change.obj)}


_KINDS: dict[str, Kind] = {}


def register(*kinds: Kind) -> None:
    """Make raw calls (`call`) on these kinds' paths understood."""
    for kind in kinds:
        _KINDS[f"{kind.api_version}/{kind.plural}"] = kind


def _parse(path: str) -> tuple[Kind, str | None, str]:
    parts = path.strip("/").split("/")
    group_version = parts[1] if parts[0] == "api" else f"{parts[1]}/{parts[2]}"
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    namespace = None
    if rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    return _KINDS[f"{group_version}/{rest[0]}"], namespace, rest[1]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_json(obj: Object) -> str:
    """A stored object as compact JSON (for assertion messages)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
