"""Clique mode: the cluster-level reconcile of the long-running IMEX daemons.

One key of the work queue (`KEY`) stands for all of them. A pass applies the DaemonSet and its daemon
claim template, then keeps one peer object `imex.<clique ID>` per clique, its daemons' indices planned
by the same clique planner a domain's daemons use (`controller.plan.cliques`): a daemon keeps its
index while it stays in its clique, a newcomer takes the lowest free one. The caches here are small
informers of their own, narrowed by the clique daemons' label (and nodes by their clique label), so
the per-domain caches and their sweep never see these objects. A pass that changes nothing writes
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from computedomain import kube as k
from computedomain.api import names
from computedomain.api.models import ComputeDomainClique
from computedomain.controller import shapes
from computedomain.controller.plan.cliques import CliquePlan, plan_cliques
from computedomain.controller.plan.membership import members
from computedomain.controller.reconcile.children import restore
from computedomain.controller.render import cliquedaemons as render
from computedomain.controller.settings import Settings
from computedomain.kube import Kube, KubeError, Object
from computedomain.kube.informer import Informer, Shape, object_key
from computedomain.kube.ownership import applied_fields, stale_fields
from computedomain.objects import contains

logger = logging.getLogger(__name__)

# The work queue's key for the clique daemons; a domain's key is its UID, which never looks like this.
KEY = "clique-daemons"

_DAEMONSETS = "clique-daemonsets"
_TEMPLATES = "clique-templates"
_PODS = "clique-daemon-pods"
_PEERS = "clique-peers"
_NODES = "clique-nodes"


class CliqueDaemons:
    """The caches and the reconcile of the clique daemons; `run` feeds the caches, a call reconciles."""

    def __init__(
        self, kube: Kube, settings: Settings, resource_version: str | None, notify: Callable[[str], None]
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.resource_version = resource_version
        self.notify = notify
        namespace = settings.namespace
        self._informers: dict[str, Informer] = {
            _DAEMONSETS: self._informer(_DAEMONSETS, k.DAEMONSETS, namespace, shapes.without_status, True),
            _PODS: self._informer(_PODS, k.PODS, namespace, shapes.pod),
            _PEERS: self._informer(_PEERS, k.CLIQUES, namespace, None, True),
            # Every node with a clique label, whatever its value: the nodes the DaemonSet runs on.
            _NODES: self._informer(_NODES, k.NODES, None, shapes.node, selector=names.GPU_CLIQUE_LABEL),
        }
        if resource_version is not None:
            self._informers[_TEMPLATES] = self._informer(
                _TEMPLATES, k.claim_templates(resource_version), namespace, None
            )

    def _informer(
        self,
        name: str,
        kind: k.Kind,
        namespace: str | None,
        shape: Shape | None,
        applied: bool = False,
        selector: str = render.SELECTOR,
    ) -> Informer:
        def handle(event: str, obj: Object, old: Object | None) -> None:
            if event != "MODIFIED" or _relevant(name, old, obj):
                self.notify(KEY)

        return Informer(
            self.kube,
            kind,
            handle,
            namespace=namespace,
            label_selector=selector,
            name=name,
            keep_applied_by=self.kube.field_manager if applied else None,
            shape=shape,
        )

    async def run(self) -> None:
        """Run every informer until cancelled."""
        await asyncio.gather(*(informer.run() for informer in self._informers.values()))

    def synced(self) -> bool:
        """Whether every cache has loaded its first list."""
        return all(informer.synced.is_set() for informer in self._informers.values())

    async def wait_synced(self) -> None:
        """Wait until every cache has loaded its first list."""
        await asyncio.gather(*(informer.synced.wait() for informer in self._informers.values()))

    def plan(self) -> CliquePlan:
        """The peer layout of every clique, from the cached daemon pods, nodes and peer objects."""
        node_cliques: dict[str, str] = {}
        for node in self._informers[_NODES].store.values():
            clique = (node["metadata"].get("labels") or {}).get(names.GPU_CLIQUE_LABEL)
            if clique:
                node_cliques[str(node["metadata"]["name"])] = str(clique)
        found, _ = members(self._informers[_PODS].store.values(), node_cliques, render.NAME)
        previous = [ComputeDomainClique.model_validate(o) for o in self._informers[_PEERS].store.values()]
        return plan_cliques(previous, found, self.settings.max_nodes_per_clique)

    async def __call__(self, key: str) -> float | None:
        """Bring the DaemonSet, its template and the peer objects to their rendered state."""
        await self.wait_synced()
        if self.resource_version is None:
            logger.warning(
                "the API server serves no resource.k8s.io version: the clique daemons cannot get their claims"
            )
        else:
            await self._ensure_template(render.daemon_claim_template(self.settings, self.resource_version))
            await self._apply(_DAEMONSETS, render.daemonset(self.settings))
        plan = self.plan()
        for clique_id, left_out in sorted(plan.overflow.items()):
            logger.warning(
                "clique %s has more than %d nodes; left without an IMEX slot: %s",
                clique_id,
                plan.max_nodes,
                ", ".join(left_out),
            )
        wanted = {
            render.peers_name(clique_id): render.peers_object(self.settings, clique_id, daemons)
            for clique_id, daemons in plan.cliques.items()
        }
        await asyncio.gather(*(self._apply(_PEERS, desired) for desired in wanted.values()))
        peers = self._informers[_PEERS]
        for obj in list(peers.store.values()):
            if obj["metadata"]["name"] not in wanted:
                # No daemon of this clique is left: its peers have nobody to find.
                logger.info("deleting peer object %s: its clique has no daemon", obj["metadata"]["name"])
                await self.kube.delete(k.CLIQUES, obj["metadata"]["name"], self.settings.namespace)
                peers.forget(obj)
        return None

    async def _apply(self, name: str, desired: Object) -> None:
        """Server-side apply `desired` unless the cached object holds it and nothing we stopped rendering."""
        informer = self._informers[name]
        live = informer.store.get(object_key(desired))
        if live is not None and contains(live, desired) and not _stale(self.kube, live, desired):
            return
        result = await self.kube.apply(informer.kind, desired)
        if not contains(result, desired):
            # Another writer's fields merged into ours (a hand edit): the objects are the controller's
            # alone, so the rendering is put back, in place (the daemons keep running).
            result = await restore(self.kube, informer.kind, result, desired)
        informer.upsert(result)

    async def _ensure_template(self, desired: Object) -> None:
        """Create the claim template, or replace it whole when its (immutable) spec changed."""
        informer = self._informers[_TEMPLATES]
        meta = desired["metadata"]
        live = informer.store.get(object_key(desired))
        if live is not None:
            if contains(live, desired):
                return
            logger.info("replacing ResourceClaimTemplate %s: its spec changed", meta["name"])
            await self.kube.delete(informer.kind, meta["name"], meta["namespace"])
            informer.forget(live)
        try:
            informer.upsert(await self.kube.create(informer.kind, desired))
        except KubeError as error:
            if error.status != 409:
                raise
            # Created since the cache looked; the next pass compares it with the rendering.
            found = await self.kube.get(informer.kind, meta["name"], meta["namespace"])
            if found is not None:
                informer.upsert(found)
            self.notify(KEY)


def _stale(kube: Kube, live: Object, desired: Object) -> bool:
    owned = applied_fields(live, kube.field_manager)
    return owned is not None and bool(stale_fields(owned, desired))


def _labels(obj: Object | None) -> dict[str, str]:
    return dict((obj or {}).get("metadata", {}).get("labels") or {})


def _relevant(name: str, old: Object | None, new: Object) -> bool:
    """Whether a modification can change what a pass does: not the DaemonSet controller's status
    writes (the cache drops the status) nor node heartbeats."""
    if old is None:
        return True
    if name in (_DAEMONSETS, _TEMPLATES):
        return old["metadata"].get("generation") != new["metadata"].get("generation") or _labels(
            old
        ) != _labels(new)
    if name == _NODES:
        return _labels(old).get(names.GPU_CLIQUE_LABEL) != _labels(new).get(names.GPU_CLIQUE_LABEL)
    return True
