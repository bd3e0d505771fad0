"""Apply a domain's membership plan: node labels first, then its clique objects."""

from __future__ import annotations

from computedomain import kube as k
from computedomain.api.models import ComputeDomain
from computedomain.controller import children, nodelabels
from computedomain.controller import world as w
from computedomain.controller.plan.domain_members import MembershipPlan
from computedomain.controller.render.cliques import clique_object
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.kube import Kube


async def apply_labels(kube: Kube, world: World, uid: str, plan: MembershipPlan) -> list[str]:
    """Add and remove the domain label as planned; returns the nodes whose label another writer holds."""
    refused: list[str] = []
    for node in plan.labels.add:
        result = await nodelabels.add_label(kube, node, uid)
        if result is None:
            refused.append(node)
        else:
            world.record(w.NODES, result)
    for node in plan.labels.remove:
        result = await nodelabels.remove_label(kube, node, uid)
        if result is not None:
            world.record(w.NODES, result)
    return refused


async def apply_cliques(
    kube: Kube, world: World, domain: ComputeDomain, settings: Settings, plan: MembershipPlan
) -> None:
    """Write the planned clique objects that differ, then delete the ones no longer wanted."""
    for clique_id, daemons in plan.cliques.cliques.items():
        manifest = clique_object(domain, settings, clique_id, daemons)
        await children.ensure(kube, world, w.CLIQUES, k.CLIQUES, manifest)
    for obj in plan.prune:
        meta = obj["metadata"]
        await kube.delete(k.CLIQUES, meta["name"], meta.get("namespace"))
        world.forget(w.CLIQUES, obj)
