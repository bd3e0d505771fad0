"""The plugin's gRPC services on unix sockets, called as the kubelet calls them."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from computedomain.plugin.core import Core
from computedomain.plugin.kubelet.driver import answer_deadline
from computedomain.plugin.kubelet.health import Health, HealthMonitor, StaticHealth
from computedomain.plugin.kubelet.servers import PluginServers
from support.pluginkubelet import FakeKubelet, kubelet
from support.pluginview import MemoryView, allocated_claim, channel_config, make_core


@pytest.fixture
def short_root() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="cdp-", dir="/tmp") as root:
        yield Path(root)


class Switch:
    """A health source a test can flip."""

    def __init__(self) -> None:
        self.reading = Health("HEALTHY", "fabric up")

    def check(self) -> Health:
        return Health(self.reading.status, self.reading.message, time.time())


Plugin = tuple[PluginServers, Core, MemoryView, Switch, list[bool]]


@pytest_asyncio.fixture
async def plugin(short_root: Path) -> AsyncIterator[Plugin]:
    node = make_core(short_root / "node", MemoryView())
    source = Switch()
    monitor = HealthMonitor(source, interval=60)
    await monitor.check_once()
    statuses: list[bool] = []
    servers = PluginServers(
        "compute-domain.nvidia.com",
        node.core,
        monitor,
        "node-a",
        short_root / "kubelet" / "plugins" / "compute-domain.nvidia.com" / "dra.sock",
        short_root / "kubelet" / "plugins_registry" / "compute-domain.nvidia.com-reg.sock",
        lambda ok, error: statuses.append(ok),
        health_resend=60,
    )
    await servers.start()
    try:
        yield servers, node.core, node.view, source, statuses
    finally:
        await servers.stop(grace=0)


async def test_registration_names_the_driver_endpoint_and_versions(plugin: Plugin) -> None:
    servers, _, _, _, statuses = plugin
    async with kubelet(servers.registration_socket) as kl:
        started = time.monotonic()
        info = await kl.get_info()
        assert time.monotonic() - started < 1.0
        await kl.notify(True)
    assert (info.type, info.name) == ("DRAPlugin", "compute-domain.nvidia.com")
    assert info.endpoint == str(servers.dra_socket)
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    assert statuses == [True]


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_prepare_and_unprepare_over_grpc(plugin: Plugin, version: str) -> None:
    servers, _, view, _, _ = plugin
    domain = view.add_domain("team", "cd")
    view.set_ready(domain.uid)
    good = view.add_claim(allocated_claim("team", "good", "channel-0", channel_config(domain.uid)))
    bad = view.add_claim(allocated_claim("team", "bad", "channel-0", channel_config("nope")))
    refs = [("team", c["metadata"]["name"], c["metadata"]["uid"]) for c in (good, bad)]

    kl: FakeKubelet
    async with kubelet(servers.registration_socket) as kl:
        prepared = await kl.prepare(refs, version)
        unprepared = await kl.unprepare(refs, version)

    ok = prepared[good["metadata"]["uid"]]
    assert ok.error == ""
    [device] = ok.devices
    assert (list(device.request_names), device.pool_name, device.device_name) == (
        ["channel"],
        "node-a",
        "channel-0",
    )
    assert list(device.cdi_device_ids) == [
        f"k8s.compute-domain.nvidia.com/claim={good['metadata']['uid']}-channel-0"
    ]
    assert "no ComputeDomain has that UID" in prepared[bad["metadata"]["uid"]].error
    assert {uid: r.error for uid, r in unprepared.items()} == {r[2]: "" for r in refs}


async def test_prepare_answers_every_claim_before_the_kubelets_deadline_while_the_api_is_slow(
    plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers, core, view, _, _ = plugin
    core.prepare_wait = 30.0  # the gate alone would outlast the call
    domain = view.add_domain("team", "cd")  # its daemon never gets ready
    stalled = view.add_claim(
        allocated_claim("team", "stalled", "channel-0", channel_config(domain.uid), node="pool-stalled")
    )
    waiting = view.add_claim(allocated_claim("team", "waiting", "channel-0", channel_config(domain.uid)))
    read_claim = view.read_claim

    async def slow_read(namespace: str, name: str) -> dict[str, Any] | None:
        if name == "stalled":
            # An API server in trouble: the view's reads retry for seconds before they give up.
            await asyncio.sleep(60)
        return await read_claim(namespace, name)

    monkeypatch.setattr(view, "read_claim", slow_read)
    refs = [("team", c["metadata"]["name"], c["metadata"]["uid"]) for c in (stalled, waiting)]

    kl: FakeKubelet
    async with kubelet(servers.registration_socket) as kl:
        started = time.monotonic()
        prepared = await kl.prepare(refs, timeout=4.0)
        elapsed = time.monotonic() - started

    assert elapsed < 4.0
    assert "reading the claim and its ComputeDomain did not finish before the kubelet's deadline" in (
        prepared[stalled["metadata"]["uid"]].error
    )
    assert "the kubelet will try again" in prepared[waiting["metadata"]["uid"]].error
    assert (
        "ComputeDomain team/cd on node node-a is not ready after"
        in prepared[waiting["metadata"]["uid"]].error
    )


def test_the_answer_deadline_keeps_time_to_send_the_answer() -> None:
    assert answer_deadline(10.0, now=100.0) == 108.0
    assert answer_deadline(4.0, now=100.0) == 103.0  # a short call keeps back a quarter
    assert answer_deadline(None, now=100.0) == 143.0  # the kubelet's 45 s when the call has no deadline
    assert answer_deadline(-1.0, now=100.0) == 100.0


async def test_health_stream_reports_every_device_and_changes(plugin: Plugin) -> None:
    servers, _, _, source, _ = plugin
    async with kubelet(servers.registration_socket) as kl:
        stream = kl.watch_health()
        first = await stream.read()
        source.reading = Health("UNHEALTHY", "fabric registration failed")
        await servers.health.monitor.check_once()
        second = await stream.read()
        stream.cancel()
    assert {(d.device.pool_name, d.device.device_name, d.health) for d in first.devices} == {
        ("node-a", "channel-0", 1),
        ("node-a", "daemon-0", 1),
    }
    assert {(d.health, d.message) for d in second.devices} == {(2, "fabric registration failed")}


async def test_stop_removes_both_sockets(short_root: Path) -> None:
    node = make_core(short_root / "node", MemoryView())
    monitor = HealthMonitor(StaticHealth(), interval=60)
    servers = PluginServers(
        "compute-domain.nvidia.com",
        node.core,
        monitor,
        "node-a",
        short_root / "dra.sock",
        short_root / "reg" / "r.sock",
        lambda ok, e: None,
    )
    (short_root / "dra.sock").write_text("left over by a crashed run")
    await servers.start()
    assert servers.dra_socket.is_socket()
    assert servers.registration_socket.is_socket()
    await servers.stop(grace=0)
    assert not servers.dra_socket.exists()
    assert not servers.registration_socket.exists()
