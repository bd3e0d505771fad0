"""Clique mode against the real API server: the controller's one DaemonSet of long-running IMEX daemons, the
peer object `imex.<clique ID>` it keeps from their pods, the real daemon following it, and a killed daemon
coming back; in domain mode none of it exists.

KWOK runs the DaemonSet's pods on every fake GPU node (both NVL72 racks); a kubelet double runs the real
`compute-domain-daemon run` for the pods of two nodes, with the fake `nvidia-imex`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.controller_process import ControllerProcess
from cdtestbed.topology import FakeNode, rack_clique_id
from computedomain.api import names
from computedomain.daemon.config import hosts_in_file
from conftest import controller_env
from support import testbed
from support.agent import kubectl, render_chart
from support.domains import Cluster, domain_manifest, unique
from support.kubelet import DaemonKubelet, DaemonRun, is_running
from support.testbed import work_root
from support.waiting import eventually

pytestmark = pytest.mark.cluster

NAME = "computedomain-clique-daemons"
SELECTOR = "resource.nvidia.com/imexDaemons=clique"
RACKS = (rack_clique_id(0), rack_clique_id(1))
# The nodes whose daemon pods the kubelet double runs for real; KWOK alone runs the others.
RUN_FOR_REAL = ("gb200-r0-n03", "gb200-r0-n04")
DOMAIN_NODE = "gb200-r0-n05"
WAIT = 120.0
DAEMON_TEMPLATES = ("templates/rbac-imex-daemon.yaml",)


class CliqueKubelet(DaemonKubelet):
    """The kubelet double, for the clique daemons' pods (their own label) on `nodes` only."""

    def __init__(self, *args: Any, nodes: Sequence[str], selector: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nodes = set(nodes)
        self.selector = selector

    async def _start(self, pod: dict[str, Any]) -> None:
        if pod["spec"].get("nodeName") in self.nodes:
            await super()._start(pod)

    async def _follow(self) -> None:
        core = client.CoreV1Api(self.api)
        while True:
            try:
                listing = await core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                await self._sync([self.api.sanitize_for_serialization(p) for p in listing.items])
                async with watch.Watch().stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ) as stream:
                    async for event in stream:
                        pod = event["raw_object"]
                        if event["type"] == "DELETED" or not is_running(pod):
                            await self._stop(pod["metadata"]["uid"])
                        elif pod["metadata"]["uid"] not in self.runs:
                            await self._start(pod)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a double keeps going, and says what went wrong
                self.errors.append(repr(err))
                await asyncio.sleep(0.5)


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
async def clique_controller(
    api: client.ApiClient, cluster: testbed.Testbed, operator_ready: str
) -> AsyncIterator[ControllerProcess]:
    """A controller in clique mode; afterwards the clique daemons and their objects are removed."""
    log_dir = cluster.logs or work_root()
    env = controller_env(operator_ready, IMEX_MODE="clique", POD_NAME="controller-clique")
    process = ControllerProcess(cluster.kubeconfig, log_dir / "controller-clique.log", env)
    process.start()
    try:
        yield process
    finally:
        process.stop()
        await remove_clique_daemons(api, operator_ready)


async def remove_clique_daemons(api: client.ApiClient, namespace: str) -> None:
    """Delete the DaemonSet, its template and the peer objects, and wait until their pods are gone."""
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
    for delete in (
        apps.delete_namespaced_daemon_set(NAME, namespace),
        client.ResourceV1Api(api).delete_namespaced_resource_claim_template(NAME, namespace),
    ):
        try:
            await delete
        except ApiException as error:
            if error.status != 404:
                raise
    await custom.delete_collection_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, label_selector=SELECTOR
    )

    async def gone() -> bool:
        pods = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=SELECTOR)
        return not pods.items

    await eventually(gone, timeout=WAIT, what="clique daemon pods gone")


async def peers(api: client.ApiClient, namespace: str, clique: str) -> dict[str, dict[str, Any]]:
    """node -> its entry in the clique's peer object ({} while there is none)."""
    try:
        found = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.CLIQUE_PLURAL, f"imex.{clique}"
        )
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    assert found["metadata"]["labels"] == {
        "resource.nvidia.com/imexDaemons": "clique",
        names.CLIQUE_LABEL: clique,
    }
    assert not found["metadata"].get("ownerReferences")
    return {d["nodeName"]: d for d in found.get("daemons") or []}


async def daemon_pods(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    """node -> its Running, Ready clique daemon pod that is not being deleted."""
    listing = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=SELECTOR)
    found: dict[str, dict[str, Any]] = {}
    for item in listing.items:
        pod = api.sanitize_for_serialization(item)
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        if ready and is_running(pod) and not pod["metadata"].get("deletionTimestamp"):
            found[pod["spec"]["nodeName"]] = pod
    return found


def rss_kib(run: DaemonRun) -> int:
    """The resident memory of the daemon process of one pod, in KiB."""
    assert run.process is not None
    for line in Path(f"/proc/{run.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {run.process.pid}")


def imex_peers(run: DaemonRun) -> dict[str, str] | None:
    """The peer names and IPs the fake `nvidia-imex` last started or reloaded with."""
    events = [e for e in run.imex_events() if e["event"] in ("start", "reload")]
    return events[-1]["hosts"] if events else None


async def test_clique_mode_runs_one_daemon_per_clique_node_and_keeps_their_peers(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    fake_nodes: list[FakeNode],
    operator_ready: str,
    daemon_rbac: None,
    clique_controller: ControllerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    namespace = operator_ready
    nodes_of = {clique: sorted(n.name for n in fake_nodes if n.clique_id == clique) for clique in RACKS}
    daemonset = await eventually(
        lambda: client.AppsV1Api(api).read_namespaced_daemon_set(NAME, namespace),
        timeout=WAIT,
        what="DaemonSet",
    )
    assert daemonset.spec.template.spec.containers[0].env[0].to_dict()["value"] == "clique"

    # Every node of each rack gets a daemon and a slot of its clique, indices 0..17 once each.
    async def filled() -> dict[str, dict[str, dict[str, Any]]] | None:
        pods = await daemon_pods(api, namespace)
        layout = {clique: await peers(api, namespace, clique) for clique in RACKS}
        for clique, nodes in nodes_of.items():
            entries = layout[clique]
            if sorted(entries) != nodes or any(
                entries[n]["status"] != "Ready"
                or n not in pods
                or entries[n]["ipAddress"] != pods[n]["status"]["podIP"]
                for n in nodes
            ):
                return None
        return layout

    layout = await eventually(filled, timeout=WAIT, interval=0.5, what="peer objects of both racks filled")
    for clique, nodes in nodes_of.items():
        assert sorted(layout[clique][n]["index"] for n in nodes) == list(range(len(nodes)))
        assert {layout[clique][n]["cliqueID"] for n in nodes} == {clique}

    # The real daemon follows its clique's peer object: IMEX runs with every node of the clique.
    rack = RACKS[0]
    workdir = tmp_path_factory.mktemp("clique-daemons")
    async with CliqueKubelet(
        api, cluster.kubeconfig, namespace, workdir, nodes=RUN_FOR_REAL, selector=SELECTOR
    ) as kubelet:

        def expected(entries: dict[str, dict[str, Any]]) -> dict[str, str]:
            return {names.imex_host(e["index"]): e["ipAddress"] for e in entries.values()}

        async def following() -> dict[str, DaemonRun] | None:
            running = kubelet.running()
            if sorted(running) != sorted(RUN_FOR_REAL):
                return None
            entries = await peers(api, namespace, rack)
            if any(imex_peers(run) != expected(entries) for run in running.values()):
                return None
            return running

        running = await eventually(following, timeout=WAIT, interval=0.5, what=f"daemons of {RUN_FOR_REAL}")
        for run in running.values():
            assert run.env["IMEX_MODE"] == "clique"
            assert "COMPUTE_DOMAIN_UUID" not in run.env
            assert len(hosts_in_file(run.hosts_file.read_text())) == len(nodes_of[rack])
        print(
            f"\nclique daemon RSS with {len(nodes_of[rack])} peers: {rss_kib(running[RUN_FOR_REAL[0]])} KiB"
        )

        # A killed daemon (its pod deleted) is back, Ready and in its old slot, and IMEX restarted.
        victim = RUN_FOR_REAL[0]
        old_pod, old_index = running[victim].pod, layout[rack][victim]["index"]
        started = time.monotonic()
        await client.CoreV1Api(api).delete_namespaced_pod(old_pod["metadata"]["name"], namespace)

        async def pod_back() -> dict[str, Any] | None:
            pod = (await daemon_pods(api, namespace)).get(victim)
            return pod if pod is not None and pod["metadata"]["uid"] != old_pod["metadata"]["uid"] else None

        new_pod = await eventually(pod_back, timeout=WAIT, interval=0.2, what=f"a new daemon pod on {victim}")
        pod_ready = time.monotonic() - started

        async def rejoined() -> DaemonRun | None:
            entry = (await peers(api, namespace, rack)).get(victim)
            run = kubelet.running().get(victim)
            if entry is None or run is None or run.pod_uid != new_pod["metadata"]["uid"]:
                return None
            if entry["ipAddress"] != new_pod["status"]["podIP"] or entry["status"] != "Ready":
                return None
            if imex_peers(run) != expected(await peers(api, namespace, rack)):
                return None
            assert entry["index"] == old_index
            return run

        await eventually(rejoined, timeout=WAIT, interval=0.2, what=f"{victim} back in imex.{rack}")
        serving = time.monotonic() - started
        print(
            f"killed clique daemon on {victim}: new pod Running and Ready after {pod_ready:.1f}s, "
            f"back in its slot with IMEX serving the clique's peers after {serving:.1f}s"
        )
        # The other real daemon reloaded with the new address instead of restarting.
        other = kubelet.running()[RUN_FOR_REAL[1]]
        assert imex_peers(other) == expected(await peers(api, namespace, rack))
        assert len(other.imex_events("start")) == 1


async def test_domain_mode_has_no_clique_daemons(
    api: client.ApiClient,
    cluster: testbed.Testbed,
    operator_ready: str,
    controller: ControllerProcess,
    daemon_rbac: None,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cd = Cluster(api, operator_ready)
    name = unique("domainmode")
    template = f"{name}-channel"
    created = await cd.create_domain(domain_manifest(name, namespace, template, num_nodes=1))
    uid = created["metadata"]["uid"]
    workdir = tmp_path_factory.mktemp("domain-daemon")
    async with DaemonKubelet(api, cluster.kubeconfig, operator_ready, workdir) as kubelet:
        await eventually(lambda: cd.claim_template(namespace, template), timeout=WAIT, what="template")
        pods = await cd.start_workload(namespace, template, [DOMAIN_NODE])
        try:
            run = await eventually(
                lambda: (r := kubelet.running().get(DOMAIN_NODE)) is not None and imex_peers(r) and r,
                timeout=WAIT,
                interval=0.5,
                what="the domain's IMEX daemon started",
            )
            assert run
            print(f"\nper-domain daemon RSS with 1 peer: {rss_kib(run)} KiB")
            # The domain runs on its own daemon; nothing of the clique mode was made.
            assert await cd.daemonset(uid) is not None
            with pytest.raises(ApiException) as missing:
                await client.AppsV1Api(api).read_namespaced_daemon_set(NAME, operator_ready)
            assert missing.value.status == 404
            listing = await client.CustomObjectsApi(api).list_namespaced_custom_object(
                names.GROUP, names.VERSION, operator_ready, names.CLIQUE_PLURAL, label_selector=SELECTOR
            )
            assert listing["items"] == []
            assert [
                c["metadata"]["name"] for c in await cd.labelled(names.CLIQUE_PLURAL, uid, operator_ready)
            ] == [f"{uid}.{RACKS[0]}"]
        finally:
            await cd.stop_workload(namespace, pods)
            await cd.delete_domain(namespace, name, timeout=WAIT)
