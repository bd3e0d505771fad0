"""Every program's /metrics, scraped over HTTP from the real program after real work on the test bed.

- the kubelet plugin (in this process, serving its own port) after the test, playing the kubelet,
  had it prepare a channel claim that waits for its IMEX daemon, refuse a claim of no domain, and
  unprepare;
- the node agent (a process of its own, on the fake NVML library) after it labelled its Node;
- an IMEX daemon that the kubelet double runs for a domain the session's controller forms, before
  and after its `nvidia-imex` is killed, and that controller's formation histogram.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families

from cdtestbed.cluster import free_port
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.processes import terminate
from cdtestbed.topology import FakeNode
from computedomain.api import names
from computedomain.kube import EVENTS, NODES, PODS, Kube
from fakenvml.build import compiler
from fakenvml.config import FakeGpuNode
from support import metricsfixture, testbed
from support.agent import fake_nvml_dir, kubectl, render_chart
from support.domains import Cluster, condition, domain_manifest, unique
from support.kubelet import DaemonKubelet, DaemonRun, process_env, spawn
from support.pluginbed import (
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

# name -> {labels: value}, from one scrape.
Scrape = dict[str, dict[frozenset[tuple[str, str]], float]]
WAIT = 90.0
# A node of the session's racks that no other test puts a domain on.
DOMAIN_NODE = "gb200-r1-n16"


async def scrape(port: int, path: str = "/metrics", keep: tuple[str, str] | None = None) -> Scrape:
    """Every sample the program on `port` serves, by name and labels; `keep` (program, the work
    before): the scrape may become that program's fixture of real series (`metricsfixture`)."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as answer:
        assert answer.status == 200, await answer.text()
        text = await answer.text()
    if keep is not None:
        metricsfixture.record(keep[0], text, keep[1])
    found: Scrape = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def value(found: Scrape, name: str, **labels: str) -> float:
    """One sample's value (0 when the program has not reported it)."""
    return found.get(name, {}).get(frozenset(labels.items()), 0.0)


async def get_status(port: int, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as answer:
        return answer.status


async def test_the_plugin_reports_prepares_waits_errors_and_unprepares(
    api: client.ApiClient,
    kube: Kube,
    node: tuple[str, str],
    node_root: Path,
    namespace: str,
    operator_ready: str,
) -> None:
    """A prepare that waited for its daemon is one more prepare and daemon wait observed, a claim of no
    domain one more DomainNotFound error, its unprepare one more unprepare observed; the plugin says it
    is registered and counts the claim while it is prepared."""
    port = free_port()
    async with start_plugin(api, kube, *node, node_root, operator_ready, {"HTTP_PORT": str(port)}) as plugin:
        before = await scrape(port)
        assert value(before, "computedomain_plugin_registered") == 1
        domain = await create_domain(kube, namespace)
        uid = domain["metadata"]["uid"]
        claim, worker = await allocated_claim(
            kube, namespace, "worker", plugin.node, "channel-0", channel_config(uid)
        )
        lost, _ = await allocated_claim(
            kube, namespace, "lost", plugin.node, "channel-0", channel_config(str(uuid.uuid4()))
        )
        daemon = await pod(
            kube, operator_ready, f"daemon-{uuid.uuid4().hex[:6]}", plugin.node, {names.DOMAIN_LABEL: uid}
        )
        try:
            async with kubelet(plugin.settings.registration_socket) as kl:
                prepare = asyncio.create_task(kl.prepare([ref(claim)]))

                async def waiting() -> bool:
                    items, _ = await kube.list(
                        EVENTS, namespace, field_selector=f"involvedObject.name={worker['metadata']['name']}"
                    )
                    return any(e["reason"] == "WaitingForIMEXDaemon" for e in items)

                # The claim waits for its daemon before the daemon's pod turns Ready.
                await eventually(waiting, timeout=15, what="the prepare waiting for the daemon")
                await set_ready(kube, daemon)
                assert (await prepare)[claim["metadata"]["uid"]].error == ""
                prepared = await scrape(port)
                refused = await kl.prepare([ref(lost)])
                assert "no ComputeDomain has that UID" in refused[lost["metadata"]["uid"]].error
                assert (await kl.unprepare([ref(claim)]))[claim["metadata"]["uid"]].error == ""
            after = await scrape(
                port,
                keep=("kubelet-plugin", "a claim prepared after waiting for its daemon, one of no domain"),
            )
        finally:
            await kube.delete(PODS, daemon["metadata"]["name"], operator_ready)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(prepared, "computedomain_plugin_prepared_claims") == 1
    assert value(after, "computedomain_plugin_prepared_claims") == 0
    assert added("computedomain_plugin_prepares_total", result="prepared") == 1
    assert added("computedomain_plugin_prepare_seconds_count") == 1
    assert added("computedomain_plugin_daemon_wait_seconds_count") == 1
    # The wait lasted until the daemon was Ready: at least as long as it took to see the Event.
    assert added("computedomain_plugin_daemon_wait_seconds_sum") > 0
    assert added("computedomain_plugin_claim_errors_total", call="prepare", reason="DomainNotFound") == 1
    assert added("computedomain_plugin_unprepare_seconds_count") == 1
    print(
        "plugin: prepare {:.3f}s, daemon wait {:.3f}s, unprepare {:.4f}s".format(
            added("computedomain_plugin_prepare_seconds_sum"),
            added("computedomain_plugin_daemon_wait_seconds_sum"),
            added("computedomain_plugin_unprepare_seconds_sum"),
        )
    )


@pytest.mark.skipif(compiler() is None, reason="no C compiler (cc) to build the fake NVML library")
async def test_the_agent_reports_each_gpus_fabric_its_clique_and_its_label_writes(
    kube: Kube, cluster: testbed.Testbed, namespace: str, tmp_path: Path
) -> None:
    """An agent on a healthy tray of 4 GPUs reports each GPU's fabric state as completed (3) with the
    tray's clique, the node's clique, its checks, and the label write that put the clique on its Node."""
    name = f"agent-{uuid.uuid4().hex[:6]}"
    await kube.create(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    hardware = FakeGpuNode()
    hardware.write(tmp_path / "nvml.cfg")
    port = free_port()
    env = process_env(
        {
            "NODE_NAME": name,
            "POD_NAMESPACE": namespace,
            "HTTP_PORT": str(port),
            "KUBECONFIG": str(cluster.kubeconfig),
            "LD_LIBRARY_PATH": str(fake_nvml_dir()),
            "FAKE_NVML_CONFIG": str(tmp_path / "nvml.cfg"),
        }
    )
    argv = [sys.executable, "-m", "computedomain.agent", "--interval", "1"]
    process = spawn(argv, env, tmp_path / "agent.log")
    try:

        async def labelled() -> bool:
            assert process.poll() is None, (tmp_path / "agent.log").read_text()
            found = await kube.get(NODES, name)
            labels = (found or {}).get("metadata", {}).get("labels") or {}
            return bool(labels.get(names.GPU_CLIQUE_LABEL) == hardware.clique)

        await eventually(labelled, timeout=WAIT, what=f"the agent labelling {name}")

        async def written() -> Scrape | None:
            found = await scrape(port, keep=("node-agent", "a healthy tray of 4 GPUs, its Node labelled"))
            return found if value(found, "computedomain_agent_label_writes_total", result="ok") else None

        found = await eventually(written, timeout=15, what="the label write counted")
        assert await get_status(port, "/readyz") == 200
    finally:
        terminate(process, 20)
        await kube.delete(NODES, name)

    assert value(found, "computedomain_agent_label_writes_total", result="ok") == 1
    assert value(found, "computedomain_agent_label_writes_total", result="error") == 0
    assert value(found, "computedomain_agent_checks_total") >= 1
    states = sorted(
        (dict(labels)["gpu"], v) for labels, v in found["computedomain_agent_gpu_fabric_state"].items()
    )
    assert states == [(str(i), 3.0) for i in range(4)]
    cliques = {dict(labels)["clique"] for labels in found["computedomain_agent_gpu_clique_info"]}
    assert cliques == {hardware.clique}
    assert value(found, "computedomain_agent_clique_info", clique=hardware.clique, reason="CliqueFound") == 1
    assert process.returncode == 0, (tmp_path / "agent.log").read_text()
    print(f"agent: fabric states {[v for _, v in states]}, clique {hardware.clique}, 1 label write")


@pytest_asyncio.fixture
async def daemon_rbac(cluster: testbed.Testbed, operator_ready: str) -> AsyncIterator[None]:
    """The chart's RBAC for the daemons' service account (the only rights their tokens carry)."""
    manifests = render_chart(("templates/rbac-imex-daemon.yaml",), operator_ready)
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    yield
    await asyncio.to_thread(
        kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
    )


async def test_the_daemon_and_the_controller_report_a_forming_domain(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    fake_nodes: list[FakeNode],
    controller: ControllerProcess,
    operator_ready: str,
    namespace: str,
    daemon_rbac: None,
    tmp_path: Path,
) -> None:
    """A one-node domain forms: its daemon reports IMEX running and ready with one known, Ready peer;
    a killed `nvidia-imex` is one restart (exited) and IMEX ready again; the controller observes the
    domain's formation once."""
    assert DOMAIN_NODE in {n.name for n in fake_nodes}
    formations = controller.metric("computedomain_domain_formation_seconds_count")
    created = time.monotonic()
    port = free_port()
    cluster_api = Cluster(api, operator_ready)
    name = unique("metrics")
    template = f"{name}-channel"
    body = await cluster_api.create_domain(domain_manifest(name, namespace, template, num_nodes=1))
    uid = body["metadata"]["uid"]
    workload: list[str] = []
    async with DaemonKubelet(
        api, cluster.kubeconfig, operator_ready, tmp_path / "daemons", extra_env={"HTTP_PORT": str(port)}
    ) as double:
        try:

            async def has_template() -> object:
                return await cluster_api.claim_template(namespace, template)

            await eventually(has_template, timeout=WAIT, what=f"ResourceClaimTemplate {template}")

            def waiting_reported() -> str | None:
                text = controller.get("/metrics")[1]
                return (
                    text
                    if 'computedomain_domain_not_ready_seconds{reason="WaitingForNodes"}' in text
                    else None
                )

            # The domain waits for its node: the controller reports how long it has not been Ready.
            text = await eventually(waiting_reported, timeout=15, what="the domain reported not Ready")
            metricsfixture.record("controller", text, "a domain waiting for its node")
            workload = await cluster_api.start_workload(namespace, template, [DOMAIN_NODE])

            def running() -> DaemonRun | None:
                return double.running().get(DOMAIN_NODE)

            run = await eventually(running, timeout=WAIT, what=f"the daemon on {DOMAIN_NODE}")

            async def formed() -> Scrape | None:
                assert run.alive, run.log_text()
                current = await cluster_api.domain(namespace, name)
                if condition(current).get("status") != "True":
                    return None
                try:
                    found = await scrape(port)
                except aiohttp.ClientError:
                    return None
                ready = value(found, "computedomain_daemon_imex_ready") == 1
                peers = value(found, "computedomain_daemon_peers_ready") == 1
                return found if ready and peers else None

            found = await eventually(formed, timeout=WAIT, what="the domain formed and its daemon ready")
            formed_after = time.monotonic() - created
            assert value(found, "computedomain_daemon_imex_running") == 1
            assert value(found, "computedomain_daemon_peers") == 1
            assert value(found, "computedomain_daemon_imex_restarts_total", cause="exited") == 0
            assert await get_status(port, "/readyz") == 200

            async def observed() -> float | None:
                count = controller.metric("computedomain_domain_formation_seconds_count")
                return count if count > formations else None

            assert await eventually(observed, timeout=15, what="the formation observed") == formations + 1

            killed = run.imex_pid()
            assert killed is not None
            os.kill(killed, signal.SIGKILL)

            async def restarted() -> Scrape | None:
                assert run.alive, run.log_text()
                again = await scrape(
                    port, keep=("imex-daemon", "a one-node domain formed, nvidia-imex killed once")
                )
                restarts = value(again, "computedomain_daemon_imex_restarts_total", cause="exited")
                pid = run.imex_pid()
                return again if restarts == 1 and pid not in (None, killed) else None

            again = await eventually(restarted, timeout=WAIT, what="nvidia-imex restarted")

            async def ready_again() -> bool:
                return value(await scrape(port), "computedomain_daemon_imex_ready") == 1

            await eventually(ready_again, timeout=WAIT, what="IMEX ready again")
            assert value(again, "computedomain_daemon_imex_restarts_total", cause="reconfigured") == 0
        except AssertionError as error:
            logs = "\n".join(r.log_text()[-3000:] for r in [*double.runs.values(), *double.stopped.values()])
            raise AssertionError(f"{error}\nkubelet double errors: {double.errors}\n{logs}") from None
        finally:
            if workload:
                await cluster_api.stop_workload(namespace, workload)
            await cluster_api.delete_domain(namespace, name, timeout=WAIT)
            await cluster_api.wait_nothing_left(uid, timeout=WAIT)
    sums = controller.get("/metrics")[1]
    print(f"domain formed within {formed_after:.1f}s of its creation (as the test saw it)")
    print(
        next(
            line
            for line in sums.splitlines()
            if line.startswith("computedomain_domain_formation_seconds_sum")
        )
    )
