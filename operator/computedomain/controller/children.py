"""Bring a domain's child objects to their rendered state, writing only what differs."""

from __future__ import annotations

import logging

from computedomain.api.models import ComputeDomain
from computedomain.controller import world as w
from computedomain.controller.render.status import Problem
from computedomain.controller.world import World, domain_uid_of
from computedomain.kube import Kind, Kube, KubeError, Object
from computedomain.kube.contains import contains
from computedomain.kube.informer import object_key

logger = logging.getLogger(__name__)


async def ensure(kube: Kube, world: World, informer: str, kind: Kind, desired: Object) -> None:
    """Bring one child to `desired`, writing nothing when the cached live object already holds it.

    A missing DaemonSet or template is created with a plain POST, which costs the API server
    noticeably less than a server-side apply that creates (a burst of new domains is bounded by the
    API server's CPU); a drifted one is applied. Clique objects are always applied, so that entries
    of nodes that left are removed by the apply itself.
    """
    live = world.get(informer, object_key(desired))
    if live is not None and contains(live, desired):
        return
    if informer == w.TEMPLATES and live is not None:
        await _replace_template(kube, world, kind, live, desired)
        return
    if live is None and informer != w.CLIQUES:
        try:
            world.informers[informer].upsert(await kube.create(kind, desired))
            return
        except KubeError as error:
            if error.status != 409:
                raise
    result = await kube.apply(kind, desired)
    if not contains(result, desired):
        # Apply keeps what others added (an extra env var, say) and may order merged lists its own
        # way, so a hand-edited child can still differ: it is entirely ours, so put the rendered
        # content (everything but metadata) back over the live object.
        meta = desired["metadata"]
        content = {
            key: value for key, value in desired.items() if key not in ("apiVersion", "kind", "metadata")
        }
        logger.info("restoring %s %s/%s", desired["kind"], meta.get("namespace"), meta["name"])
        path = kind.path(meta.get("namespace"), meta["name"])
        result = await kube.call("PUT", path, body={**result, **content})
    world.informers[informer].upsert(result)


async def _replace_template(kube: Kube, world: World, kind: Kind, live: Object, desired: Object) -> None:
    """Bring a ResourceClaimTemplate back to its rendered state.

    A template's spec is immutable (the server even compares opaque parameters byte for byte), so a
    changed spec means delete and create; changed metadata alone is merge-patched.
    """
    meta = desired["metadata"]
    if contains(live.get("spec"), desired["spec"]):
        patch = {"metadata": {"labels": meta["labels"], "ownerReferences": meta.get("ownerReferences")}}
        world.informers[w.TEMPLATES].upsert(await kube.patch(kind, meta["name"], meta["namespace"], patch))
        return
    logger.info("replacing ResourceClaimTemplate %s/%s: its spec changed", meta["namespace"], meta["name"])
    await kube.delete(kind, meta["name"], meta["namespace"])
    world.informers[w.TEMPLATES].forget(live)
    world.informers[w.TEMPLATES].upsert(await kube.create(kind, desired))


async def ensure_workload_template(
    kube: Kube, world: World, kind: Kind, domain: ComputeDomain, desired: Object
) -> Problem | None:
    """Create or update the workload ResourceClaimTemplate, never taking over one that is not ours.

    Our informer sees only templates that carry a domain label, so a missing cache entry is created
    with a plain POST: if the name is taken, the server says so and nothing is overwritten.
    """
    key = object_key(desired)
    live = world.get(w.TEMPLATES, key)
    if live is not None and domain_uid_of(live) != domain.uid:
        return _name_conflict(domain, key, f"it belongs to ComputeDomain UID {domain_uid_of(live)}")
    if live is not None:
        await ensure(kube, world, w.TEMPLATES, kind, desired)
        return None
    try:
        created = await kube.create(kind, desired)
    except KubeError as error:
        if error.namespace_terminating:
            # The domain's namespace is being deleted, and the domain with it: nothing to create.
            return None
        if error.status != 409:
            raise
        existing = await kube.get(kind, desired["metadata"]["name"], desired["metadata"]["namespace"])
        if existing is None or domain_uid_of(existing) != domain.uid:
            return _name_conflict(domain, key, "a ResourceClaimTemplate of that name already exists")
        world.informers[w.TEMPLATES].upsert(existing)
        await ensure(kube, world, w.TEMPLATES, kind, desired)
        return None
    world.informers[w.TEMPLATES].upsert(created)
    return None


def _name_conflict(domain: ComputeDomain, key: str, why: str) -> Problem:
    name = domain.spec.channel.resource_claim_template.name
    return Problem(
        "NameConflict",
        f"cannot create ResourceClaimTemplate {key}: {why}; choose another "
        f"spec.channel.resourceClaimTemplate.name than {name!r} (the existing object is left untouched)",
    )


async def prune(kube: Kube, world: World, informer: str, kind: Kind, uid: str, keep: set[str]) -> None:
    """Delete the domain's objects of one kind that are no longer desired."""
    for obj in world.related(informer, uid):
        if object_key(obj) in keep:
            continue
        meta = obj["metadata"]
        await kube.delete(kind, meta["name"], meta.get("namespace"))
        world.informers[informer].forget(obj)
