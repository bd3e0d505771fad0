"""What our field manager last applied to an object, read from its managedFields.

`contains` tells whether a live object holds every rendered field, but not whether it holds fields we
no longer render: a field dropped from the rendering stays on the live object, still ours, until an
apply without it removes it. The object's managedFields record which fields our apply set; any of
them missing from the rendering means the object needs a new apply.
"""

from __future__ import annotations

import json
from typing import Any

from computedomain.objects import Object

APPLY_OPERATION = "Apply"
UPDATE_OPERATION = "Update"


def applied_fields(obj: Object, manager: str) -> dict[str, Any] | None:
    """The fields (in the API server's `FieldsV1` form) that `manager`'s apply owns, or None."""
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == APPLY_OPERATION:
            return _fields(entry)
    return None


def _fields(entry: Object) -> dict[str, Any]:
    # A cache holds them as compact JSON text (see `keep_applied`).
    fields = entry.get("fieldsV1")
    if isinstance(fields, str):
        fields = json.loads(fields)
    return fields if isinstance(fields, dict) else {}


def updated_by(obj: Object, manager: str) -> bool:
    """Whether `manager` also owns fields of the object through a create, update or patch.

    Such fields (all of them, server defaults included, after a plain POST) are never removed by an
    apply that stops setting them; see `without_updates`.
    """
    return any(_is_update(entry, manager) for entry in obj.get("metadata", {}).get("managedFields") or [])


def taken_over(obj: Object, manager: str) -> list[Object]:
    """The object's managedFields with `manager`'s update entry folded into its apply entry.

    What the manager set by POST, PUT or patch then counts as applied, so the next apply, which sets
    only what is rendered now, removes the rest (as `csaupgrade` does when kubectl moves an object
    from client-side to server-side apply). Server defaults the update entry held are removed and
    defaulted again to the same values. Metadata is not folded in: the server keeps annotations of
    its own there, which an apply must not remove.
    """
    entries = obj["metadata"].get("managedFields") or []
    updated: dict[str, Any] = {}
    for entry in entries:
        if _is_update(entry, manager):
            updated = _union(updated, _fields(entry))
    updated.pop("f:metadata", None)
    applied = _union(applied_fields(obj, manager) or {}, updated)
    kept = [
        e
        for e in entries
        if not _is_update(e, manager) and (e.get("manager"), e.get("operation")) != (manager, APPLY_OPERATION)
    ]
    apply_entry = {
        "manager": manager,
        "operation": APPLY_OPERATION,
        "apiVersion": obj.get("apiVersion", ""),
        "fieldsType": "FieldsV1",
        "fieldsV1": applied,
    }
    return [*kept, apply_entry]


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _union(merged[key], value) if key in merged else value
    return merged


def _is_update(entry: Object, manager: str) -> bool:
    # An entry that owns nothing does not count (it changes nothing an apply does).
    return (
        entry.get("manager") == manager
        and entry.get("operation") == UPDATE_OPERATION
        and not entry.get("subresource")
        and bool(entry.get("fieldsV1"))
    )


def keep_applied(obj: Object, manager: str) -> Object:
    """Drop every managedFields entry but `manager`'s own (and their timestamps), in place.

    A cache keeps only what `stale_fields` and `updated_by` read, as compact JSON text (a third of
    the memory of the nested dicts): the rest is often a third of an object's size.
    """
    meta = obj.get("metadata")
    if not meta or "managedFields" not in meta:
        return obj
    fields = applied_fields(obj, manager)
    kept: list[Object] = []
    if fields is not None:
        kept.append({"manager": manager, "operation": APPLY_OPERATION, "fieldsV1": _compact(fields)})
    # An update entry is rare (an object an earlier version created by POST) and short-lived: the
    # reconcile takes it over into the apply entry.
    kept += [
        {"manager": manager, "operation": UPDATE_OPERATION, "fieldsV1": _compact(_fields(e))}
        for e in meta["managedFields"]
        if _is_update(e, manager)
    ]
    if kept:
        meta["managedFields"] = kept
    else:
        meta.pop("managedFields")
    return obj


def _compact(fields: dict[str, Any]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def stale_fields(owned: dict[str, Any], desired: Any, path: str = "") -> list[str]:
    """Paths of fields in `owned` (a `FieldsV1` tree) that the `desired` manifest no longer sets.

    Map keys are `f:<name>`, list items `k:<key fields as JSON>` (merge-keyed lists), `v:<value>`
    (sets) or `i:<index>`; `.` marks the node itself. A key field that the manifest leaves to the
    server's default (a port's protocol, say) matches any value.
    """
    stale: list[str] = []
    for key, sub in owned.items():
        if key == ".":
            continue
        kind, _, ident = key.partition(":")
        child: Any = None
        found = False
        if kind == "f" and isinstance(desired, dict) and ident in desired:
            child, found = desired[ident], True
        elif kind == "k" and isinstance(desired, list):
            wanted = json.loads(ident)
            for item in desired:
                if isinstance(item, dict) and all(
                    item.get(name, value) == value for name, value in wanted.items()
                ):
                    child, found = item, True
                    break
        elif kind == "v" and isinstance(desired, list):
            found = json.loads(ident) in desired
        elif kind == "i" and isinstance(desired, list):
            index = int(ident)
            found = 0 <= index < len(desired)
            child = desired[index] if found else None
        where = f"{path}.{ident}" if kind == "f" else f"{path}[{ident}]"
        if not found:
            stale.append(where.lstrip("."))
        elif isinstance(sub, dict) and sub and child is not None:
            stale.extend(stale_fields(sub, child, where))
    return stale
