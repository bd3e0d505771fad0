"""What the controller's caches keep of each kind: exactly the fields the reconcile reads.

A 5,000-node domain brings 5,000 daemon pods, claims and nodes into the caches; kept whole they
would cost hundreds of MiB, while the planners read a handful of fields of each (see
`plan.membership` and `dra.allocation`). Children (DaemonSets, templates, clique objects) are kept
whole but for the status the DaemonSet controller rewrites, since the reconcile compares them with
what it renders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from computedomain.api import names
from computedomain.objects import Object

_IDENTITY = ("name", "namespace", "uid", "resourceVersion", "generation", "deletionTimestamp")


def _pick(source: Mapping[str, Any] | None, keys: Iterable[str]) -> Object:
    source = source or {}
    return {key: source[key] for key in keys if key in source}


def _metadata(obj: Object, *extra: str, labels: Iterable[str] | None = None) -> Object:
    meta = obj.get("metadata") or {}
    kept = _pick(meta, (*_IDENTITY, *extra))
    all_labels = meta.get("labels") or {}
    chosen = all_labels if labels is None else _pick(all_labels, labels)
    if chosen:
        kept["labels"] = chosen
    return kept


def pod(obj: Object) -> Object:
    """A daemon pod: who controls it, where it runs, its IP, whether it is Ready."""
    status = obj.get("status") or {}
    kept: Object = {"metadata": _metadata(obj, "ownerReferences")}
    node = (obj.get("spec") or {}).get("nodeName")
    if node:
        kept["spec"] = {"nodeName": node}
    ready = [_pick(c, ("type", "status")) for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    shown = _pick(status, ("podIP",))
    if ready:
        shown["conditions"] = ready
    if shown:
        kept["status"] = shown
    return kept


def node(obj: Object) -> Object:
    """A labelled node: its domain label and its NVLink clique."""
    return {"metadata": _metadata(obj, labels=(names.DOMAIN_LABEL, names.GPU_CLIQUE_LABEL))}


def claim(obj: Object) -> Object:
    """A claim: which node its allocation binds it to (our driver's results name the pool)."""
    kept: Object = {"metadata": _metadata(obj)}
    allocation = (obj.get("status") or {}).get("allocation")
    if allocation:
        results = (allocation.get("devices") or {}).get("results") or []
        ours = [
            _pick(r, ("driver", "pool", "device", "request"))
            for r in results
            if r.get("driver") == names.DRIVER
        ]
        shown = _pick(allocation, ("nodeSelector",))
        shown["devices"] = {"results": ours}
        kept["status"] = {"allocation": shown}
    return kept


def channel_claim(obj: Object) -> Object:
    """A claim in clique mode: also when it was created and allocated, which orders the channel queue."""
    kept = claim(obj)
    created = (obj.get("metadata") or {}).get("creationTimestamp")
    if created:
        kept["metadata"]["creationTimestamp"] = created
    allocated = ((obj.get("status") or {}).get("allocation") or {}).get("allocationTimestamp")
    if allocated and "status" in kept:
        kept["status"]["allocation"]["allocationTimestamp"] = allocated
    return kept


def without_status(obj: Object) -> Object:
    """A child whose status the reconcile never reads (a DaemonSet)."""
    return {key: value for key, value in obj.items() if key != "status"}
