"""IMEX daemons end to end on a 4-node domain: the session's controller places the daemon pods, the
kubelet double runs the real `compute-domain-daemon run` for each with a token bound to its pod and the
chart's daemon RBAC, and the fake `nvidia-imex` records what each daemon gave it.

Covered: every daemon maps the same peers at the indices the controller assigned; a node leaving and a
new node joining change the peers (IMEX reloads through SIGUSR1) without moving anyone else's index; a
killed `nvidia-imex` is restarted by the daemon's supervisor; the `check` probe answers ready; each
daemon labels its pod with its clique.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.topology import FakeNode, rack_clique_id
from computedomain.api import names
from computedomain.daemon.config import HostEntry, hosts_in_file
from support import testbed
from support.agent import kubectl, render_chart
from support.domains import Cluster, domain_manifest, unique
from support.kubelet import DaemonKubelet, DaemonRun
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

MEMBERS = ["gb200-r0-n12", "gb200-r0-n13", "gb200-r0-n14", "gb200-r0-n15"]
LEAVER = MEMBERS[1]
JOINER = "gb200-r0-n16"
RACK = rack_clique_id(0)
DAEMON_TEMPLATES = ("templates/rbac-imex-daemon.yaml",)
WAIT = 90.0
READY = "IMEX daemon is ready"


@pytest_asyncio.fixture
async def daemon_rbac(cluster: testbed.Testbed, operator_ready: str) -> AsyncIterator[None]:
    """The chart's RBAC for the daemons' service account (the only rights their tokens carry)."""
    manifests = render_chart(DAEMON_TEMPLATES, operator_ready)
    await asyncio.to_thread(kubectl, cluster.kubeconfig, "apply", "-f", "-", manifests=manifests)
    yield
    await asyncio.to_thread(
        kubectl, cluster.kubeconfig, "delete", "--ignore-not-found", "-f", "-", manifests=manifests
    )


@pytest_asyncio.fixture
async def kubelet(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    operator_ready: str,
    daemon_rbac: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[DaemonKubelet]:
    workdir = tmp_path_factory.mktemp("daemons")
    async with DaemonKubelet(api, cluster.kubeconfig, operator_ready, workdir) as double:
        yield double


def peer_names(hosts: Sequence[HostEntry]) -> dict[str, str]:
    """IMEX peer name -> IP, as the fake `nvidia-imex` records what it resolved."""
    return {entry.name: entry.ip_address for entry in hosts}


class Domain:
    """One ComputeDomain with its workload pods, seen through the controller's clique and the daemons."""

    def __init__(self, cluster: Cluster, kubelet: DaemonKubelet, namespace: str) -> None:
        self.cluster = cluster
        self.kubelet = kubelet
        self.namespace = namespace
        self.name = unique("imex")
        self.template = f"{self.name}-channel"
        self.uid = ""
        self.pods: dict[str, str] = {}

    async def create(self, nodes: Sequence[str]) -> None:
        created = await self.cluster.create_domain(
            domain_manifest(self.name, self.namespace, self.template, num_nodes=len(nodes))
        )
        self.uid = created["metadata"]["uid"]

        async def template() -> Any:
            return await self.cluster.claim_template(self.namespace, self.template)

        await eventually(template, timeout=WAIT, what=f"ResourceClaimTemplate {self.template}")
        await self.join(nodes)

    async def join(self, nodes: Sequence[str]) -> None:
        names_ = await self.cluster.start_workload(self.namespace, self.template, nodes)
        self.pods.update(zip(nodes, names_, strict=True))

    async def leave(self, node: str) -> None:
        await self.cluster.stop_workload(self.namespace, [self.pods.pop(node)])

    async def clique(self) -> dict[str, dict[str, Any]]:
        """node -> its daemon entry in the domain's only clique ({} while there is none)."""
        cliques = await self.cluster.labelled(names.CLIQUE_PLURAL, self.uid, self.cluster.operator_namespace)
        assert len(cliques) <= 1, f"the domain spans {len(cliques)} cliques"
        if not cliques:
            return {}
        assert cliques[0]["metadata"]["labels"][names.CLIQUE_LABEL] == RACK
        return {d["nodeName"]: d for d in cliques[0].get("daemons") or []}

    async def converged(self, nodes: Sequence[str]) -> dict[str, int] | None:
        """node -> index once exactly `nodes` run daemons, the clique lists each with its pod's IP, and
        every daemon's hosts file and IMEX hold that same mapping; None before."""
        running = self.kubelet.running()
        if sorted(running) != sorted(nodes):
            return None
        entries = await self.clique()
        if sorted(entries) != sorted(nodes):
            return None
        if any(
            entries[n].get("index") is None or entries[n].get("ipAddress") != running[n].pod_ip for n in nodes
        ):
            return None
        expected = tuple(sorted(HostEntry(entries[n]["index"], entries[n]["ipAddress"]) for n in nodes))
        for run in running.values():
            if hosts_in_file(run.hosts_file.read_text()) != expected:
                return None
            events = run.imex_events()
            if not events or events[-1]["hosts"] != peer_names(expected):
                return None
        return {n: int(entries[n]["index"]) for n in nodes}

    async def wait_converged(self, nodes: Sequence[str]) -> dict[str, int]:
        async def probe() -> dict[str, int] | None:
            return await self.converged(nodes)

        try:
            result: dict[str, int] = await eventually(probe, timeout=WAIT, what=f"daemons on {sorted(nodes)}")
        except AssertionError:
            raise AssertionError(self.describe()) from None
        return result

    def describe(self) -> str:
        """What the daemons did, for a failure message."""
        lines = [f"kubelet double errors: {self.kubelet.errors}"]
        for run in [*self.kubelet.runs.values(), *self.kubelet.stopped.values()]:
            lines.append(f"--- {run.node} ({run.pod_name}, alive={run.alive})")
            lines.append(run.log_text()[-3000:])
        return "\n".join(lines)

    async def remove(self) -> None:
        """Stop the workload, delete the domain, and wait until its daemons and objects are gone."""
        if self.pods:
            await self.cluster.stop_workload(self.namespace, list(self.pods.values()))
            self.pods.clear()
        if self.uid:
            await self.cluster.delete_domain(self.namespace, self.name, timeout=WAIT)
            await self.cluster.wait_nothing_left(self.uid, timeout=WAIT)

            async def stopped() -> bool:
                return not self.kubelet.running() and not await self.cluster.daemon_pods(self.uid)

            await eventually(stopped, timeout=WAIT, what="daemon pods and processes gone")


def reloads(run: DaemonRun) -> int:
    return len(run.imex_events("reload"))


async def wait_ready(run: DaemonRun) -> None:
    """Wait until the pod's readiness probe (`compute-domain-daemon check`) answers that IMEX is ready."""

    async def ready() -> bool:
        return await run.probe() == (0, f"{READY}\n")

    await eventually(ready, timeout=WAIT, interval=0.5, what=f"check ready on {run.node}")


async def test_imex_daemons_follow_the_domain(
    api: client.ApiClient,
    fake_nodes: list[FakeNode],
    controller: ControllerProcess,
    operator_ready: str,
    namespace: str,
    kubelet: DaemonKubelet,
) -> None:
    assert {*MEMBERS, JOINER} <= {n.name for n in fake_nodes}
    domain = Domain(Cluster(api, operator_ready), kubelet, namespace)
    try:
        await domain.create(MEMBERS)
        index = await domain.wait_converged(MEMBERS)
        assert sorted(index.values()) == [0, 1, 2, 3]
        running = kubelet.running()

        # Each daemon labelled its own pod with the clique its node is in.
        for pod in await domain.cluster.daemon_pods(domain.uid):
            assert pod["metadata"]["labels"][names.CLIQUE_LABEL] == RACK
        for run in running.values():
            await wait_ready(run)

        # A node leaves: its daemon is stopped cleanly, the others drop it and keep their indices.
        before = {node: reloads(run) for node, run in running.items()}
        leaver = running[LEAVER]
        await domain.leave(LEAVER)
        stayers = [n for n in MEMBERS if n != LEAVER]
        after_leave = await domain.wait_converged(stayers)
        assert after_leave == {n: index[n] for n in stayers}
        assert await leaver.stop() == 0
        assert [e["event"] for e in leaver.imex_events()][-1] == "stop"
        for node in stayers:
            assert reloads(running[node]) > before[node]
            assert running[node].imex_events("start")[-1]["pid"] == running[node].imex_pid()

        # A new node joins: it takes the free index; nobody else moves.
        before = {node: reloads(running[node]) for node in stayers}
        await domain.join([JOINER])
        after_join = await domain.wait_converged([*stayers, JOINER])
        assert after_join == {**after_leave, JOINER: index[LEAVER]}
        for node in stayers:
            assert reloads(running[node]) > before[node]
        await wait_ready(kubelet.running()[JOINER])

        # nvidia-imex dies: the daemon's supervisor starts it again with the same peers.
        run = kubelet.running()[MEMBERS[0]]
        killed = run.imex_pid()
        assert killed is not None
        starts = len(run.imex_events("start"))
        os.kill(killed, signal.SIGKILL)

        async def restarted() -> int | None:
            pid = run.imex_pid()
            return pid if pid not in (None, killed) and len(run.imex_events("start")) > starts else None

        await eventually(restarted, timeout=WAIT, what=f"nvidia-imex restarted on {run.node}")
        assert run.alive, run.log_text()
        assert await domain.wait_converged([*stayers, JOINER]) == after_join
        await wait_ready(run)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{domain.describe()}") from None
    finally:
        await domain.remove()
