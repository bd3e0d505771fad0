"""Domain membership labels on nodes: `resource.nvidia.com/computeDomain=<uid>` makes the domain's
DaemonSet start an IMEX daemon on the node.

Adding uses server-side apply without force, so a label another writer owns is never taken over;
removing uses a JSON patch that first tests the value, so another domain's label is never removed.
"""

from __future__ import annotations

from computedomain.api import names
from computedomain.kube import JSON_PATCH, NODES, Kube, KubeError, Object


def node_label_manifest(node: str, uid: str) -> Object:
    """The partial Node our field manager applies: only the domain label."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {names.DOMAIN_LABEL: uid}},
    }


def _label_path() -> str:
    return "/metadata/labels/" + names.DOMAIN_LABEL.replace("~", "~0").replace("/", "~1")


async def add_label(kube: Kube, node: str, uid: str) -> Object | None:
    """Label `node` for domain `uid`; None if the node is gone or the label is owned by someone else."""
    try:
        return await kube.apply(NODES, node_label_manifest(node, uid), force=False)
    except KubeError as error:
        if error.status in (404, 409):
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
