"""What the controller knows of the cluster: the ComputeDomains and, per domain, its children,
daemon pods, allocated claims, clique objects and member nodes, all indexed by the domain's UID."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

from computedomain import kube as k
from computedomain.api import names
from computedomain.controller import shapes
from computedomain.controller.plan.channels import ChannelClaim, Holding, holding_of, stamp
from computedomain.controller.plan.membership import ClaimFacts, DaemonFacts, claim_facts, daemon_facts
from computedomain.kube import Kube, Object
from computedomain.kube.informer import Informer, Shape, object_key, resource_version_of
from computedomain.kube.store import Store

DAEMONSETS = "daemonsets"
TEMPLATES = "templates"
PODS = "pods"
CLAIMS = "claims"
CLIQUES = "cliques"
NODES = "nodes"
# Clique mode: every node with an NVLink clique label, whatever domain it serves.
GPU_NODES = "gpunodes"

T = TypeVar("T")


def domain_uid_of(obj: Object | None) -> str | None:
    """The UID in an object's domain label, if it has one."""
    if obj is None:
        return None
    labels = obj.get("metadata", {}).get("labels") or {}
    value = labels.get(names.DOMAIN_LABEL)
    return str(value) if value else None


class World:
    """Informers for every related kind plus the domains themselves, with a per-domain index.

    Every change calls `notify(uid)` for the domain(s) it concerns (old and new label value).
    """

    def __init__(
        self, kube: Kube, namespace: str, resource_version: str | None, notify: Callable[[str], None]
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.resource_version = resource_version
        self.notify = notify
        # Called with the UID of an object that appears for no known domain (for the sweep).
        self.on_stray: Callable[[str], None] | None = None
        # Kept encoded like every cache (`kube.store`); a reconcile decodes the one it works on.
        self.domains = Store()
        self._domain_versions: dict[str, int] = {}
        self._index: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        # node name -> (domain UID of its label, its NVLink clique): all the planners read of nodes.
        self._nodes: dict[str, tuple[str, str]] = {}
        # What the membership planner reads of each labelled claim and pod, kept beside the encoded
        # object: a 5,000-node domain's reconcile would otherwise decode 15,000 objects each time.
        self._claims: dict[str, ClaimFacts] = {}
        self._daemons: dict[str, DaemonFacts] = {}
        # Clique mode (`use_clique_mode`): what the channel planner reads, for every domain at once.
        self.clique_mode = False
        self._node_cliques: dict[str, str] = {}
        # Nodes that left a clique while this process watched (label removed or changed, node
        # deleted) -> that clique: their claims keep the domain's channel there until deallocated.
        self._former_cliques: dict[str, str] = {}
        self._channel_claims: dict[str, ChannelClaim] = {}
        self._holdings: dict[str, Holding] = {}
        # UID -> namespace of the domains that may take a channel (live, Single, of this mode).
        self._eligible: dict[str, str] = {}
        selector = names.DOMAIN_LABEL
        self._informers: dict[str, Informer] = {
            DAEMONSETS: self._informer(
                DAEMONSETS, k.DAEMONSETS, namespace, selector, shapes.without_status, applied=True
            ),
            PODS: self._informer(PODS, k.PODS, namespace, selector, shapes.pod),
            CLIQUES: self._informer(CLIQUES, k.CLIQUES, namespace, selector, None, applied=True),
            NODES: self._informer(NODES, k.NODES, None, selector, shapes.node),
        }
        # Without a served resource.k8s.io version there are no templates or claims to watch; the
        # reconcile reports that on each domain instead.
        if resource_version is not None:
            self._informers[TEMPLATES] = self._informer(
                TEMPLATES, k.claim_templates(resource_version), None, selector, None
            )
            self._informers[CLAIMS] = self._informer(
                CLAIMS, k.claims(resource_version), None, selector, shapes.claim
            )

    def _informer(
        self,
        name: str,
        kind: k.Kind,
        namespace: str | None,
        selector: str,
        shape: Shape | None,
        applied: bool = False,
    ) -> Informer:
        """An informer feeding the per-domain index; with `applied`, its cache keeps what our field
        manager applied (the kinds `children` applies, to see fields we stopped rendering)."""

        def handle(event: str, obj: Object, old: Object | None) -> None:
            key = object_key(obj)
            if name == NODES:
                self._index_node(event, obj)
            elif name == CLAIMS:
                _keep(self._claims, key, claim_facts, event, obj)
                if self.clique_mode:
                    self._keep_channel_claim(key, event, obj)
            elif name == CLIQUES and self.clique_mode:
                self._keep_holding(key, event, obj)
            elif name == PODS:
                _keep(self._daemons, key, daemon_facts, event, obj)
            for uid in {domain_uid_of(old), domain_uid_of(obj)} - {None}:
                assert uid is not None
                keys = self._index[name][uid]
                if event == "DELETED" or domain_uid_of(obj) != uid:
                    keys.discard(key)
                    if not keys:
                        del self._index[name][uid]
                else:
                    keys.add(key)
                if uid in self.domains and (event != "MODIFIED" or _relevant(name, old, obj)):
                    self.notify(uid)
                elif uid not in self.domains and event != "DELETED" and self.on_stray is not None:
                    self.on_stray(uid)

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

    def _index_node(self, event: str, node: Object) -> None:
        name = str(node["metadata"]["name"])
        owner = domain_uid_of(node)
        if event == "DELETED" or owner is None:
            self._nodes.pop(name, None)
        else:
            clique = str((node["metadata"].get("labels") or {}).get(names.GPU_CLIQUE_LABEL, ""))
            self._nodes[name] = (owner, clique)

    def use_clique_mode(self) -> None:
        """Cache what clique mode plans from: every node's clique and the claims' times. Call before `run`."""
        if self.clique_mode:
            return
        self.clique_mode = True
        self._informers[GPU_NODES] = Informer(
            self.kube,
            k.NODES,
            self._gpu_node_event,
            label_selector=names.GPU_CLIQUE_LABEL,
            name=GPU_NODES,
            shape=shapes.node,
        )
        if CLAIMS in self._informers:
            old = self._informers[CLAIMS]
            self._informers[CLAIMS] = self._informer(
                CLAIMS, old.kind, None, names.DOMAIN_LABEL, shapes.channel_claim
            )

    def _gpu_node_event(self, event: str, node: Object, old: Object | None) -> None:
        name = str(node["metadata"]["name"])
        clique = str((node["metadata"].get("labels") or {}).get(names.GPU_CLIQUE_LABEL, ""))
        before = self._node_cliques.get(name, "")
        if event == "DELETED" or not clique:
            self._node_cliques.pop(name, None)
            clique = ""
        else:
            self._node_cliques[name] = clique
        if clique != before:
            if before:
                self._former_cliques[name] = before
            if clique and self._former_cliques.get(name) == clique:
                del self._former_cliques[name]
            for uid in {c.domain for c in self._channel_claims.values() if c.node == name}:
                if uid in self.domains:
                    self.notify(uid)

    def _keep_channel_claim(self, key: str, event: str, claim: Object) -> None:
        meta = claim.get("metadata", {})
        uid, node = domain_uid_of(claim), claim_facts(claim).node
        if event == "DELETED" or uid is None or node is None:
            self._channel_claims.pop(key, None)
            return
        known = self._channel_claims.get(key)
        if known is not None and known.node == node:
            seen = known.seen
        elif self._informers[CLAIMS].synced.is_set():
            # Allocated while we watch: the watch's order is the order the API server stored, finer
            # than the claim's whole-second allocation time; it orders the channel queue.
            seen = stamp(datetime.now(UTC))
        else:
            seen = ""  # found in the first list: its own times are all there is
        allocation = (claim.get("status") or {}).get("allocation") or {}
        self._channel_claims[key] = ChannelClaim(
            domain=uid,
            namespace=str(meta.get("namespace", "")),
            node=node,
            allocated_at=str(allocation.get("allocationTimestamp", "")),
            created=str(meta.get("creationTimestamp", "")),
            uid=str(meta.get("uid", "")),
            seen=seen,
        )

    def _keep_holding(self, key: str, event: str, obj: Object) -> None:
        before = self._holdings.get(key)
        now = None if event == "DELETED" else holding_of(obj)
        if now is None:
            self._holdings.pop(key, None)
        else:
            self._holdings[key] = now
        freed = before is not None and before.channel is not None and (now is None or now.channel is None)
        if freed:
            assert before is not None
            # A channel went back to the pool: the domains waiting in that clique may take it now.
            for holding in list(self._holdings.values()):
                if (
                    holding.clique == before.clique
                    and holding.channel is None
                    and holding.domain in self.domains
                ):
                    self.notify(holding.domain)

    def node_cliques(self) -> dict[str, str]:
        """Clique mode: node name -> its NVLink clique, for every node that has one."""
        return self._node_cliques

    def former_cliques(self) -> dict[str, str]:
        """Clique mode: node name -> the clique it left while this process watched."""
        return self._former_cliques

    def channel_claims(self) -> list[ChannelClaim]:
        """Clique mode: the allocated claims of every domain."""
        return list(self._channel_claims.values())

    def holdings(self) -> list[Holding]:
        """Clique mode: every clique object of every domain and the channel it holds."""
        return list(self._holdings.values())

    def eligible(self) -> dict[str, str]:
        """Clique mode: UID -> namespace of the domains that may take a channel."""
        return self._eligible

    def set_domain(self, body: Object) -> bool:
        """Record the latest state of a domain (from its watch); False if it was known already.

        `body` is not changed (it may be the framework's own): the store encodes a copy without
        managedFields.
        """
        uid = str(body["metadata"]["uid"])
        known = self._domain_versions.get(uid)
        if known is None or resource_version_of(body) > known:
            meta = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
            self.domains.put(uid, {**body, "metadata": meta})
            self._domain_versions[uid] = resource_version_of(body)
            if takes_channels(body):
                self._eligible[uid] = str(meta.get("namespace", ""))
            else:
                self._eligible.pop(uid, None)
            return True
        return False

    def record_write(self, body: Object) -> Object:
        """Record the result of our own write to a domain and return the (newest) cached body."""
        self.set_domain(body)
        return self.domains[str(body["metadata"]["uid"])]

    def drop_domain(self, uid: str) -> None:
        """Forget a domain that no longer exists."""
        self.domains.pop(uid)
        self._domain_versions.pop(uid, None)
        self._eligible.pop(uid, None)

    def related(self, name: str, uid: str) -> list[Object]:
        """Objects of one related kind that carry the domain's label (none if the kind is not watched)."""
        informer = self._informers.get(name)
        if informer is None:
            return []
        store = informer.store
        return [store[key] for key in sorted(self._index[name].get(uid, ())) if key in store]

    def claim_facts(self, uid: str) -> list[ClaimFacts]:
        """What the planner reads of the domain's labelled claims, in key order."""
        return self._facts(CLAIMS, self._claims, uid)

    def daemon_facts(self, uid: str) -> list[DaemonFacts]:
        """What the planner reads of the domain's labelled pods, in key order."""
        return self._facts(PODS, self._daemons, uid)

    def _facts(self, name: str, facts: dict[str, T], uid: str) -> list[T]:
        return [facts[key] for key in sorted(self._index[name].get(uid, ())) if key in facts]

    def get(self, name: str, key: str) -> Object | None:
        """One cached object by `namespace/name` (or `name`)."""
        informer = self._informers.get(name)
        return informer.store.get(key) if informer else None

    def labelled_nodes(self) -> dict[str, tuple[str, str]]:
        """node name -> (domain UID of its label, its NVLink clique), for every labelled node."""
        return self._nodes

    def nodes_of(self, uid: str) -> list[str]:
        """The names of the nodes that carry the domain's label, sorted."""
        return sorted(self._index[NODES].get(uid, ()))

    def cache_figures(self) -> dict[str, tuple[int, int]]:
        """Per cached kind: (objects, encoded bytes); the domains themselves under "computedomains"."""
        figures = {name: (len(i.store), i.store.size) for name, i in self._informers.items()}
        figures[names.DOMAIN_PLURAL] = (len(self.domains), self.domains.size)
        return figures

    def watches(self, name: str) -> bool:
        """Whether a related kind is watched (templates and claims need a served resource.k8s.io)."""
        return name in self._informers

    def kind(self, name: str) -> k.Kind:
        """Where a watched related kind lives in the REST API."""
        return self._informers[name].kind

    def record(self, name: str, obj: Object) -> None:
        """Record the result of our own write of a related object before its watch event arrives."""
        self._informers[name].upsert(obj)

    def forget(self, name: str, obj: Object) -> None:
        """Drop a related object we deleted ourselves."""
        self._informers[name].forget(obj)

    def synced(self) -> bool:
        """Whether every cache has loaded its first list."""
        return all(informer.synced.is_set() for informer in self._informers.values())

    def labelled_uids(self, kinds: Iterable[str]) -> set[str]:
        """Every domain UID that some cached object of the given kinds still points to."""
        return {uid for name in kinds for uid in self._index[name]}

    async def run(self) -> None:
        """Run every informer until cancelled."""
        await asyncio.gather(*(informer.run() for informer in self._informers.values()))

    async def wait_synced(self) -> None:
        """Wait until every informer has loaded its first list."""
        await asyncio.gather(*(informer.synced.wait() for informer in self._informers.values()))


def recorded_mode(body: Object) -> str | None:
    """The IMEX mode a domain was reconciled under; None for one never reconciled (no finalizer).

    Domains finalized before clique mode existed carry no annotation: they are of domain mode.
    """
    meta = body.get("metadata") or {}
    mode = (meta.get("annotations") or {}).get(names.IMEX_MODE_ANNOTATION)
    if mode:
        return str(mode)
    return names.IMEX_MODE_DOMAIN if names.FINALIZER in (meta.get("finalizers") or []) else None


def all_channels(body: Object) -> bool:
    """Whether the domain asks for every channel (`allocationMode: All`)."""
    channel = (body.get("spec") or {}).get("channel") or {}
    return channel.get("allocationMode") == "All"


def takes_channels(body: Object) -> bool:
    """Clique mode: whether the domain may hold a channel (live, Single, not of domain mode)."""
    meta = body.get("metadata") or {}
    return (
        not meta.get("deletionTimestamp")
        and recorded_mode(body) in (None, names.IMEX_MODE_CLIQUE)
        and not all_channels(body)
    )


def _keep(facts: dict[str, T], key: str, read: Callable[[Object], T], event: str, obj: Object) -> None:
    """Keep `read(obj)` under `key` while the object carries a domain label, else nothing."""
    if event == "DELETED" or domain_uid_of(obj) is None:
        facts.pop(key, None)
    else:
        facts[key] = read(obj)


def _labels(obj: Object | None) -> dict[str, str]:
    return dict((obj or {}).get("metadata", {}).get("labels") or {})


def _relevant(name: str, old: Object | None, new: Object) -> bool:
    """Whether a modification can change what a domain's reconcile does.

    The DaemonSet controller rewrites every DaemonSet's status and the node agent's heartbeats
    rewrite nodes; neither says anything a reconcile reads, and skipping them keeps a burst of new
    domains from reconciling each one several times over.
    """
    if old is None:
        return True
    if name in (DAEMONSETS, TEMPLATES):
        generation = (old["metadata"].get("generation"), new["metadata"].get("generation"))
        return generation[0] != generation[1] or _labels(old) != _labels(new)
    if name == NODES:
        return _labels(old) != _labels(new)
    return True
