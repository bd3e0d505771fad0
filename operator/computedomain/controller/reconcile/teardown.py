"""Deleting a ComputeDomain: remove its children, clique objects and node labels, then let it go."""

from __future__ import annotations

import logging

from computedomain import kube as k
from computedomain.api import names
from computedomain.controller import world as w
from computedomain.controller.reconcile import children, nodelabels
from computedomain.controller.world import World
from computedomain.kube import JSON_PATCH, Kube, KubeError, Object

logger = logging.getLogger(__name__)


async def remove_everything(kube: Kube, world: World, uid: str) -> None:
    """Delete every object labelled with the domain's UID and remove its node labels.

    Deleting the DaemonSet first stops new daemon pods; removing the node labels last is what the
    reference does on deletion too (running workloads lose their IMEX daemons).
    """
    for child in children.ALL:
        for obj in child.related(world, uid):
            await child.prune(kube, world, obj)
    for node in world.nodes_of(uid):
        result = await nodelabels.remove_label(kube, node, uid)
        if result is not None:
            world.record(w.NODES, result)


async def finalize(kube: Kube, world: World, body: Object) -> None:
    """Tear the domain down, then remove our finalizer so the API server can delete it."""
    meta = body["metadata"]
    uid = str(meta["uid"])
    await remove_everything(kube, world, uid)
    finalizers = meta.get("finalizers") or []
    if names.FINALIZER not in finalizers:
        return
    index = finalizers.index(names.FINALIZER)
    patch = [
        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": names.FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
    ]
    try:
        result = await kube.patch(k.DOMAINS, meta["name"], meta["namespace"], patch, content_type=JSON_PATCH)
    except KubeError as error:
        if error.status == 404:
            return
        raise  # 422: the list changed under us; the next pass sees the new one
    logger.info("ComputeDomain %s/%s finalized", meta["namespace"], meta["name"])
    if result.get("metadata", {}).get("deletionTimestamp") and not result["metadata"].get("finalizers"):
        world.drop_domain(uid)
    else:
        world.record_write(result)


def orphaned_uids(world: World) -> set[str]:
    """UIDs that some labelled object points to but no known domain has (candidates for the sweep)."""
    kinds = [*(child.informer for child in children.ALL), w.NODES]
    return world.labelled_uids(kinds) - set(world.domains)
