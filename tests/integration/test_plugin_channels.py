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
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import CLIQUES, EVENTS, PODS, Kube, KubeError, resource_slices
from computedomain.plugin.channels import CLIQUE_DAEMON_LABEL, PREPARE_ANNOTATION
from support.pluginbed import (
    CLIQUE,
    VERSION,
    Object,
    RunningPlugin,
    allocated_claim,
    create_domain,
    kube,
    node,
    node_root,
    pod,
    ref,
    set_ready,
    start_plugin,
)
from support.pluginkubelet import kubelet
from support.pluginview import channel_config
from support.waiting import eventually

pytestmark = pytest.mark.cluster

__all__ = ["kube", "node", "node_root"]  # fixtures


@pytest_asyncio.fixture
async def plugin(
    api: client.ApiClient, kube: Kube, node: tuple[str, str], node_root: Path, operator_ready: str
) -> AsyncIterator[RunningPlugin]:
    async with start_plugin(api, kube, *node, node_root, operator_ready, {"IMEX_MODE": "clique"}) as running:
        yield running


@pytest_asyncio.fixture
async def clique_daemon(plugin: RunningPlugin, operator_ready: str) -> AsyncIterator[Object]:
    """The clique's IMEX daemon pod on the plugin's node, Ready."""
    daemon = await pod(
        plugin.kube,
        operator_ready,
        f"clique-daemon-{uuid.uuid4().hex[:6]}",
        plugin.node,
        {CLIQUE_DAEMON_LABEL: names.CLIQUE_DAEMONS_VALUE},
    )
    await set_ready(plugin.kube, daemon)
    yield daemon
    await plugin.kube.delete(PODS, daemon["metadata"]["name"], operator_ready)


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
