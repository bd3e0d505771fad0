"""Apply a domain's membership plan: node labels first, then its clique objects.

The writes of one step go out side by side, a few at a time: when a 5,000-node job is scheduled,
hundreds of nodes join between two reconciles, and one round trip after another would make the
last of them wait for all the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from computedomain.api.models import ComputeDomain
from computedomain.controller import world as w
from computedomain.controller.plan.domain_members import MembershipPlan
from computedomain.controller.reconcile import children, nodelabels
from computedomain.controller.render.cliques import clique_object
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.kube import Kube, Object

# Writes of one step in flight at once (the reconciles share the client's connections).
PARALLEL_WRITES = 8

T = TypeVar("T")


async def _each(items: Iterable[T], write: Callable[[T], Awaitable[None]]) -> None:
    """`write(item)` for every item, PARALLEL_WRITES at a time; the first failure is raised once all
    writes have ended (none is left running behind the reconcile)."""
    gate = asyncio.Semaphore(PARALLEL_WRITES)

    async def one(item: T) -> None:
        async with gate:
            await write(item)

    results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def apply_labels(kube: Kube, world: World, uid: str, plan: MembershipPlan) -> list[str]:
    """Add and remove the domain label as planned; returns the nodes whose label another writer holds."""
    refused: list[str] = []

    async def add(node: str) -> None:
        result = await nodelabels.add_label(kube, node, uid)
        if result is None:
            refused.append(node)
        elif result != nodelabels.GONE:
            world.record(w.NODES, result)

    async def remove(node: str) -> None:
        result = await nodelabels.remove_label(kube, node, uid)
        if result is not None:
            world.record(w.NODES, result)

    await _each(plan.labels.add, add)
    await _each(plan.labels.remove, remove)
    return sorted(refused)


async def apply_cliques(
    kube: Kube, world: World, domain: ComputeDomain, settings: Settings, plan: MembershipPlan
) -> None:
    """Write the planned clique objects that differ, then delete the ones no longer wanted."""
    manifests = [clique_object(domain, settings, c, daemons) for c, daemons in plan.cliques.cliques.items()]

    async def ensure(manifest: Object) -> None:
        await children.CLIQUES.ensure(kube, world, manifest)

    async def prune(obj: Object) -> None:
        await children.CLIQUES.prune(kube, world, obj)

    await _each(manifests, ensure)
    await _each(plan.prune, prune)
