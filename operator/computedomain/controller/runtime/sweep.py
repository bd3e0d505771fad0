"""The periodic sweep: remove children, clique objects and node labels whose domain no longer exists
(e.g. a domain whose finalizer was removed by hand, or objects left by an older installation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from computedomain import kube as k
from computedomain.controller.reconcile import teardown
from computedomain.controller.world import World
from computedomain.kube import Kube
from computedomain.kube.informer import resource_version_of
from computedomain.kube.retry import RetryPolicy, always, retry

logger = logging.getLogger(__name__)


async def sweep_once(kube: Kube, world: World) -> set[str]:
    """Remove what belongs to vanished domains; returns the UIDs cleaned up.

    Candidates are taken from the caches *before* listing the domains: a child we have seen was
    created after its domain, so a live domain is always in the list that follows.

    The list also corrects the domain cache: a domain the cache holds but the list lacks, though the
    list is newer than the cached state, is gone without its deletion having been seen (its finalizer
    removed by hand while the domain watch was re-listing). It is dropped, and what it left is swept.
    """
    await world.wait_synced()
    candidates = teardown.orphaned_uids(world)
    domains, version = await kube.list(k.DOMAINS)
    live = {str(d["metadata"]["uid"]) for d in domains}
    listed = resource_version_of({"metadata": {"resourceVersion": version}})
    vanished = {
        uid
        for uid, body in list(world.domains.items())
        if uid not in live and 0 < resource_version_of(body) <= listed
    }
    for uid in sorted(vanished):
        logger.info("ComputeDomain UID %s is gone though its deletion was never seen; forgetting it", uid)
        world.drop_domain(uid)
    orphans = (candidates | (teardown.orphaned_uids(world) & vanished)) - live
    for uid in sorted(orphans):
        logger.info("sweeping objects of vanished ComputeDomain UID %s", uid)
        await teardown.remove_everything(kube, world, uid)
    return orphans


async def sweep_forever(
    kube: Kube, world: World, interval: float, stray: asyncio.Event | None = None, settle: float = 2.0
) -> None:
    """Sweep once the caches are loaded, then every `interval` seconds, and `settle` seconds after
    `stray` is set (an object appeared for no known domain: a write that reached the API server
    after its domain was gone, e.g. sent by a replica that had lost its lease).

    A failed sweep (the API server unreachable, a write refused) is tried again after a short,
    growing delay rather than a whole interval; no failure ends the loop.
    """
    # A cut connection takes many shapes, and a refused write is retried too: none may end the sweep.
    policy = RetryPolicy(initial=1.0, maximum=min(60.0, interval), retry_on=always)
    wake = stray or asyncio.Event()

    async def attempt() -> set[str]:
        wake.clear()  # before the sweep: a stray seen during it wakes the next one
        return await sweep_once(kube, world)

    while True:
        await retry(attempt, what="sweep", policy=policy, log=logger)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
            await asyncio.sleep(settle)  # let a burst of strays arrive; sweep them at once
