"""The `run` flow with its Kubernetes calls replaced by fakes and IMEX by the fake `nvidia-imex`.

The real API calls (pod label, node label, clique watch) are exercised against an API server elsewhere;
here the clique's daemon lists are fed by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from computedomain.api import names
from computedomain.daemon import kube, run
from computedomain.daemon.config import DaemonEntry, hosts_in_file
from computedomain.daemon.process import ImexFatalError
from computedomain.daemon.run import run_daemon
from computedomain.daemon.settings import DaemonSettings, load_settings
from computedomain.kube import Kube, KubeError
from computedomain.kube.retry import Stopped, retry
from fakes.imex.harness import FAKE_IMEX, events_of, wait_until

DOMAIN_UID = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
NODE = "gb200-n01"
POD_IP = "10.244.3.17"
NO_API = cast(Kube, object())


@dataclass
class FakeCluster:
    """Stands in for the API server: records the pod label, serves the node label, feeds clique lists."""

    node_clique: str = ""
    labels: list[tuple[str, str, str]] = field(default_factory=list)
    watched: list[tuple[str, str]] = field(default_factory=list)
    lists: asyncio.Queue[tuple[DaemonEntry, ...]] = field(default_factory=asyncio.Queue)

    async def label_own_pod(self, kube: Any, namespace: str, pod_name: str, clique_id: str) -> None:
        self.labels.append((namespace, pod_name, clique_id))

    async def read_node_clique(self, kube: Any, node_name: str) -> str:
        return self.node_clique

    async def watch_clique(
        self, kube: Any, namespace: str, clique_name: str
    ) -> AsyncIterator[tuple[DaemonEntry, ...]]:
        self.watched.append((namespace, clique_name))
        while True:
            yield await self.lists.get()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(kube, "label_own_pod", fake.label_own_pod)
    monkeypatch.setattr(kube, "read_node_clique", fake.read_node_clique)
    monkeypatch.setattr(kube, "watch_clique", fake.watch_clique)
    return fake


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    values = {
        "NODE_NAME": NODE,
        "POD_IP": POD_IP,
        "POD_NAME": "computedomain-daemon-x7k2p",
        "POD_NAMESPACE": "dra-driver",
        "COMPUTE_DOMAIN_UUID": DOMAIN_UID,
        "CLIQUE_ID": CLIQUE,
        "MAX_NODES_PER_IMEX_DOMAIN": "4",
        "IMEX_CONFIG_DIR": str(tmp_path / "imexd"),
        "IMEX_HOSTS_FILE": str(hosts),
        "IMEX_BINARY": str(FAKE_IMEX),
    }
    # The fake IMEX inherits the daemon's environment, as the real one does.
    monkeypatch.setenv("IMEX_HOSTS_FILE", str(hosts))
    monkeypatch.delenv("FAKE_IMEX_STATE", raising=False)
    return values


def daemon(node: str, ip: str, index: int | None) -> DaemonEntry:
    return DaemonEntry(node_name=node, ip_address=ip, clique_id=CLIQUE, index=index)


async def run_in_background(settings: DaemonSettings) -> tuple[asyncio.Task[None], asyncio.Event]:
    stop = asyncio.Event()
    return asyncio.create_task(run_daemon(settings, NO_API, stop)), stop


async def test_node_without_fabric_labels_pod_and_idles(cluster: FakeCluster, env: dict[str, str]) -> None:
    settings = load_settings(dict(env, CLIQUE_ID=""))
    task, stop = await run_in_background(settings)
    await wait_until(lambda: settings.clique_file.exists(), "the clique to be recorded")
    assert cluster.labels == [("dra-driver", "computedomain-daemon-x7k2p", "")]
    assert settings.clique_file.read_text() == ""
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not settings.config_file.exists()
    assert cluster.watched == []


async def test_clique_from_node_label_when_cdi_did_not_set_it(
    cluster: FakeCluster, env: dict[str, str]
) -> None:
    cluster.node_clique = CLIQUE
    settings = load_settings({key: value for key, value in env.items() if key != "CLIQUE_ID"})
    task, stop = await run_in_background(settings)
    await wait_until(lambda: cluster.watched, "the clique watch")
    assert cluster.labels == [("dra-driver", "computedomain-daemon-x7k2p", CLIQUE)]
    assert cluster.watched == [("dra-driver", names.clique_name(DOMAIN_UID, CLIQUE))]
    assert settings.clique_file.read_text() == CLIQUE
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_full_flow_start_reload_restart_stop(cluster: FakeCluster, env: dict[str, str]) -> None:
    settings = load_settings(env)
    state = settings.config_dir
    task, stop = await run_in_background(settings)
    await wait_until(lambda: cluster.watched, "the clique watch")
    assert settings.nodes_file.read_text().splitlines()[-1] == "compute-domain-daemon-0003"
    assert f"IMEX_CMD_BIND_INTERFACE_IP={POD_IP}" in settings.config_file.read_text()

    await cluster.lists.put((daemon(NODE, POD_IP, None),))
    await cluster.lists.put((daemon(NODE, POD_IP, 0), daemon("gb200-n02", "10.244.5.9", None)))
    starts = await wait_until(lambda: events_of(state, "start"), "IMEX to start")
    assert starts[0]["hosts"] == {"compute-domain-daemon-0000": POD_IP}

    await cluster.lists.put((daemon(NODE, POD_IP, 0), daemon("gb200-n02", "10.244.5.9", 1)))
    reloads = await wait_until(lambda: events_of(state, "reload"), "IMEX to reload")
    assert reloads[0]["hosts"] == {
        "compute-domain-daemon-0000": POD_IP,
        "compute-domain-daemon-0001": "10.244.5.9",
    }
    assert reloads[0]["pid"] == starts[0]["pid"]

    await cluster.lists.put((daemon(NODE, POD_IP, 2), daemon("gb200-n02", "10.244.5.9", 1)))
    await wait_until(lambda: len(events_of(state, "start")) == 2, "IMEX to restart")
    restarted = events_of(state, "start")
    assert restarted[1]["hosts"] == {
        "compute-domain-daemon-0001": "10.244.5.9",
        "compute-domain-daemon-0002": POD_IP,
    }
    assert [event["pid"] for event in events_of(state, "stop")] == [starts[0]["pid"]]
    assert [entry.index for entry in hosts_in_file(settings.hosts_file.read_text())] == [1, 2]

    stop.set()
    await asyncio.wait_for(task, 10)
    assert [event["pid"] for event in events_of(state, "stop")] == [starts[0]["pid"], restarted[1]["pid"]]
    assert not (state / "imex.pid").exists()


async def test_imex_starts_while_the_pod_label_is_still_on_its_way(
    cluster: FakeCluster, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    released = asyncio.Event()

    async def slow_label(kube_client: Any, namespace: str, pod_name: str, clique_id: str) -> None:
        await released.wait()
        cluster.labels.append((namespace, pod_name, clique_id))

    monkeypatch.setattr(kube, "label_own_pod", slow_label)
    settings = load_settings(env)
    task, stop = await run_in_background(settings)
    await cluster.lists.put((daemon(NODE, POD_IP, 0),))
    await wait_until(lambda: events_of(settings.config_dir, "start"), "IMEX to start")
    assert cluster.labels == []
    released.set()
    await wait_until(lambda: cluster.labels, "the pod label")
    assert cluster.labels == [("dra-driver", "computedomain-daemon-x7k2p", CLIQUE)]
    # The label's end is not the daemon's.
    await asyncio.sleep(0.1)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_refused_pod_label_ends_the_daemon_and_its_imex(
    cluster: FakeCluster, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    released = asyncio.Event()

    async def refused_label(kube_client: Any, namespace: str, pod_name: str, clique_id: str) -> None:
        await released.wait()
        raise KubeError(403, "forbidden")

    monkeypatch.setattr(kube, "label_own_pod", refused_label)
    monkeypatch.setattr(run, "STARTUP_RETRY", FAST)
    settings = load_settings(env)
    task, _ = await run_in_background(settings)
    await cluster.lists.put((daemon(NODE, POD_IP, 0),))
    starts = await wait_until(lambda: events_of(settings.config_dir, "start"), "IMEX to start")
    released.set()
    with pytest.raises(KubeError, match="forbidden"):
        await asyncio.wait_for(task, 10)
    assert [event["pid"] for event in events_of(settings.config_dir, "stop")] == [starts[0]["pid"]]


async def test_plugin_template_is_used(cluster: FakeCluster, env: dict[str, str]) -> None:
    settings = load_settings(env)
    settings.config_dir.mkdir(parents=True)
    settings.template_file.write_text("LOG_LEVEL=1\nIMEX_CMD_BIND_INTERFACE_IP=\nIMEX_NODE_CONFIG_FILE=\n")
    task, stop = await run_in_background(settings)
    await wait_until(lambda: cluster.watched, "the clique watch")
    assert settings.config_file.read_text() == (
        f"LOG_LEVEL=1\nIMEX_CMD_BIND_INTERFACE_IP={POD_IP}\nIMEX_NODE_CONFIG_FILE={settings.nodes_file}\n"
    )
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_imex_that_cannot_start_ends_the_daemon(
    cluster: FakeCluster, env: dict[str, str], tmp_path: Path
) -> None:
    settings = load_settings(dict(env, IMEX_BINARY=str(tmp_path / "no-such-imex")))
    task, _ = await run_in_background(settings)
    await cluster.lists.put((daemon(NODE, POD_IP, 0),))
    with pytest.raises(ImexFatalError, match="cannot start"):
        await asyncio.wait_for(task, 10)


class Flaky:
    """Fails with `errors` in order, then answers "ok"; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


# The daemon's start-up policy with delays a test can wait out.
FAST = dataclasses.replace(run.STARTUP_RETRY, initial=0.001, maximum=0.001)


async def test_transient_failures_are_retried_past_the_attempt_limit() -> None:
    call = Flaky(*[KubeError(503, "unavailable")] * (run.STARTUP_ATTEMPTS * 2), ConnectionResetError())
    assert await retry(call, what="reading", policy=FAST, stop=asyncio.Event()) == "ok"
    assert call.calls == run.STARTUP_ATTEMPTS * 2 + 2


async def test_a_lasting_refusal_ends_the_start_up() -> None:
    call = Flaky(*[KubeError(403, "forbidden")] * run.STARTUP_ATTEMPTS)
    with pytest.raises(KubeError, match="forbidden"):
        await retry(call, what="reading", policy=FAST, stop=asyncio.Event())
    assert call.calls == run.STARTUP_ATTEMPTS


async def test_stop_ends_the_retries() -> None:
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(Stopped, match="reading"):
        await retry(Flaky(KubeError(503, "unavailable")), what="reading", policy=FAST, stop=stop)


def test_fake_imex_is_executable() -> None:
    assert os.access(FAKE_IMEX, os.X_OK)
