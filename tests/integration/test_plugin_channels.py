"""The kubelet plugin in clique mode against the real API server: each domain's own IMEX channel.

The test plays the kubelet (the plugin's gRPC services), the scheduler (the claims' allocations of the
shared `channel` device), the controller (the ComputeDomainClique objects and their `channel`) and the
clique daemon's kubelet (its pod's Ready condition), as in `test_plugin_kubelet.py`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import CLIQUES, EVENTS, PODS, Kube, KubeError, resource_slices
from computedomain.plugin.channels import CLIQUE_DAEMON_LABEL, PREPARE_ANNOTATION
from computedomain.plugin.checkpoint import ClaimRecord
from support.pluginbed import (
    CLIQUE,
    KILL_POINTS,
    VERSION,
    Object,
    PluginProcess,
    RunningPlugin,
    allocated_claim,
    create_domain,
    kube,
    node,
    node_root,
    plugin_process,
    pod,
    ref,
    set_ready,
    start_plugin,
)
from support.pluginkubelet import kubelet
from support.pluginview import channel_config
from support.testbed import Testbed
from support.waiting import eventually

pytestmark = pytest.mark.cluster

__all__ = ["kube", "node", "node_root"]  # fixtures


@pytest_asyncio.fixture
async def plugin(
    api: client.ApiClient, kube: Kube, node: tuple[str, str], node_root: Path, operator_ready: str
) -> AsyncIterator[RunningPlugin]:
    async with start_plugin(api, kube, *node, node_root, operator_ready, {"IMEX_MODE": "clique"}) as running:
        yield running


@asynccontextmanager
async def ready_clique_daemon(kube: Kube, operator_namespace: str, node: str) -> AsyncIterator[Object]:
    """The clique's IMEX daemon pod on `node`, Ready, until the block ends."""
    daemon = await pod(
        kube,
        operator_namespace,
        f"clique-daemon-{uuid.uuid4().hex[:6]}",
        node,
        {CLIQUE_DAEMON_LABEL: names.CLIQUE_DAEMONS_VALUE},
    )
    await set_ready(kube, daemon)
    try:
        yield daemon
    finally:
        await kube.delete(PODS, daemon["metadata"]["name"], operator_namespace)


@pytest_asyncio.fixture
async def clique_daemon(plugin: RunningPlugin, operator_ready: str) -> AsyncIterator[Object]:
    """The clique's IMEX daemon pod on the plugin's node, Ready."""
    async with ready_clique_daemon(plugin.kube, operator_ready, plugin.node) as daemon:
        yield daemon


class Controller:
    """What the controller writes in clique mode: `<domain UID>.<clique ID>` and its `channel`."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.made: list[str] = []

    async def record(self, domain: Object, channel: int | None) -> None:
        name = names.clique_name(domain["metadata"]["uid"], CLIQUE)
        body: dict[str, Any] = {
            "apiVersion": names.API_VERSION,
            "kind": names.CLIQUE_KIND,
            "metadata": {"name": name, "namespace": self.namespace},
            "daemons": [],
        }
        if channel is not None:
            body["channel"] = channel
        existing = await self.kube.get(CLIQUES, name, self.namespace)
        if existing is None:
            await self.kube.create(CLIQUES, body)
            self.made.append(name)
        else:
            await self.kube.patch(CLIQUES, name, self.namespace, {"channel": channel})


@pytest_asyncio.fixture
async def controller(kube: Kube, operator_ready: str) -> AsyncIterator[Controller]:
    writer = Controller(kube, operator_ready)
    yield writer
    for name in writer.made:
        await kube.delete(CLIQUES, name, operator_ready)


def channel_nodes(plugin: RunningPlugin, claim: Object) -> list[dict[str, Any]]:
    spec = json.loads(plugin.spec(claim["metadata"]["uid"]).read_text())
    [device] = spec["devices"]
    nodes: list[dict[str, Any]] = device["containerEdits"]["deviceNodes"]
    return nodes


async def test_the_node_publishes_one_channel_device_for_many_claims(plugin: RunningPlugin) -> None:
    published = await plugin.kube.get(resource_slices(VERSION), slice_name(plugin.node))
    assert published is not None
    devices = published["spec"]["devices"]
    assert [d["name"] for d in devices] == ["channel", "daemon-0"]
    # The API server keeps the field only with DRAConsumableCapacity on (its default in 1.36).
    assert devices[0]["allowMultipleAllocations"] is True
    async with kubelet(plugin.settings.registration_socket) as kl:
        assert (await kl.get_info()).name == names.DRIVER


async def test_two_domains_on_one_node_get_their_own_channels(
    plugin: RunningPlugin, clique_daemon: Object, controller: Controller, namespace: str
) -> None:
    kube = plugin.kube
    first = await create_domain(kube, namespace, "first")
    second = await create_domain(kube, namespace, "second")
    await controller.record(first, 5)
    # The second domain's clique object is there, but its clique's pool has no channel yet.
    await controller.record(second, None)
    claim_a, _ = await allocated_claim(
        kube, namespace, "a-0", plugin.node, "channel", channel_config(first["metadata"]["uid"])
    )
    claim_b, pod_b = await allocated_claim(
        kube, namespace, "b-0", plugin.node, "channel", channel_config(second["metadata"]["uid"])
    )

    async with kubelet(plugin.settings.registration_socket) as kl:
        answers = await kl.prepare([ref(claim_a)])
        assert answers[claim_a["metadata"]["uid"]].error == ""
        waiting = asyncio.create_task(kl.prepare([ref(claim_b)]))

        async def waiting_event() -> Object | None:
            items, _ = await kube.list(
                EVENTS, namespace, field_selector=f"involvedObject.name={pod_b['metadata']['name']}"
            )
            return next((e for e in items if e["reason"] == "WaitingForIMEXChannel"), None)

        event = await eventually(waiting_event, timeout=15, what="the waiting Event on the second pod")
        assert event["message"].startswith(f"waiting for an IMEX channel of clique {CLIQUE}: no channel")
        assert not waiting.done()

        await controller.record(second, 9)
        answer_b = (await asyncio.wait_for(waiting, 20))[claim_b["metadata"]["uid"]]
        assert answer_b.error == ""

        assert channel_nodes(plugin, claim_a) == [
            {
                "path": "/dev/nvidia-caps-imex-channels/channel5",
                "type": "c",
                "major": 234,
                "minor": 5,
                "fileMode": 0o666,
            }
        ]
        assert [n["path"] for n in channel_nodes(plugin, claim_b)] == [
            "/dev/nvidia-caps-imex-channels/channel9"
        ]

        # A second pod of the first domain on the node shares its channel.
        claim_a1, _ = await allocated_claim(
            kube, namespace, "a-1", plugin.node, "channel", channel_config(first["metadata"]["uid"])
        )
        assert (await kl.prepare([ref(claim_a1)]))[claim_a1["metadata"]["uid"]].error == ""
        assert channel_nodes(plugin, claim_a1)[0]["minor"] == 5

        for claim in (claim_a, claim_a1, claim_b):
            assert (await kl.unprepare([ref(claim)]))[claim["metadata"]["uid"]].error == ""
            assert not plugin.spec(claim["metadata"]["uid"]).exists()


async def test_a_channel_held_by_another_domain_on_the_node_is_refused(
    plugin: RunningPlugin, clique_daemon: Object, controller: Controller, namespace: str
) -> None:
    kube = plugin.kube
    first = await create_domain(kube, namespace, "first")
    second = await create_domain(kube, namespace, "second")
    await controller.record(first, 7)
    # Only a fault elsewhere gives two live domains one channel; the node still never shares it.
    await controller.record(second, 7)
    claim_a, _ = await allocated_claim(
        kube, namespace, "a-0", plugin.node, "channel", channel_config(first["metadata"]["uid"])
    )
    claim_b, _ = await allocated_claim(
        kube, namespace, "b-0", plugin.node, "channel", channel_config(second["metadata"]["uid"])
    )

    async with kubelet(plugin.settings.registration_socket) as kl:
        assert (await kl.prepare([ref(claim_a)]))[claim_a["metadata"]["uid"]].error == ""
        refused = (await kl.prepare([ref(claim_b)]))[claim_b["metadata"]["uid"]].error
        assert f"IMEX channel 7 is already held on this node by ResourceClaim {namespace}/a-0" in refused
        assert not plugin.spec(claim_b["metadata"]["uid"]).exists()

        # Once the first domain's claim is unprepared, the channel is the second's.
        assert (await kl.unprepare([ref(claim_a)]))[claim_a["metadata"]["uid"]].error == ""
        assert (await kl.prepare([ref(claim_b)]))[claim_b["metadata"]["uid"]].error == ""
        assert channel_nodes(plugin, claim_b)[0]["minor"] == 7
        await kl.unprepare([ref(claim_b)])


async def test_allocation_mode_all_is_refused(
    plugin: RunningPlugin, clique_daemon: Object, controller: Controller, namespace: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    await controller.record(domain, 3)
    claim, _ = await allocated_claim(
        kube, namespace, "all", plugin.node, "channel", channel_config(domain["metadata"]["uid"], "All")
    )

    async with kubelet(plugin.settings.registration_socket) as kl:
        error = (await kl.prepare([ref(claim)]))[claim["metadata"]["uid"]].error

    assert "allocationMode All is refused in clique mode" in error
    assert not plugin.spec(claim["metadata"]["uid"]).exists()


def write_first(plugin: RunningPlugin, before: Callable[[], Awaitable[None]]) -> None:
    """Run `before` between the plugin's read of the clique object and its write to it."""
    channels = plugin.plugin.channels
    assert channels is not None
    record = channels.record_prepare

    async def record_after(obj: Mapping[str, Any], node: str, claim_uid: str) -> str | None:
        await before()
        return await record(obj, node, claim_uid)

    channels.record_prepare = record_after  # type: ignore[method-assign]


async def test_a_channel_released_while_a_prepare_ran_prepares_nothing(
    plugin: RunningPlugin, clique_daemon: Object, controller: Controller, namespace: str, operator_ready: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    await controller.record(domain, 4)
    name = names.clique_name(domain["metadata"]["uid"], CLIQUE)
    claim, _ = await allocated_claim(
        kube, namespace, "restarted", plugin.node, "channel", channel_config(domain["metadata"]["uid"])
    )
    planned = await kube.get(CLIQUES, name, operator_ready)
    assert planned is not None

    async def release() -> None:
        # The controller, which has not seen the claim yet, releases the channel as it planned.
        meta = planned["metadata"]
        preconditions = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        assert await kube.delete(CLIQUES, name, operator_ready, preconditions=preconditions)

    write_first(plugin, release)
    async with kubelet(plugin.settings.registration_socket) as kl:
        error = (await kl.prepare([ref(claim)]))[claim["metadata"]["uid"]].error

    assert f"channel 4 of ComputeDomainClique {name} was released while this prepare ran" in error
    assert "the controller deleted it" in error
    assert not plugin.spec(claim["metadata"]["uid"]).exists()
    assert await kube.get(CLIQUES, name, operator_ready) is None


async def test_a_prepare_that_wrote_first_keeps_its_channel(
    plugin: RunningPlugin, clique_daemon: Object, controller: Controller, namespace: str, operator_ready: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    await controller.record(domain, 6)
    name = names.clique_name(domain["metadata"]["uid"], CLIQUE)
    # What the controller's cache holds when it plans the release.
    planned = await kube.get(CLIQUES, name, operator_ready)
    assert planned is not None
    claim, _ = await allocated_claim(
        kube, namespace, "restarted", plugin.node, "channel", channel_config(domain["metadata"]["uid"])
    )

    async with kubelet(plugin.settings.registration_socket) as kl:
        assert (await kl.prepare([ref(claim)]))[claim["metadata"]["uid"]].error == ""
        meta = planned["metadata"]
        preconditions = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        with pytest.raises(KubeError) as refused:
            await kube.delete(CLIQUES, name, operator_ready, preconditions=preconditions)
        assert refused.value.status == 409

        kept = await kube.get(CLIQUES, name, operator_ready)
        assert kept is not None
        assert kept["channel"] == 6
        mark = kept["metadata"]["annotations"][PREPARE_ANNOTATION]
        assert mark.startswith(f"{plugin.node}/{claim['metadata']['uid']} ")
        assert channel_nodes(plugin, claim)[0]["minor"] == 6
        await kl.unprepare([ref(claim)])


# --- a plugin SIGKILLed in the middle of a prepare -----------------------------------------------------


@pytest_asyncio.fixture
async def node_plugin(
    cluster: Testbed, kube: Kube, node: tuple[str, str], node_root: Path, operator_ready: str
) -> AsyncIterator[PluginProcess]:
    """The plugin in clique mode as a process of its own on the node, not started yet, and the clique's
    IMEX daemon there, Ready."""
    async with (
        ready_clique_daemon(kube, operator_ready, node[0]),
        plugin_process(
            cluster.kubeconfig, kube, *node, node_root, operator_ready, {"IMEX_MODE": "clique"}
        ) as running,
    ):
        yield running


def held_channels(records: Mapping[str, ClaimRecord]) -> dict[str, list[int]]:
    """The IMEX channels each claim of a checkpoint holds."""
    return {uid: [d.channel for d in r.devices if d.channel is not None] for uid, r in records.items()}


def spec_channels(spec: Path) -> list[int]:
    """The IMEX channels a CDI spec puts into a container (every device of it)."""
    found = []
    for device in json.loads(spec.read_text())["devices"]:
        for device_node in device["containerEdits"].get("deviceNodes", []):
            if device_node["path"].startswith("/dev/nvidia-caps-imex-channels/"):
                assert device_node["path"].endswith(f"/channel{device_node['minor']}"), device_node
                found.append(device_node["minor"])
    return found


async def waiting_events(kube: Kube, namespace: str, consumer: Object) -> list[Object]:
    """The pod's Events that say it waits for its IMEX channel."""
    items, _ = await kube.list(
        EVENTS, namespace, field_selector=f"involvedObject.name={consumer['metadata']['name']}"
    )
    return [e for e in items if e["reason"] == "WaitingForIMEXChannel"]


async def more_waiting_events(kube: Kube, namespace: str, consumer: Object, than: int) -> list[Object]:
    """Wait until the pod has more than `than` waiting Events; all of them."""

    async def more() -> list[Object] | None:
        events = await waiting_events(kube, namespace, consumer)
        return events if len(events) > than else None

    return await eventually(more, timeout=15, what=f"a waiting Event on pod {consumer['metadata']['name']}")


async def test_a_prepare_killed_while_it_waits_for_the_channel_gets_it_once_the_plugin_is_back(
    node_plugin: PluginProcess, controller: Controller, namespace: str
) -> None:
    """A plugin SIGKILLed while a prepare waits for its domain's channel leaves the claim begun, holding
    no channel and without a CDI spec. The restarted plugin, on the same files and called again by the
    kubelet, waits too, then gives the claim exactly the channel the controller assigns: once in its
    CDI spec, held by that claim alone on the node (a claim of another domain is refused it), and free
    again once the claim is unprepared."""
    kube = node_plugin.kube
    domain = await create_domain(kube, namespace)
    other = await create_domain(kube, namespace, "other")
    await controller.record(domain, None)
    claim, consumer = await allocated_claim(
        kube, namespace, "w-0", node_plugin.node, "channel", channel_config(domain["metadata"]["uid"])
    )
    uid = claim["metadata"]["uid"]
    await node_plugin.start()

    async with kubelet(node_plugin.settings.registration_socket) as kl:
        interrupted = asyncio.create_task(kl.prepare([ref(claim)]))
        await more_waiting_events(kube, namespace, consumer, 0)
        await node_plugin.kill()
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(interrupted, 10)

    begun = node_plugin.checkpoint()
    assert begun[uid].state == "PrepareStarted"
    assert held_channels(begun) == {uid: []}
    assert node_plugin.specs() == []

    seen = len(await waiting_events(kube, namespace, consumer))
    await node_plugin.start()
    async with kubelet(node_plugin.settings.registration_socket) as kl:
        retried = asyncio.create_task(kl.prepare([ref(claim)]))
        # The restarted plugin's own wait: the object still has no channel.
        await more_waiting_events(kube, namespace, consumer, seen)
        assert not retried.done()
        assert node_plugin.specs() == []

        await controller.record(domain, 9)
        answer = (await asyncio.wait_for(retried, 20))[uid]
        assert answer.error == ""
        prepared = node_plugin.checkpoint()
        assert prepared[uid].state == "PrepareCompleted"
        assert held_channels(prepared) == {uid: [9]}
        assert node_plugin.specs() == [node_plugin.spec(uid)]
        assert spec_channels(node_plugin.spec(uid)) == [9]
        assert [list(d.cdi_device_ids) for d in answer.devices] == [
            list(d.cdi_device_ids) for d in prepared[uid].devices
        ]

        # Only a fault elsewhere gives another live domain the same channel; the node still holds it
        # for the recovered claim alone.
        await controller.record(other, 9)
        intruder, _ = await allocated_claim(
            kube, namespace, "x-0", node_plugin.node, "channel", channel_config(other["metadata"]["uid"])
        )
        intruder_uid = intruder["metadata"]["uid"]
        refused = (await kl.prepare([ref(intruder)]))[intruder_uid].error
        assert f"IMEX channel 9 is already held on this node by ResourceClaim {namespace}/w-0" in refused
        assert node_plugin.specs() == [node_plugin.spec(uid)]

        # Unprepared, the recovered claim leaves nothing behind that holds the channel.
        assert (await kl.unprepare([ref(claim)]))[uid].error == ""
        assert held_channels(node_plugin.checkpoint()) == {intruder_uid: []}
        assert node_plugin.specs() == []
        assert (await kl.prepare([ref(intruder)]))[intruder_uid].error == ""
        assert spec_channels(node_plugin.spec(intruder_uid)) == [9]
        assert (await kl.unprepare([ref(intruder)]))[intruder_uid].error == ""
    assert node_plugin.checkpoint() == {}
    assert node_plugin.specs() == []


@pytest.mark.parametrize("kill_at", KILL_POINTS)
async def test_a_prepare_killed_after_it_marked_the_channel_completes_once_and_releases_it(
    node_plugin: PluginProcess, controller: Controller, namespace: str, operator_ready: str, kill_at: str
) -> None:
    """A plugin SIGKILLed after its prepare marked the domain's ComputeDomainClique, before the kubelet
    had its answer (right after the mark, after the CDI spec, after the checkpoint's completion),
    leaves the channel marked, so that the controller's release planned before the mark fails. The
    restarted plugin, called again, prepares the claim with that same channel: one CDI spec, one
    checkpoint entry, the answer's CDI devices those of the checkpoint. Unprepared, the claim leaves
    neither, the controller's release then goes through, and the domain's next claim on the node waits
    for the domain's new channel instead of getting the released one."""
    kube = node_plugin.kube
    domain = await create_domain(kube, namespace)
    await controller.record(domain, 8)
    name = names.clique_name(domain["metadata"]["uid"], CLIQUE)
    # What the controller's cache holds when it plans the release.
    planned = await kube.get(CLIQUES, name, operator_ready)
    assert planned is not None
    claim, _ = await allocated_claim(
        kube, namespace, "w-0", node_plugin.node, "channel", channel_config(domain["metadata"]["uid"])
    )
    uid = claim["metadata"]["uid"]
    await node_plugin.start(kill_at=kill_at)

    async with kubelet(node_plugin.settings.registration_socket) as kl:
        with pytest.raises(grpc.aio.AioRpcError):
            await kl.prepare([ref(claim)])
    await node_plugin.killed_itself()

    marked = await kube.get(CLIQUES, name, operator_ready)
    assert marked is not None
    assert marked["metadata"]["annotations"][PREPARE_ANNOTATION].startswith(f"{node_plugin.node}/{uid} ")
    left = node_plugin.checkpoint()
    assert held_channels(left) == {uid: [8]}
    assert left[uid].state == ("PrepareCompleted" if kill_at == "completed" else "PrepareStarted")
    assert node_plugin.specs() == ([] if kill_at == "marked" else [node_plugin.spec(uid)])
    meta = planned["metadata"]
    with pytest.raises(KubeError) as stale_release:
        await kube.delete(
            CLIQUES,
            name,
            operator_ready,
            preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        )
    assert stale_release.value.status == 409

    await node_plugin.start()
    async with kubelet(node_plugin.settings.registration_socket) as kl:
        answer = (await kl.prepare([ref(claim)]))[uid]
        assert answer.error == ""
        prepared = node_plugin.checkpoint()
        assert prepared[uid].state == "PrepareCompleted"
        assert held_channels(prepared) == {uid: [8]}
        assert node_plugin.specs() == [node_plugin.spec(uid)]
        assert spec_channels(node_plugin.spec(uid)) == [8]
        assert [list(d.cdi_device_ids) for d in answer.devices] == [
            list(d.cdi_device_ids) for d in prepared[uid].devices
        ]

        assert (await kl.unprepare([ref(claim)]))[uid].error == ""
        assert node_plugin.checkpoint() == {}
        assert node_plugin.specs() == []

        # The controller releases the channel as it does once the domain's claims are unprepared.
        current = await kube.get(CLIQUES, name, operator_ready)
        assert current is not None
        meta = current["metadata"]
        preconditions = {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
        assert await kube.delete(CLIQUES, name, operator_ready, preconditions=preconditions)

        fresh, fresh_pod = await allocated_claim(
            kube, namespace, "w-1", node_plugin.node, "channel", channel_config(domain["metadata"]["uid"])
        )
        fresh_uid = fresh["metadata"]["uid"]
        waiting = asyncio.create_task(kl.prepare([ref(fresh)]))
        [event] = await more_waiting_events(kube, namespace, fresh_pod, 0)
        assert f"the controller has not made ComputeDomainClique {name} yet" in event["message"]
        assert not waiting.done()
        await controller.record(domain, 11)
        assert (await asyncio.wait_for(waiting, 20))[fresh_uid].error == ""
        assert held_channels(node_plugin.checkpoint()) == {fresh_uid: [11]}
        assert node_plugin.specs() == [node_plugin.spec(fresh_uid)]
        assert spec_channels(node_plugin.spec(fresh_uid)) == [11]
        assert (await kl.unprepare([ref(fresh)]))[fresh_uid].error == ""
    assert node_plugin.checkpoint() == {}
