"""What one node's kubelet plugin takes in from the API server, on the real API server.

The plugin's view finds a claim's ComputeDomain by narrow reads (metadata only), for a workload's
channel claim and for an IMEX daemon's claim in the operator's namespace, whatever the domain's size,
and watches nothing but the daemon pods on its node: rewriting
a large domain's status sends it no byte, while a cluster-wide domain watch (what the plugin had
before) receives every rewrite. Bytes are counted by `Kube`'s `on_receive` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.api import names
from computedomain.kube import DOMAINS, PODS, Kube, claims
from computedomain.kube.informer import Informer
from computedomain.plugin.domains import DomainFinder, annotated_domain
from computedomain.plugin.kubeio import KubeNodeView
from computedomain.plugin.view import DomainRef
from support.pluginbed import VERSION, create_domain, kube, node, pod, set_ready
from support.pluginview import domain_annotations
from support.waiting import eventually

pytestmark = pytest.mark.cluster

__all__ = ["kube", "node"]  # fixtures
log = logging.getLogger(__name__)

KIB = 1024
STATUS_BYTES = 300 * KIB
REWRITES = 5
# A narrow read of a domain: its metadata, never its spec or status.
NARROW_READ_LIMIT = 8 * KIB


@dataclass
class Received:
    """Bytes and watch events received, by request path."""

    bytes: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    def __call__(self, path: str, size: int, event: bool) -> None:
        self.bytes[path] += size
        self.events[path] += int(event)

    def clear(self) -> None:
        self.bytes.clear()
        self.events.clear()

    def of(self, kind_plural: str) -> int:
        """Bytes received on every path of one resource (all namespaces, single objects included)."""
        return sum(size for path, size in self.bytes.items() if f"/{kind_plural}" in path)


@dataclass
class CountedView:
    view: KubeNodeView
    received: Received


@pytest_asyncio.fixture
async def counted_view(
    api: client.ApiClient, node: tuple[str, str], operator_ready: str
) -> AsyncIterator[CountedView]:
    """The plugin's view of `node` over a `Kube` that counts what it receives, its cache loaded."""
    received = Received()
    counting = Kube(connection_of(api), field_manager="plugin-fanout-test", on_receive=received)
    view = KubeNodeView(counting, node[0], operator_ready, VERSION)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.wait_synced(), 30)
        yield CountedView(view, received)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await counting.close()


def big_status(round_: int) -> dict[str, Any]:
    """A status of about STATUS_BYTES: many nodes, every address new in each round."""
    nodes = []
    size = 0
    while size < STATUS_BYTES:
        i = len(nodes)
        entry = {
            "name": f"fanout-node-{i:05d}-{'x' * 60}",
            "ipAddress": f"10.{i // 250}.{i % 250}.{round_ + 1}",
            "cliqueID": "7d9c0f3e-1111-4222-8333-944455556666.3",
            "index": i % 18,
            "status": "Ready",
        }
        nodes.append(entry)
        size += len(json.dumps(entry, separators=(",", ":")))
    return {"status": {"status": "NotReady", "nodes": nodes}}


async def daemon_claim(kube: Kube, namespace: str, domain: DomainRef, *, annotated: bool) -> dict[str, Any]:
    """A daemon's claim in the operator's namespace, as generated from the controller's template."""
    meta: dict[str, Any] = {"name": f"daemon-{uuid.uuid4().hex[:8]}", "namespace": namespace}
    if annotated:
        meta["annotations"] = domain_annotations(domain)
    return await kube.create(
        claims(VERSION),
        {
            "apiVersion": f"resource.k8s.io/{VERSION}",
            "kind": "ResourceClaim",
            "metadata": meta,
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": names.DAEMON_REQUEST,
                            "exactly": {"deviceClassName": names.DAEMON_DEVICE_CLASS},
                        }
                    ]
                }
            },
        },
    )


async def bytes_of(received: Received, plural: str, read: Awaitable[Any]) -> tuple[Any, int]:
    """The result of `read` and the bytes it received of resource `plural`."""
    before = received.of(plural)
    result = await read
    return result, received.of(plural) - before


async def test_the_plugin_finds_domains_by_narrow_reads_and_never_receives_their_status(
    counted_view: CountedView, kube: Kube, namespace: str, operator_ready: str, node: tuple[str, str]
) -> None:
    view, received = counted_view.view, counted_view.received
    created = await create_domain(kube, namespace)
    meta = created["metadata"]
    domain = DomainRef(meta["uid"], namespace, meta["name"])
    await kube.patch(DOMAINS, domain.name, namespace, big_status(0), subresource="status")
    full = await kube.get(DOMAINS, domain.name, namespace)
    assert full is not None
    assert len(json.dumps(full, separators=(",", ":"))) > STATUS_BYTES

    # A workload's channel claim: one list of its namespace finds the domain.
    found, cost = await bytes_of(
        received, "computedomains", DomainFinder(view).find(domain.uid, namespace=namespace)
    )
    assert found == domain
    assert 0 < cost < NARROW_READ_LIMIT, cost
    # The claim is in another namespace: found all the same (and refused by the core).
    elsewhere = await DomainFinder(view).find(domain.uid, namespace=operator_ready)
    assert elsewhere == domain
    assert elsewhere.namespace != operator_ready
    # A UID no domain has: the metadata of the namespace's domains, then of every namespace's, tell.
    missing, missing_cost = await bytes_of(
        received, "computedomains", DomainFinder(view).find(str(uuid.uuid4()), namespace=namespace)
    )
    assert missing is None
    # No domain in a namespace: an empty list (which the server sends as `"items": null`).
    assert await view.list_domains(operator_ready) == []

    # An IMEX daemon's claim, read as the core reads it: its annotations lead to one GET.
    annotated = await daemon_claim(kube, operator_ready, domain, annotated=True)
    bare = await daemon_claim(kube, operator_ready, domain, annotated=False)
    try:
        read = await view.read_claim(operator_ready, annotated["metadata"]["name"])
        assert read is not None
        named = annotated_domain(read)
        assert named == (namespace, domain.name)
        found, cost = await bytes_of(
            received, "computedomains", DomainFinder(view).find(domain.uid, named=named)
        )
        assert found == domain
        assert 0 < cost < NARROW_READ_LIMIT, cost
        # A claim of an older template, without the annotations: one cluster-wide metadata list.
        read_bare = await view.read_claim(operator_ready, bare["metadata"]["name"])
        assert read_bare is not None
        assert annotated_domain(read_bare) is None
        found, wide = await bytes_of(
            received, "computedomains", DomainFinder(view).find(domain.uid, named=annotated_domain(read_bare))
        )
        assert found == domain
        log.warning(
            "finding a domain with a %d KiB status: %d bytes by name, %d bytes in every namespace; "
            "finding no domain: %d bytes",
            STATUS_BYTES // KIB,
            cost,
            wide,
            missing_cost,
        )
    finally:
        for claim in (annotated, bare):
            await kube.delete(claims(VERSION), claim["metadata"]["name"], operator_ready)

    # Rewrite the domain's status: a cluster-wide domain watch (the plugin's watch before) receives
    # every rewrite; the plugin's view receives nothing.
    reference = Received()
    watching = Kube(kube.connection, field_manager="plugin-fanout-test", on_receive=reference)
    domain_watch = Informer(watching, DOMAINS, lambda *_: None, name="every ComputeDomain")
    watch_task = asyncio.create_task(domain_watch.run())
    try:
        await asyncio.wait_for(domain_watch.synced.wait(), 30)
        reference.clear()
        received.clear()
        for round_ in range(1, REWRITES + 1):
            await kube.patch(DOMAINS, domain.name, namespace, big_status(round_), subresource="status")

        async def all_rewrites_seen() -> bool:
            # By bytes, not events: other tests' domains on a shared cluster send small events too.
            return reference.of("computedomains") >= REWRITES * STATUS_BYTES

        await eventually(all_rewrites_seen, timeout=30, what="every rewrite at the domain watch")
        assert reference.events[DOMAINS.path()] >= REWRITES
    finally:
        watch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch_task
        await watching.close()
    during = dict(received.bytes)
    log.warning(
        "%d status rewrites of %d KiB: a cluster-wide domain watch received %d KiB in %d events; "
        "the plugin's view received %s",
        REWRITES,
        STATUS_BYTES // KIB,
        reference.of("computedomains") // KIB,
        sum(reference.events.values()),
        during or "nothing",
    )
    assert received.of("computedomains") == 0
    # Only the daemon pod watch may have spoken meanwhile (a bookmark at most: nothing changed there).
    pods_path = PODS.path(operator_ready)
    assert set(during) <= {pods_path}
    assert sum(during.values()) < 2 * KIB

    # The hook does see what the view watches: a daemon pod on this node that changes reaches it.
    daemon = await pod(
        kube, operator_ready, f"daemon-{uuid.uuid4().hex[:6]}", node[0], {names.DOMAIN_LABEL: domain.uid}
    )
    try:
        await set_ready(kube, daemon)

        async def pod_seen() -> bool:
            return view.daemon_ready(domain.uid) and received.events[pods_path] >= 2

        await eventually(pod_seen, timeout=15, what="the daemon pod's events at the view")
        assert received.bytes[pods_path] > 0
        assert received.of("computedomains") == 0
    finally:
        await kube.delete(PODS, daemon["metadata"]["name"], operator_ready)
