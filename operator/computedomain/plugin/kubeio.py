"""The driver's Kubernetes I/O: the node view (claims, domains, daemon pods, the node) and discovery.

Everything goes through `computedomain.kube`. Watches are narrowed to what this node needs: the daemon
pods of the operator's namespace on this node, and in clique mode the clique daemon pod there
(`kubelet.slices` watches its own ResourceSlice). No ComputeDomain is watched (a domain's every
status change would reach every node): a claim's domain is read when the claim comes
(`plugin.domains` decides which reads, and keeps what it found), by its metadata only, never its
spec or status. A prepare call costs one GET of its claim, plus one such
read the first time a domain is named. Transient API errors are retried with jittered backoff;
informers resume their watches by themselves.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from computedomain import objects
from computedomain.api import names
from computedomain.dra import slices as dra_slices
from computedomain.kube import (
    CLIQUES,
    DOMAINS,
    JSON_PATCH,
    NODES,
    PODS,
    Kube,
    KubeError,
    claims,
    discovery,
)
from computedomain.kube.events import Recorder
from computedomain.kube.informer import Informer
from computedomain.kube.retry import RetryPolicy, deadline_in, retry
from computedomain.objects import Object
from computedomain.plugin.channels import CLIQUE_DAEMON_SELECTOR, prepare_mark
from computedomain.plugin.kubelet.notify import Notifier
from computedomain.plugin.kubelet.slices import SlicePublisher
from computedomain.plugin.view import DomainRef

log = logging.getLogger(__name__)

FIELD_MANAGER = "computedomain-kubelet-plugin"
# How long a read of the node's clique label is reused; the label changes rarely.
NODE_TTL = 5.0
T = TypeVar("T")


# Reads back off quickly and give up after READ_BUDGET: a prepare call has its own deadline to keep.
READ_RETRY = RetryPolicy(initial=0.2, maximum=2.0)
READ_BUDGET = 10.0


async def retrying(what: str, call: Callable[[], Awaitable[T]], budget: float = READ_BUDGET) -> T:
    """`call()`, its transient failures retried for up to `budget` seconds (see `kube.retry`)."""
    return await retry(call, what=what, policy=READ_RETRY, deadline=deadline_in(budget), log=log)


async def discover_resource_version(kube: Kube, budget: float = float("inf")) -> str | None:
    """The preferred `resource.k8s.io` version the API server serves, or None.

    An API server that is away is waited for (up to `budget` seconds): a plugin that starts before
    it must not crash-loop.
    """
    deadline = None if budget == float("inf") else deadline_in(budget)
    return await discovery.discover_resource_version(kube, policy=READ_RETRY, deadline=deadline, log=log)


def domain_ref(obj: Object) -> DomainRef:
    """The identity of a ComputeDomain (or of its `PartialObjectMetadata`)."""
    meta = obj.get("metadata") or {}
    return DomainRef(str(meta.get("uid", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def _pod_ready(pod: Object) -> bool:
    # A daemon pod being deleted may still report Ready, but is about to stop serving.
    return not pod.get("metadata", {}).get("deletionTimestamp") and objects.pod_ready(pod)


class KubeNodeView:
    """The `NodeView` of one node, fed by watches (see the module docstring)."""

    def __init__(self, kube: Kube, node: str, namespace: str, resource_version: str) -> None:
        self.kube = kube
        self.node = node
        self.version = resource_version
        self._changes = Notifier()
        self.pod_informer = Informer(
            kube,
            PODS,
            self._on_pod,
            namespace=namespace,
            label_selector=names.DOMAIN_LABEL,
            field_selector=f"spec.nodeName={node}",
            name="IMEX daemon pods",
        )
        self._node: Object | None = None
        self._node_read = 0.0
        # The process's Event recorder: one view per plugin process.
        self.events = Recorder()

    @property
    def changes(self) -> Notifier:
        """Notified on every change of a daemon pod on this node, or of the node."""
        return self._changes

    def _on_pod(self, event: str, obj: Object, old: Object | None) -> None:
        self._changes.notify()

    async def run(self) -> None:
        """Keep the daemon pod cache current (forever)."""
        await self.pod_informer.run()

    @property
    def synced(self) -> bool:
        """True once the daemon pod cache was loaded."""
        return self.pod_informer.synced.is_set()

    async def wait_synced(self) -> None:
        """Wait until the daemon pod cache was loaded once."""
        await self.pod_informer.synced.wait()

    async def read_claim(self, namespace: str, name: str) -> Object | None:
        """GET the ResourceClaim (transient errors retried)."""
        kind = claims(self.version)
        return await retrying(
            f"reading claim {namespace}/{name}", lambda: self.kube.get(kind, name, namespace)
        )

    async def list_domains(self, namespace: str) -> list[DomainRef]:
        """LIST the ComputeDomains of `namespace`, metadata only (transient errors retried)."""
        return await self._list_domains(namespace)

    async def get_domain(self, namespace: str, name: str) -> DomainRef | None:
        """GET one ComputeDomain, metadata only (transient errors retried); None when it does not exist."""
        found = await retrying(
            f"reading ComputeDomain {namespace}/{name}",
            lambda: self.kube.get(DOMAINS, name, namespace, metadata_only=True),
        )
        return None if found is None else domain_ref(found)

    async def search_domain(self, uid: str) -> DomainRef | None:
        """The ComputeDomain with this UID in any namespace, or None: one cluster-wide LIST, metadata
        only (transient errors retried)."""
        return next((ref for ref in await self._list_domains(None) if ref.uid == uid), None)

    async def _list_domains(self, namespace: str | None) -> list[DomainRef]:
        where = f"namespace {namespace}" if namespace else "all namespaces"
        items, _ = await retrying(
            f"listing ComputeDomains of {where}",
            lambda: self.kube.list(DOMAINS, namespace, metadata_only=True),
        )
        return [domain_ref(item) for item in items]

    def daemon_ready(self, domain_uid: str) -> bool:
        """True when a Ready daemon pod of the domain runs on this node."""
        return any(
            pod.get("metadata", {}).get("labels", {}).get(names.DOMAIN_LABEL) == domain_uid
            and _pod_ready(pod)
            for pod in self.pod_informer.store.values()
        )

    async def read_node(self, max_age: float = NODE_TTL) -> Object:
        """This node's object, read at most every `max_age` seconds (the last read on failure)."""
        if self._node is not None and time.monotonic() - self._node_read < max_age:
            return self._node
        try:
            node = await retrying(f"reading node {self.node}", lambda: self.kube.get(NODES, self.node))
        except Exception:
            if self._node is None:
                raise
            log.warning("reading node %s failed; using the last read", self.node, exc_info=True)
            return self._node
        if node is None:
            raise KubeError(404, f"node {self.node} does not exist")
        if self._node is not None and node.get("metadata", {}).get("labels") != self._node.get(
            "metadata", {}
        ).get("labels"):
            self._changes.notify()
        self._node, self._node_read = node, time.monotonic()
        return node

    async def clique_id(self) -> str:
        """The node's `nvidia.com/gpu.clique` label ('' when missing)."""
        node = await self.read_node()
        return str(node.get("metadata", {}).get("labels", {}).get(names.GPU_CLIQUE_LABEL, ""))

    async def post_event(self, event: Object) -> None:
        """Post the Event, or count it on the object of its earlier repeats (failures are logged)."""
        await self.events.record(self.kube, event)


class CliqueChannels:
    """Clique mode's reads (a `channels.ChannelSource`): a domain's ComputeDomainClique by name, and
    the clique IMEX daemon pod on this node, from a watch of the operator's namespace narrowed to that
    pod's label and this node; and the write a prepare makes to that object before it succeeds (a
    `channels.PrepareRecorder`)."""

    def __init__(self, kube: Kube, node: str, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self._changes = Notifier()
        self.pod_informer = Informer(
            kube,
            PODS,
            lambda _event, _obj, _old: self._changes.notify(),
            namespace=namespace,
            label_selector=CLIQUE_DAEMON_SELECTOR,
            field_selector=f"spec.nodeName={node}",
            name="clique IMEX daemon pods",
        )

    @property
    def changes(self) -> Notifier:
        """Notified on every change of a clique daemon pod on this node."""
        return self._changes

    async def run(self) -> None:
        """Keep the clique daemon pod cache current (forever)."""
        await self.pod_informer.run()

    async def wait_synced(self) -> None:
        """Wait until the clique daemon pod cache was loaded once."""
        await self.pod_informer.synced.wait()

    async def read_clique(self, name: str) -> Object | None:
        """GET the ComputeDomainClique `name` of the operator's namespace (transient errors retried)."""
        return await retrying(
            f"reading ComputeDomainClique {self.namespace}/{name}",
            lambda: self.kube.get(CLIQUES, name, self.namespace),
        )

    def clique_daemon_ready(self) -> bool:
        """True when a Ready clique IMEX daemon pod runs on this node."""
        return any(_pod_ready(pod) for pod in self.pod_informer.store.values())

    async def record_prepare(self, obj: Mapping[str, Any], node: str, claim_uid: str) -> str | None:
        """Write `channels.prepare_mark` to the ComputeDomainClique `obj` as read (transient errors
        retried); None once written, else why not."""
        name = str(obj["metadata"]["name"])
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
        patch = prepare_mark(obj, node, claim_uid, when)
        try:
            await retrying(
                f"recording a prepare on ComputeDomainClique {self.namespace}/{name}",
                lambda: self.kube.patch(CLIQUES, name, self.namespace, patch, content_type=JSON_PATCH),
            )
        except KubeError as error:
            if error.status == 404:
                return "the controller deleted it"
            # A failed `test` of the patch: the object was replaced or holds another channel now.
            if error.status in (409, 422):
                return f"it was replaced or its channel changed: {error}"
            raise
        return None


def slice_publisher(kube: Kube, view: KubeNodeView, *, shared_channel: bool = False) -> SlicePublisher:
    """The publisher of this node's ResourceSlice of the ComputeDomain driver (`shared_channel`: clique
    mode's shared channel device instead of channel 0)."""

    def render(owner: dra_slices.NodeOwner, generation: int) -> Object:
        # One slice: the pool's devices (a channel device and the daemon device) fit in one.
        [desired] = dra_slices.resource_slices(
            view.node, view.version, shared_channel=shared_channel, owner=owner, generation=generation
        )
        return desired

    return SlicePublisher(kube, view.node, view.version, render, view.read_node)
