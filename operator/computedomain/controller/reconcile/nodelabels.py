"""Domain membership labels on nodes: `resource.nvidia.com/computeDomain=<uid>` makes the domain's
DaemonSet start an IMEX daemon on the node.

Both writes are JSON patches that first test the label: adding requires it absent, so a label another
writer set is never changed; removing requires it to name the domain, so another domain's label is
never removed. A JSON patch of a node that is gone fails with 404. Server-side apply would not: on a
missing Node it creates one holding nothing but our label, and the domain's DaemonSet would then
start a daemon for a node that does not exist.
"""

from __future__ import annotations

from typing import Final, Literal

from computedomain.api import names
from computedomain.kube import JSON_PATCH, NODES, Kube, KubeError, Object

# What `add_label` answers for a node deleted since the plan was made: not a refusal by another
# writer (the domain's status must not report a conflict), only a node the next plan will not name.
GONE: Final = "gone"


def _label_path() -> str:
    return "/metadata/labels/" + names.DOMAIN_LABEL.replace("~", "~0").replace("/", "~1")


async def add_label(kube: Kube, node: str, uid: str) -> Object | Literal["gone"] | None:
    """Label `node` for domain `uid`: the node as written, `GONE` if the node no longer exists, or
    None if another writer holds the label."""
    # A `test` of null passes only where the label is absent.
    patch = [
        {"op": "test", "path": _label_path(), "value": None},
        {"op": "add", "path": _label_path(), "value": uid},
    ]
    try:
        return await kube.patch(NODES, node, None, patch, content_type=JSON_PATCH)
    except KubeError as error:
        if error.status == 404:
            return GONE
        if error.status != 422:
            raise
        refusal = error
    # The test failed: the label is there already (ours, by a write the cache has not seen yet, or
    # another writer's), or the node has no labels at all, which no path into them can reach.
    live = await kube.get(NODES, node)
    if live is None:
        return GONE
    meta = live["metadata"]
    if meta.get("labels"):
        held = meta["labels"].get(names.DOMAIN_LABEL)
        if held is None:
            # The test holds on this node, so the server refused the label itself.
            raise refusal
        return live if held == uid else None
    first = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        {"op": "add", "path": "/metadata/labels", "value": {names.DOMAIN_LABEL: uid}},
    ]
    try:
        return await kube.patch(NODES, node, None, first, content_type=JSON_PATCH)
    except KubeError as error:
        # Gone since, or changed since: the next reconcile plans from the new state.
        if error.status == 404:
            return GONE
        if error.status == 422:
            return None
        raise


async def remove_label(kube: Kube, node: str, uid: str) -> Object | None:
    """Remove the domain label from `node` if it still names `uid`; None if there was nothing to do."""
    patch = [
        {"op": "test", "path": _label_path(), "value": uid},
        {"op": "remove", "path": _label_path()},
    ]
    try:
        return await kube.patch(NODES, node, None, patch, content_type=JSON_PATCH)
    except KubeError as error:
        # 422: the test failed (label changed or gone); 404: node gone. Either way, not ours to remove.
        if error.status in (404, 422):
            return None
        raise
