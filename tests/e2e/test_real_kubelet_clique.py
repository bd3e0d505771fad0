"""Clique mode end to end on real kubelets, with the real kubelet plugin: long-running IMEX daemons per
clique and an IMEX channel of its own for each ComputeDomain.

One private control plane and two real kubelet nodes (GB200 trays of one clique) for the module, set
up as by `helm install --set imex.mode=clique --set imex.channelPoolSize=3`: the chart's objects are
rendered in clique mode, and the plugins and the controller run with `IMEX_MODE=clique`; the pool
holds channels 1 and 2 only, so that a third domain waits. Each node's slice comes from its kubelet
plugin (the shared `channel` device). The clique daemon pods the controller's DaemonSet creates are run
by each node's runtime double as host processes; their `check` probe decides when they are Ready. What
a container received is read from the runtime double's records of its CDI resolution.

The tests run in file order and share the nodes; each leaves them as it found them (but for the clique
daemons, which run for as long as the nodes are in their clique).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.kubeletbed import NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from computedomain.controller.render.status import CHANNELS_AVAILABLE, POOL_EXHAUSTED
from fakes.imex.harness import read_events
from support.domains import Cluster, condition, domain_manifest, workload_pod
from support.examples import delete_namespace
from support.namespaces import create_namespace
from support.realnodes import (
    cdi_spec,
    cdi_specs,
    channel_node,
    container_record,
    pod_claim_uids,
    require_kubelets,
    wait_event,
    wait_running,
)
from support.testbed import control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TRAYS = nvl72_racks(1, 2, prefix="kq")
CLIQUE = TRAYS[0].clique_id
# Channels 1 and 2: two domains hold the pool, a third waits.
POOL_SIZE = 3
WAIT = 120.0


@pytest_asyncio.fixture(scope="module")
async def bed() -> AsyncIterator[KubeletBed]:
    require_kubelets()
    async with (
        control_plane(prefix="kubelet-clique-") as plane,
        kubelet_bed(
            plane.cluster,
            plane.api,
            TRAYS,
            controller_env={"IMEX_CHANNELS": str(POOL_SIZE)},
            imex_mode=names.IMEX_MODE_CLIQUE,
        ) as running,
    ):
        yield running


def core(bed: KubeletBed) -> client.CoreV1Api:
    return client.CoreV1Api(bed.api)


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def clique_daemons(bed: KubeletBed) -> dict[str, client.V1Pod]:
    """node -> its clique daemon pod (not being deleted)."""
    listing = await core(bed).list_namespaced_pod(NAMESPACE, label_selector=names.CLIQUE_DAEMONS_SELECTOR)
    return {
        p.spec.node_name: p for p in listing.items if p.spec.node_name and not p.metadata.deletion_timestamp
    }


async def wait_clique_daemons_ready(bed: KubeletBed) -> dict[str, client.V1Pod]:
    async def probe() -> dict[str, client.V1Pod] | None:
        pods = await clique_daemons(bed)
        every = set(pods) == {t.name for t in TRAYS} and all(ready(p) for p in pods.values())
        return pods if every else None

    found: dict[str, client.V1Pod] = await eventually(
        probe, timeout=WAIT, interval=0.5, what="a Ready clique daemon on every node"
    )
    return found


async def clique_object(bed: KubeletBed, name: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = await client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
            names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return body


class Domain:
    """A ComputeDomain of the test with its pods, one namespace each."""

    def __init__(self, bed: KubeletBed, name: str) -> None:
        self.bed, self.name = bed, name
        self.namespace = f"{name}-{uuid.uuid4().hex[:6]}"
        self.uid = ""
        self.pods: list[tuple[str, str]] = []  # (pod, node)

    @property
    def record_name(self) -> str:
        """Its ComputeDomainClique in the bed's clique, which holds its channel."""
        return names.clique_name(self.uid, CLIQUE)

    async def create(self) -> Domain:
        await create_namespace(self.bed.api, self.namespace)
        body = await client.CustomObjectsApi(self.bed.api).create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            self.namespace,
            names.DOMAIN_PLURAL,
            domain_manifest(self.name, self.namespace),
        )
        self.uid = str(body["metadata"]["uid"])
        return self

    async def start(self, nodes: Sequence[str], suffix: str = "") -> list[str]:
        """One pod per node claiming the domain's channel template; the pod names."""
        started = []
        for node in nodes:
            pod = f"worker-{node}{suffix}"
            manifest = workload_pod(pod, self.namespace, f"{self.name}-channel", node)
            await core(self.bed).create_namespaced_pod(self.namespace, cast(Any, manifest))
            self.pods.append((pod, node))
            started.append(pod)
        return started

    async def running(self) -> list[client.V1Pod]:
        return [await wait_running(self.bed.api, self.namespace, pod, timeout=WAIT) for pod, _ in self.pods]

    async def channel(self) -> int:
        """Its channel in the clique, once the controller gave one."""

        async def given() -> int | None:
            body = await clique_object(self.bed, self.record_name)
            value = (body or {}).get("channel")
            return int(value) if isinstance(value, int) else None

        found: int = await eventually(given, timeout=WAIT, interval=0.5, what=f"a channel for {self.name}")
        return found

    async def body(self) -> dict[str, Any]:
        found: dict[str, Any] = await client.CustomObjectsApi(self.bed.api).get_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.DOMAIN_PLURAL, self.name
        )
        return found

    async def wait_channels_available(self, status: str, reason: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            found = condition(await self.body(), CHANNELS_AVAILABLE)
            return found if found.get("status") == status and found.get("reason") == reason else None

        found: dict[str, Any] = await eventually(
            probe, timeout=WAIT, interval=0.5, what=f"{self.name}: {CHANNELS_AVAILABLE}={status} ({reason})"
        )
        return found

    def received(self, pod: str, node: str) -> list[dict[str, Any]]:
        """The device nodes the pod's container received."""
        record = container_record(self.bed.node(node), self.namespace, pod, "trainer")
        nodes: list[dict[str, Any]] = record["cdi"]["deviceNodes"]
        return nodes

    async def stop(self) -> list[Path]:
        """Delete its pods; the CDI specs their claims had."""
        specs = []
        for pod, node in self.pods:
            live = await core(self.bed).read_namespaced_pod(pod, self.namespace)
            specs += [cdi_spec(self.bed.node(node), uid) for uid in await pod_claim_uids(self.bed.api, live)]
            await core(self.bed).delete_namespaced_pod(pod, self.namespace, grace_period_seconds=0)
        self.pods = []
        return specs


async def wait_gone(paths: list[Path], what: str) -> None:
    async def gone() -> bool:
        return not any(path.exists() for path in paths)

    await eventually(gone, timeout=WAIT, interval=0.5, what=what)


async def wait_record_gone(bed: KubeletBed, domain: Domain) -> None:
    async def gone() -> bool:
        return await clique_object(bed, domain.record_name) is None

    await eventually(
        gone, timeout=WAIT, interval=0.5, what=f"ComputeDomainClique {domain.record_name} deleted"
    )


async def assert_waiting(domain: Domain) -> None:
    """The domain is queued in the clique: its condition and Event say so, its pods wait in prepare
    with the plugin's Events, and none of its containers was created."""
    waiting = await domain.wait_channels_available("False", POOL_EXHAUSTED)
    assert CLIQUE in waiting["message"], waiting["message"]
    record = await clique_object(domain.bed, domain.record_name)
    assert record is not None
    assert "channel" not in record
    for pod, node in domain.pods:
        event = await wait_event(
            domain.bed.api, domain.namespace, pod, names.PLUGIN_WAITING_FOR_CHANNEL, WAIT
        )
        assert CLIQUE in event.message, event.message
        assert domain.bed.node(node).records(domain.namespace, pod) == []
        assert (await core(domain.bed).read_namespaced_pod(pod, domain.namespace)).status.phase == "Pending"


async def test_the_clique_daemons_are_ready_on_every_node_before_any_job(bed: KubeletBed) -> None:
    """The controller's DaemonSet runs one daemon per node of the clique, Ready while no ComputeDomain
    exists; each took its clique from its claim's CDI edits and its IMEX (the fake) serves both nodes."""
    domains = await client.CustomObjectsApi(bed.api).list_cluster_custom_object(
        names.GROUP, names.VERSION, names.DOMAIN_PLURAL
    )
    assert domains["items"] == []
    daemons = await wait_clique_daemons_ready(bed)
    peers = await clique_object(bed, names.clique_peers_name(CLIQUE))
    assert peers is not None
    assert sorted(d["nodeName"] for d in peers["daemons"]) == sorted(t.name for t in TRAYS)
    assert sorted(d["index"] for d in peers["daemons"]) == [0, 1]
    for node_name, daemon in daemons.items():
        node = bed.node(node_name)
        record = container_record(node, NAMESPACE, daemon.metadata.name, names.DAEMON_CONTAINER)
        assert "IMEX_MODE=clique" in record["cdi"]["env"]
        assert not any(e.startswith("COMPUTE_DOMAIN_UUID=") for e in record["cdi"]["env"])
        assert f"CLIQUE_ID={CLIQUE}" in record["cdi"]["addedEnv"]
        (mount,) = [m for m in record["cdi"]["mounts"] if m["containerPath"] == "/imexd"]
        folder = Path(mount["hostPath"])

        async def both_peers(folder: Path = folder) -> bool:
            events = await asyncio.to_thread(read_events, folder)
            return bool(events) and len(events[-1].get("hosts", {})) == len(TRAYS)

        await eventually(both_peers, timeout=WAIT, interval=0.5, what=f"IMEX on {node_name} with its peers")
    # Still no domain: the daemons came up for the clique, not for a job.
    domains = await client.CustomObjectsApi(bed.api).list_cluster_custom_object(
        names.GROUP, names.VERSION, names.DOMAIN_PLURAL
    )
    assert domains["items"] == []


async def test_each_domain_gets_its_own_channel_and_an_exhausted_pool_is_a_queue(bed: KubeletBed) -> None:
    """Two domains with a pod on each node: every container holds exactly its domain's channel, and the
    two channels differ; a second pod of a domain on a node shares its channel. Two more domains wait for
    the exhausted pool and are served, in the order they came, as the first two domains' pods end. At the
    end nothing of the domains is left: no CDI spec but the clique daemons', no clique object."""
    nodes = [t.name for t in TRAYS]
    before = await wait_clique_daemons_ready(bed)
    daemon_specs = {
        cdi_spec(bed.node(node), uid)
        for node, pod in before.items()
        for uid in await pod_claim_uids(bed.api, pod)
    }
    first, second = await Domain(bed, "first").create(), await Domain(bed, "second").create()
    third, fourth = Domain(bed, "third"), Domain(bed, "fourth")
    try:
        for domain in (first, second):
            await domain.start(nodes)
        for domain in (first, second):
            await domain.running()
        held = {domain.name: await domain.channel() for domain in (first, second)}
        assert sorted(held.values()) == [1, 2], held
        for domain in (first, second):
            for pod, node in domain.pods:
                assert domain.received(pod, node) == [channel_node(held[domain.name])], (pod, node)
            await domain.wait_channels_available("True", "ChannelsAssigned")
            # No daemon of a domain's own in clique mode, and none in the clique object.
            assert await Cluster(bed.api, NAMESPACE).daemon_pods(domain.uid) == []
            record = await clique_object(bed, domain.record_name)
            assert record is not None
            assert not record.get("daemons")

        # A second pod of the first domain on a node: the node's shared channel device takes another
        # allocation, and the pod gets its domain's channel.
        (extra,) = await first.start(nodes[:1], suffix="-b")
        await first.running()
        assert first.received(extra, nodes[0]) == [channel_node(held["first"])]

        # The pool is exhausted: the third domain waits, then the fourth behind it.
        await third.create()
        await third.start(nodes)
        await assert_waiting(third)
        event = await Cluster(bed.api, NAMESPACE).wait_event(third.namespace, third.name, POOL_EXHAUSTED)
        assert CLIQUE in event["message"], event["message"]
        await fourth.create()
        await fourth.start(nodes)
        await assert_waiting(fourth)

        # The first domain's pods end: once all its claims in the clique are unprepared its record goes,
        # and its channel goes to the first in the queue, whose pods then start.
        await wait_gone(await first.stop(), "the first domain's CDI specs removed")
        await wait_record_gone(bed, first)
        assert await third.channel() == held["first"]
        for pod, node in [(p.metadata.name, p.spec.node_name) for p in await third.running()]:
            assert third.received(pod, node) == [channel_node(held["first"])]
        await third.wait_channels_available("True", "ChannelsAssigned")
        # The fourth still waits: one channel freed, one domain served.
        record = await clique_object(bed, fourth.record_name)
        assert record is not None
        assert "channel" not in record
        for pod, node in fourth.pods:
            assert bed.node(node).records(fourth.namespace, pod) == []

        await wait_gone(await second.stop(), "the second domain's CDI specs removed")
        await wait_record_gone(bed, second)
        assert await fourth.channel() == held["second"]
        for pod, node in [(p.metadata.name, p.spec.node_name) for p in await fourth.running()]:
            assert fourth.received(pod, node) == [channel_node(held["second"])]
        # Two live domains never hold one channel of the clique.
        assert await third.channel() != await fourth.channel()
    finally:
        for domain in (first, second, third, fourth):
            if domain.uid:
                await delete_namespace(bed.api, domain.namespace)

    # Nothing of the domains is left: their clique objects, templates and CDI specs are gone; the clique
    # daemons and their claims stay, Ready.
    cluster = Cluster(bed.api, NAMESPACE)
    for domain in (first, second, third, fourth):
        await cluster.wait_nothing_left(domain.uid, timeout=WAIT)
        assert await clique_object(bed, domain.record_name) is None

    def only_daemon_specs() -> bool:
        return {spec for node in bed.nodes for spec in cdi_specs(node)} == daemon_specs

    await eventually(only_daemon_specs, timeout=WAIT, interval=0.5, what="every workload CDI spec removed")
    after = await wait_clique_daemons_ready(bed)
    assert {n: p.metadata.uid for n, p in after.items()} == {n: p.metadata.uid for n, p in before.items()}
    assert all(spec.exists() for spec in daemon_specs)
