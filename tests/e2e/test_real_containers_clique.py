"""Clique mode (`imex.mode=clique`) on four real kubelets with real containers: isolation seen from inside.

The chart is installed as it ships but for `imex.mode=clique` and a small channel pool, on the
real-container bed of `test_real_containers.py` (containerd, runc, CNI; the product image runs every
program, the clique daemons included). Two domains run pods on one node; `kubectl exec` into each
container shows exactly its own domain's channel under /dev/nvidia-caps-imex-channels/, a character
device whose minor is the channel the controller recorded, and never the other domain's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.containerbed import NAMESPACE, ContainerBed, container_bed
from cdtestbed.images import WORKLOAD_IMAGE
from cdtestbed.kubelets import KubeletNode
from cdtestbed.topology import FakeNode, nvl72_racks
from computedomain.api import names
from support.domains import condition, domain_manifest, workload_pod
from support.examples import delete_namespace
from support.namespaces import create_namespace
from support.realnodes import cdi_spec, events_of, pod_claim_uids, require_containers
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(900)]

TRAYS: list[FakeNode] = nvl72_racks(1, 4, prefix="gb200")
CLIQUE = TRAYS[0].clique_id
CHANNELS = "/dev/nvidia-caps-imex-channels"
# Channels 1 to 3: enough for the domains here, small enough that a pool that leaked would run dry.
POOL_SIZE = 4
WAIT = 240.0


@pytest.fixture(scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ContainerBed]:
    """The chart installed in clique mode on four real-container nodes of one clique."""
    require_containers()
    workdir = tmp_path_factory.mktemp("containers-clique")
    values = {"imex.mode": names.IMEX_MODE_CLIQUE, "imex.channelPoolSize": str(POOL_SIZE)}
    async with container_bed(workdir, TRAYS, values=values) as running:
        yield running


def is_ready(pod: client.V1Pod) -> bool:
    """Whether the pod's Ready condition is True."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def clique_daemons_ready(bed: ContainerBed) -> list[client.V1Pod]:
    """The clique daemon pods, once one runs Ready on every node and the clique's peer object lists
    each of them Ready in a slot of its own."""
    core = client.CoreV1Api(bed.api)
    custom = client.CustomObjectsApi(bed.api)

    async def ready() -> list[client.V1Pod] | None:
        pods = (await core.list_namespaced_pod(NAMESPACE, label_selector=names.CLIQUE_DAEMONS_SELECTOR)).items
        if sorted(p.spec.node_name or "" for p in pods if is_ready(p)) != sorted(t.name for t in TRAYS):
            return None
        try:
            peers = await custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL, names.clique_peers_name(CLIQUE)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        daemons = peers.get("daemons") or []
        if sorted(d["nodeName"] for d in daemons if d.get("status") == "Ready") != sorted(
            t.name for t in TRAYS
        ):
            return None
        return list(pods)

    found: list[client.V1Pod] = await eventually(
        ready, timeout=WAIT, interval=1.0, what="the clique daemons Ready on every node"
    )
    return found


async def create_domain(bed: ContainerBed, namespace: str, name: str, **channel: Any) -> str:
    """A ComputeDomain in its own namespace; its UID."""
    await create_namespace(bed.api, namespace)
    body = await client.CustomObjectsApi(bed.api).create_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        namespace,
        names.DOMAIN_PLURAL,
        domain_manifest(name, namespace, **channel),
    )
    return str(body["metadata"]["uid"])


async def start_pod(bed: ContainerBed, namespace: str, name: str, template: str, node: str) -> None:
    """A pod of the workload stand-in on `node`, claiming a channel from the domain's `template`."""
    pod = workload_pod(name, namespace, template, node)
    pod["spec"]["containers"][0] |= {"image": WORKLOAD_IMAGE, "command": ["bash", "-c", "exec torchrun"]}
    await client.CoreV1Api(bed.api).create_namespaced_pod(namespace, cast(Any, pod))


async def running(bed: ContainerBed, namespace: str, name: str) -> client.V1Pod:
    """The pod, once it runs."""

    async def probe() -> client.V1Pod | None:
        live = await client.CoreV1Api(bed.api).read_namespaced_pod(name, namespace)
        return live if live.status.phase == "Running" else None

    found: client.V1Pod = await eventually(
        probe, timeout=WAIT, interval=1.0, what=f"pod {namespace}/{name} Running"
    )
    return found


async def channel_record(bed: ContainerBed, domain_uid: str) -> dict[str, Any] | None:
    """The domain's ComputeDomainClique in the clique, where the controller records its channel."""
    try:
        body: dict[str, Any] = await client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
            names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL, names.clique_name(domain_uid, CLIQUE)
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return body


def spec_channel(spec: Path) -> dict[str, Any]:
    """The one IMEX channel device node of a workload claim's CDI spec."""
    body = json.loads(spec.read_text())
    nodes = [n for d in body["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
    (channel,) = [n for n in nodes if n["path"].startswith(f"{CHANNELS}/")]
    return cast(dict[str, Any], channel)


async def seen_inside(
    bed: ContainerBed, pod: client.V1Pod
) -> tuple[list[str], dict[str, tuple[str, int, int]]]:
    """What the pod's container holds under /dev/nvidia-caps-imex-channels/: the names listed, and for
    each its file type, major and minor, read by `kubectl exec`."""
    namespace, name = pod.metadata.namespace, pod.metadata.name
    listing = bed.exec_in(namespace, name, f"ls -A {CHANNELS}/").split()
    kinds: dict[str, tuple[str, int, int]] = {}
    for line in bed.exec_in(namespace, name, f"stat -c '%n|%F|%t|%T' {CHANNELS}/*").splitlines():
        path, kind, major, minor = line.split("|")
        kinds[path.rpartition("/")[2]] = (kind, int(major, 16), int(minor, 16))
    return listing, kinds


def node_of(bed: ContainerBed, pod: client.V1Pod) -> KubeletNode:
    """The bed's node that runs the pod."""
    return next(n for n in bed.nodes if n.name == pod.spec.node_name)


async def test_clique_daemons_run_before_any_domain(bed: ContainerBed) -> None:
    """Installed in clique mode, every GPU node runs one IMEX daemon of its clique, Ready with no
    ComputeDomain at all, from the product image; no per-domain daemon exists."""
    daemons = await clique_daemons_ready(bed)
    assert len(daemons) == len(TRAYS)
    for daemon in daemons:
        assert daemon.spec.containers[0].image.startswith("localhost/computedomain-operator:")
    domains = await client.CustomObjectsApi(bed.api).list_cluster_custom_object(
        names.GROUP, names.VERSION, names.DOMAIN_PLURAL
    )
    assert domains["items"] == []
    per_domain = await client.CoreV1Api(bed.api).list_namespaced_pod(
        NAMESPACE, label_selector=names.DOMAIN_LABEL
    )
    assert per_domain.items == []


async def test_two_domains_on_one_node_each_see_only_their_own_channel(bed: ContainerBed) -> None:
    """Domains A and B each run a pod on the same node (A a second one there, and one on another node
    of the clique): every container of A holds exactly A's channel N as a character device of minor N,
    every container of B exactly B's channel M, M != N, each as the controller recorded it and the
    plugin wrote it in the claim's CDI spec. Deleting the domains frees both channels and every spec."""
    await clique_daemons_ready(bed)
    shared, other = bed.nodes[1].name, bed.nodes[2].name
    uid_a = await create_domain(bed, "iso-a", "alpha")
    uid_b = await create_domain(bed, "iso-b", "beta")
    await start_pod(bed, "iso-a", "a-0", "alpha-channel", shared)
    await start_pod(bed, "iso-b", "b-0", "beta-channel", shared)
    await start_pod(bed, "iso-a", "a-1", "alpha-channel", shared)
    await start_pod(bed, "iso-a", "a-2", "alpha-channel", other)
    pods_a = [await running(bed, "iso-a", name) for name in ("a-0", "a-1", "a-2")]
    pods_b = [await running(bed, "iso-b", "b-0")]
    assert {p.spec.node_name for p in [*pods_a[:2], *pods_b]} == {shared}

    record_a = await channel_record(bed, uid_a)
    record_b = await channel_record(bed, uid_b)
    assert record_a is not None
    assert record_b is not None
    channel_a, channel_b = int(record_a["channel"]), int(record_b["channel"])
    assert channel_a != channel_b
    assert {channel_a, channel_b} <= set(range(1, POOL_SIZE))

    claims: list[tuple[KubeletNode, str]] = []
    for pods, own, foreign in ((pods_a, channel_a, channel_b), (pods_b, channel_b, channel_a)):
        for pod in pods:
            listing, kinds = await seen_inside(bed, pod)
            assert listing == [f"channel{own}"], (pod.metadata.name, listing)
            kind, major, minor = kinds[f"channel{own}"]
            assert (kind, minor) == ("character special file", own), (pod.metadata.name, kinds)
            assert f"channel{foreign}" not in kinds
            (uid,) = await pod_claim_uids(bed.api, pod)
            wanted = spec_channel(cdi_spec(node_of(bed, pod), uid))
            assert wanted["path"] == f"{CHANNELS}/channel{own}"
            assert (wanted["major"], wanted["minor"]) == (major, minor)
            claims.append((node_of(bed, pod), uid))

    await delete_namespace(bed.api, "iso-a", timeout=WAIT)
    await delete_namespace(bed.api, "iso-b", timeout=WAIT)

    async def released() -> bool:
        if any(cdi_spec(node, uid).exists() for node, uid in claims):
            return False
        return await channel_record(bed, uid_a) is None and await channel_record(bed, uid_b) is None

    await eventually(released, timeout=WAIT, interval=1.0, what="the channels released and the specs removed")


async def test_allocation_mode_all_never_reaches_a_container(bed: ContainerBed) -> None:
    """`allocationMode: All` would put every channel, other domains' included, into the container: the
    domain says it is refused, the plugin refuses the pod's claim, and no container of it starts."""
    await clique_daemons_ready(bed)
    node = bed.nodes[1]
    await create_domain(bed, "iso-all", "wide", allocationMode="All")
    await start_pod(bed, "iso-all", "wide-0", "wide-channel", node.name)
    custom = client.CustomObjectsApi(bed.api)

    async def refused() -> bool:
        body = await custom.get_namespaced_custom_object(
            names.GROUP, names.VERSION, "iso-all", names.DOMAIN_PLURAL, "wide"
        )
        return bool(condition(body, "ChannelsAvailable").get("reason") == "AllChannelsRefused")

    await eventually(refused, timeout=WAIT, interval=1.0, what="the domain reporting AllChannelsRefused")

    async def prepare_refused() -> bool:
        events = await events_of(bed.api, "iso-all", "wide-0")
        return any("allocationMode All is refused" in (e.message or "") for e in events)

    await eventually(prepare_refused, timeout=WAIT, interval=1.0, what="the kubelet's Event of the refusal")
    live = await client.CoreV1Api(bed.api).read_namespaced_pod("wide-0", "iso-all")
    assert live.status.phase == "Pending"
    started = [
        c
        for c in bed.containers(node)
        if c.get("Labels", {}).get("io.kubernetes.pod.namespace") == "iso-all"
        and c.get("Labels", {}).get("io.kubernetes.container.name") == "trainer"
    ]
    assert started == []
    await delete_namespace(bed.api, "iso-all", timeout=WAIT)
