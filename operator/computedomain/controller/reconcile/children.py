"""Bring a domain's child objects to their rendered state, writing only what differs."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

from computedomain.api.models import ComputeDomain
from computedomain.controller import world as w
from computedomain.controller.plan.problems import Problem
from computedomain.controller.world import World, domain_uid_of
from computedomain.kube import JSON_PATCH, Kind, Kube, KubeError, Object
from computedomain.kube.informer import object_key
from computedomain.kube.ownership import applied_fields, stale_fields, taken_over, updated_by
from computedomain.objects import contains

logger = logging.getLogger(__name__)


class Child(ABC):
    """One kind of child object: where the World caches it, how it is brought to its rendered state,
    and how it is pruned. `ensure` asks nothing about the kind; each kind answers for itself."""

    def __init__(self, informer: str) -> None:
        self.informer = informer

    def kind(self, world: World) -> Kind:
        """Where the kind lives in the REST API (the served resource.k8s.io version for templates)."""
        return world.kind(self.informer)

    def live(self, world: World, desired: Object) -> Object | None:
        """The cached live object `desired` describes, if the World has seen it."""
        return world.get(self.informer, object_key(desired))

    def related(self, world: World, uid: str) -> list[Object]:
        """Every cached object of this kind that carries the domain's label (none if not watched)."""
        return world.related(self.informer, uid) if world.watches(self.informer) else []

    @abstractmethod
    async def ensure(self, kube: Kube, world: World, desired: Object) -> None:
        """Bring one child to `desired`, writing nothing when the cached live object already holds it."""

    async def prune(self, kube: Kube, world: World, obj: Object) -> None:
        """Delete one child that is no longer wanted (already gone is fine)."""
        meta = obj["metadata"]
        await kube.delete(self.kind(world), meta["name"], meta.get("namespace"))
        world.forget(self.informer, obj)


class Applied(Child):
    """A child created and updated by server-side apply alone (DaemonSets, clique objects).

    Our field manager's apply then owns exactly the fields we render: a field we stop rendering shows
    in its managedFields (`stale_fields`), and the next apply, which no longer sets it, removes it. A
    field set by a plain POST would belong to an update entry instead, and no apply would ever
    remove it.
    """

    async def ensure(self, kube: Kube, world: World, desired: Object) -> None:
        """Apply `desired` unless the cached object holds it and nothing we stopped rendering."""
        kind = self.kind(world)
        live = self.live(world, desired)
        # An object our manager also wrote by POST, PUT or patch (an earlier version created children
        # by POST) is taken over by the apply entry once, so that later drops are seen and removed.
        adopt = live is not None and updated_by(live, kube.field_manager)
        if live is not None and not adopt and contains(live, desired) and not _stale(kube, live, desired):
            return
        if adopt:
            meta = desired["metadata"]
            full = await kube.get(kind, meta["name"], meta.get("namespace"))
            if full is not None and updated_by(full, kube.field_manager):
                await _take_over(kube, kind, full)
        result = await kube.apply(kind, desired)
        if not contains(result, desired):
            result = await restore(kube, kind, result, desired)
        if updated_by(result, kube.field_manager):
            # The patch made our manager an updater; its fields are rendered ones, so they count as
            # applied.
            result = await _take_over(kube, kind, result)
        world.record(self.informer, result)


class Replaced(Child):
    """A child whose spec is immutable (ResourceClaimTemplates): created by POST and replaced whole.

    The server even compares opaque parameters byte for byte, so a changed spec means delete and
    create; changed metadata alone is merge-patched.
    """

    async def ensure(self, kube: Kube, world: World, desired: Object) -> None:
        """Create `desired`, or bring the existing object to it."""
        kind = self.kind(world)
        live = self.live(world, desired)
        if live is None:
            try:
                world.record(self.informer, await kube.create(kind, desired))
                return
            except KubeError as error:
                if error.status != 409:
                    raise
            # Created since the cache looked: compare with what is there.
            meta = desired["metadata"]
            live = await kube.get(kind, meta["name"], meta.get("namespace"))
            if live is None:
                raise KubeError(409, f"{kind.plural} {object_key(desired)} was deleted while created")
        elif contains(live, desired):
            return
        await self._replace(kube, world, kind, live, desired)

    async def _replace(self, kube: Kube, world: World, kind: Kind, live: Object, desired: Object) -> None:
        meta = desired["metadata"]
        if contains(live.get("spec"), desired["spec"]):
            patch = {"metadata": {"labels": meta["labels"], "ownerReferences": meta.get("ownerReferences")}}
            world.record(self.informer, await kube.patch(kind, meta["name"], meta.get("namespace"), patch))
            return
        logger.info("replacing %s %s: its spec changed", desired.get("kind"), object_key(desired))
        await kube.delete(kind, meta["name"], meta.get("namespace"))
        world.forget(self.informer, live)
        world.record(self.informer, await kube.create(kind, desired))


DAEMONSETS: Child = Applied(w.DAEMONSETS)
TEMPLATES: Child = Replaced(w.TEMPLATES)
CLIQUES: Child = Applied(w.CLIQUES)
# In the order a domain's children are deleted: the DaemonSet first stops new daemon pods.
ALL: tuple[Child, ...] = (DAEMONSETS, TEMPLATES, CLIQUES)


async def restore(kube: Kube, kind: Kind, result: Object, desired: Object) -> Object:
    """Put the rendered content (everything but metadata) back over an applied object that differs.

    Apply keeps what others added (an extra env var, say) and may order merged lists its own way, so
    a hand-edited child can still differ after it: it is entirely ours, so it is overwritten.
    """
    meta = desired["metadata"]
    content = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind", "metadata")}
    logger.info("restoring %s %s/%s", desired["kind"], meta.get("namespace"), meta["name"])
    # A JSON patch that replaces each rendered field whole, guarded by the resourceVersion: it does
    # what a PUT of the content would, with the `patch` right the controller already has.
    guard = {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": result["metadata"]["resourceVersion"],
    }
    replace = [{"op": "add", "path": f"/{key}", "value": value} for key, value in content.items()]
    return await kube.patch(
        kind, meta["name"], meta.get("namespace"), [guard, *replace], content_type=JSON_PATCH
    )


async def _take_over(kube: Kube, kind: Kind, obj: Object) -> Object:
    """Make our apply entry the owner of what our manager wrote otherwise (`ownership.taken_over`)."""
    meta = obj["metadata"]
    logger.info("%s %s/%s: taken over by our apply", obj.get("kind"), meta.get("namespace"), meta["name"])
    # The resourceVersion makes it conditional: a changed object answers 409, which is retried.
    owners = {
        "managedFields": taken_over(obj, kube.field_manager),
        "resourceVersion": meta["resourceVersion"],
    }
    return await kube.patch(kind, meta["name"], meta.get("namespace"), {"metadata": owners})


def _stale(kube: Kube, live: Object, desired: Object) -> bool:
    """Whether our last apply set fields that `desired` no longer renders."""
    owned = applied_fields(live, kube.field_manager)
    if owned is None:
        return False
    stale = stale_fields(owned, desired)
    if stale:
        meta = desired["metadata"]
        logger.info(
            "%s %s/%s: removing fields no longer rendered: %s",
            desired["kind"],
            meta.get("namespace"),
            meta["name"],
            ", ".join(stale[:5]),
        )
    return bool(stale)


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
        await TEMPLATES.ensure(kube, world, desired)
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
        world.record(w.TEMPLATES, existing)
        await TEMPLATES.ensure(kube, world, desired)
        return None
    world.record(w.TEMPLATES, created)
    return None


def _name_conflict(domain: ComputeDomain, key: str, why: str) -> Problem:
    name = domain.spec.channel.resource_claim_template.name
    return Problem(
        "NameConflict",
        f"cannot create ResourceClaimTemplate {key}: {why}; choose another "
        f"spec.channel.resourceClaimTemplate.name than {name!r} (the existing object is left untouched)",
    )
