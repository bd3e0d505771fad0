"""The kubelet plugin against the real API server, called over its unix sockets as a kubelet would.

The node is a Node object of its own that no kubelet or KWOK manages: the test plays the kubelet (it
calls the plugin's gRPC services), the scheduler (it writes the claims' allocations) and the IMEX
daemon's kubelet (it sets the daemon pod's Ready condition).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.cluster import free_port
from computedomain.api import names
from computedomain.dra.slices import slice_name
from computedomain.kube import EVENTS, NODES, PODS, Kube, resource_slices
from support.pluginbed import (
    CLIQUE,
    VERSION,
    Object,
    RunningPlugin,
    allocated_claim,
    create_domain,
    delete_all,
    kube,
    node,
    node_root,
    pod,
    ref,
    set_ready,
    start_plugin,
)
from support.pluginkubelet import FakeKubelet, kubelet, register
from support.pluginview import channel_config, daemon_config
from support.testbed import Testbed
from support.waiting import eventually

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
__all__ = ["kube", "node", "node_root"]  # fixtures


@pytest_asyncio.fixture
async def plugin(
    api: client.ApiClient, kube: Kube, node: tuple[str, str], node_root: Path, operator_ready: str
) -> AsyncIterator[RunningPlugin]:
    async with start_plugin(api, kube, *node, node_root, operator_ready) as running:
        yield running


async def test_registers_and_keeps_its_resource_slice(plugin: RunningPlugin) -> None:
    async with kubelet(plugin.settings.registration_socket) as kl:
        info = await kl.get_info()
        await kl.notify(True)
    assert info.name == "compute-domain.nvidia.com"
    assert info.endpoint == str(plugin.settings.dra_socket)
    assert plugin.plugin.readiness() == (True, "registered")

    kind = resource_slices(VERSION)
    name = slice_name(plugin.node)
    first = await plugin.kube.get(kind, name)
    assert first is not None
    assert first["spec"]["pool"]["name"] == plugin.node
    assert [d["name"] for d in first["spec"]["devices"]] == ["channel-0", "daemon-0"]
    assert first["metadata"]["ownerReferences"][0]["uid"] == plugin.node_uid

    # The kubelet deletes its node's slices when it starts: the plugin puts it back.
    await plugin.kube.delete(kind, name)

    async def republished() -> Object | None:
        again = await plugin.kube.get(kind, name)
        return again if again and again["metadata"]["uid"] != first["metadata"]["uid"] else None

    again = await eventually(republished, timeout=15, what="the slice republished")
    assert again["spec"]["devices"] == first["spec"]["devices"]

    # Someone edits it: the plugin restores its devices.
    edited = dict(again)
    edited["spec"] = {**again["spec"], "devices": again["spec"]["devices"][:1]}
    await plugin.kube.call("PUT", kind.path(None, name), body=edited)

    async def restored() -> bool:
        current = await plugin.kube.get(kind, name)
        return current is not None and len(current["spec"]["devices"]) == 2

    await eventually(restored, timeout=15, what="the slice restored")


async def test_the_slice_is_published_once_the_kubelet_confirms_the_registration(
    api: client.ApiClient, kube: Kube, node: tuple[str, str], node_root: Path, operator_ready: str
) -> None:
    kind = resource_slices(VERSION)
    name = slice_name(node[0])
    async with start_plugin(api, kube, *node, node_root, operator_ready, register=False) as running:
        plugin = running.plugin
        assert plugin.readiness() == (False, "waiting for the kubelet's registration")
        async with kubelet(running.settings.registration_socket) as kl:
            # Serving but unregistered: the scheduler must not see this node's devices, as a claim
            # allocated now would meet a kubelet that cannot prepare it. An absence is watched over a
            # window: a plugin that published early would do so within milliseconds of its sync.
            window = time.monotonic() + 2.0
            while time.monotonic() < window:
                assert await kube.get(kind, name) is None
                await asyncio.sleep(0.1)
            # A refusal publishes nothing either.
            await kl.notify(False, "another plugin registered this driver")
            assert plugin.readiness() == (False, "waiting for the kubelet's registration")
            assert await kube.get(kind, name) is None

            await kl.notify(True)
            confirmed = time.monotonic()
            published = await eventually(lambda: kube.get(kind, name), timeout=5, what="the slice")
            assert time.monotonic() - confirmed < 2.0
            assert [d["name"] for d in published["spec"]["devices"]] == ["channel-0", "daemon-0"]
            await eventually(lambda: plugin.readiness()[0], timeout=5, what="readiness")
            assert plugin.readiness() == (True, "registered")


async def test_channel_claim_waits_for_the_daemon_and_gets_its_channel(
    plugin: RunningPlugin, namespace: str, operator_ready: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    claim, worker = await allocated_claim(
        kube, namespace, "worker-0-channel", plugin.node, "channel-0", channel_config(uid)
    )
    worker_name = worker["metadata"]["name"]
    daemon = await pod(
        kube, operator_ready, f"daemon-{uuid.uuid4().hex[:6]}", plugin.node, {names.DOMAIN_LABEL: uid}
    )
    try:
        kl: FakeKubelet
        async with kubelet(plugin.settings.registration_socket) as kl:
            prepare = asyncio.create_task(kl.prepare([ref(claim)]))

            async def waiting_event() -> Object | None:
                items, _ = await kube.list(
                    EVENTS, namespace, field_selector=f"involvedObject.name={worker_name}"
                )
                return next((e for e in items if e["reason"] == "WaitingForIMEXDaemon"), None)

            event = await eventually(waiting_event, timeout=15, what="the waiting Event on the pod")
            assert f"IMEX daemon of ComputeDomain {namespace}/cd on node {plugin.node}" in event["message"]
            assert not prepare.done()

            ready_at = time.monotonic()
            await set_ready(kube, daemon)
            answer = (await prepare)[claim["metadata"]["uid"]]
            assert time.monotonic() - ready_at < 2.0

            assert answer.error == ""
            [device] = answer.devices
            claim_uid = claim["metadata"]["uid"]
            assert list(device.cdi_device_ids) == [
                f"k8s.compute-domain.nvidia.com/claim={claim_uid}-channel-0"
            ]
            spec = json.loads(plugin.spec(claim_uid).read_text())
            assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [
                {
                    "path": "/dev/nvidia-caps-imex-channels/channel0",
                    "type": "c",
                    "major": 234,
                    "minor": 0,
                    "fileMode": 0o666,
                }
            ]

            # Asked again (a kubelet restart): the same answer, from the checkpoint.
            again = (await kl.prepare([ref(claim)], "v1beta1"))[claim_uid]
            assert list(again.devices[0].cdi_device_ids) == list(device.cdi_device_ids)

            unprepared = await kl.unprepare([ref(claim)])
            assert unprepared[claim_uid].error == ""
            assert not plugin.spec(claim_uid).exists()
    finally:
        await kube.delete(PODS, daemon["metadata"]["name"], operator_ready)


async def test_bad_claims_get_their_own_errors_and_the_plugin_stays_up(
    plugin: RunningPlugin, namespace: str, operator_ready: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    missing, _ = await allocated_claim(
        kube, namespace, "missing", plugin.node, "channel-0", channel_config(str(uuid.uuid4()))
    )
    strict, _ = await allocated_claim(
        kube, namespace, "strict", plugin.node, "channel-0", channel_config(uid, unexpectedField="x")
    )
    other_ns, other_pod = await allocated_claim(
        kube, operator_ready, f"elsewhere-{uid[:6]}", plugin.node, "channel-0", channel_config(uid)
    )
    try:
        async with kubelet(plugin.settings.registration_socket) as kl:
            answers = await kl.prepare([ref(missing), ref(strict), ref(other_ns)])
            info = await kl.get_info()
    finally:
        await delete_all(kube, operator_ready, [other_pod, other_ns])

    assert "no ComputeDomain has that UID" in answers[missing["metadata"]["uid"]].error
    assert "unexpectedField: Extra inputs are not permitted" in answers[strict["metadata"]["uid"]].error
    assert f"is in namespace {namespace}, not in the claim's namespace {operator_ready}" in (
        answers[other_ns["metadata"]["uid"]].error
    )
    assert info.name == "compute-domain.nvidia.com"
    assert not plugin.cdi.exists() or not list(plugin.cdi.glob("*.json"))


async def test_daemon_claim_gets_domain_and_clique(
    plugin: RunningPlugin, operator_ready: str, namespace: str
) -> None:
    kube = plugin.kube
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    claim, consumer = await allocated_claim(
        kube, operator_ready, f"daemon-{uid[:8]}", plugin.node, "daemon-0", daemon_config(uid)
    )
    try:
        async with kubelet(plugin.settings.registration_socket) as kl:
            answer = (await kl.prepare([ref(claim)]))[claim["metadata"]["uid"]]
    finally:
        await delete_all(kube, operator_ready, [consumer, claim])
    assert answer.error == ""
    edits = json.loads(plugin.spec(claim["metadata"]["uid"]).read_text())["devices"][0]["containerEdits"]
    assert f"CLIQUE_ID={CLIQUE}" in edits["env"]
    assert f"COMPUTE_DOMAIN_UUID={uid}" in edits["env"]
    assert f"COMPUTE_DOMAIN_NAMESPACE={namespace}" in edits["env"]
    assert edits["deviceNodes"][0]["path"] == "/dev/nvidia-caps/nvidia-cap7"
    # The daemon runs the driver's IMEX tools, not copies of its own.
    driver = plugin.settings.host_root
    tools = {
        m["containerPath"]: m["hostPath"] for m in edits["mounts"] if "nvidia-imex" in m["containerPath"]
    }
    assert tools == {
        f"/usr/bin/{tool}": f"{driver}/usr/bin/{tool}" for tool in ("nvidia-imex", "nvidia-imex-ctl")
    }
    assert (plugin.settings.state / "domains" / uid).is_dir()


async def test_entry_point_serves_and_stops_cleanly(
    cluster: Testbed, kube: Kube, operator_ready: str
) -> None:
    node = f"plugin-{uuid.uuid4().hex[:6]}"
    await kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cdp-", dir="/tmp") as scratch:
        root = Path(scratch)
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "KUBECONFIG": str(cluster.kubeconfig),
            "NODE_NAME": node,
            "NAMESPACE": operator_ready,
            "KUBELET_ROOT_DIR": str(root / "kubelet"),
            "CDI_ROOT": str(root / "cdi"),
            "STATE_DIR": str(root / "state"),
            "HTTP_PORT": str(port),
            "HEALTH_SOURCE": "static",
            "LOG_FORMAT": "json",
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = root / "plugin.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "computedomain.plugin", env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:

            async def ready() -> bool:
                assert process.returncode is None, log.read_text()
                try:
                    async with (
                        aiohttp.ClientSession() as session,
                        session.get(f"http://127.0.0.1:{port}/readyz") as response,
                    ):
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            registration = root / "kubelet" / "plugins_registry" / "compute-domain.nvidia.com-reg.sock"

            def listening() -> bool:
                assert process.returncode is None, log.read_text()
                return registration.exists()

            # As the kubelet's plugin watcher does: the socket appears, then the kubelet registers.
            await eventually(listening, timeout=60, what="the registration socket")
            assert (await register(registration)).name == "compute-domain.nvidia.com"
            await eventually(ready, timeout=30, what="the plugin process ready")
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/metrics") as response,
            ):
                assert "computedomain_plugin_slice_publishes_total" in await response.text()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 20) == 0
            assert not registration.exists()
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            assert any("published ResourceSlice" in line["msg"] for line in lines)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await kube.delete(resource_slices(VERSION), slice_name(node))
            await kube.delete(NODES, node)


async def test_a_restarted_plugin_finishes_what_the_killed_one_began(
    api: client.ApiClient,
    kube: Kube,
    node: tuple[str, str],
    node_root: Path,
    namespace: str,
    operator_ready: str,
) -> None:
    domain = await create_domain(kube, namespace)
    uid = domain["metadata"]["uid"]
    claim, _ = await allocated_claim(kube, namespace, "w-channel", node[0], "channel-0", channel_config(uid))
    daemon = await pod(
        kube, operator_ready, f"daemon-{uuid.uuid4().hex[:6]}", node[0], {names.DOMAIN_LABEL: uid}
    )
    claim_uid = claim["metadata"]["uid"]
    try:
        async with start_plugin(api, kube, *node, node_root, operator_ready) as first:
            async with kubelet(first.settings.registration_socket) as kl:
                waiting = asyncio.create_task(kl.prepare([ref(claim)]))

                async def started() -> bool:
                    return first.plugin.core is not None and claim_uid in first.plugin.core.checkpoint.claims

                await eventually(started, timeout=10, what="the prepare under way")
            # The kubelet's connection drops with the plugin.
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await waiting
        async with start_plugin(api, kube, *node, node_root, operator_ready) as second:
            assert second.plugin.core is not None
            assert second.plugin.core.checkpoint.claims[claim_uid].state == "PrepareStarted"
            await set_ready(kube, daemon)
            async with kubelet(second.settings.registration_socket) as kl:
                answer = (await kl.prepare([ref(claim)]))[claim_uid]
            assert answer.error == ""
            assert second.spec(claim_uid).exists()
            assert second.plugin.core.checkpoint.claims[claim_uid].state == "PrepareCompleted"
    finally:
        await kube.delete(PODS, daemon["metadata"]["name"], operator_ready)
