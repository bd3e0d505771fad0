"""Clique IMEX daemons killed on real kubelet nodes: how long each takes to be back and Ready.

One private control plane and two real kubelet nodes (GB200 trays of one clique) in clique mode, as in
tests/e2e/test_real_kubelet_clique.py: the controller's DaemonSet runs one clique daemon per node, and
each node's runtime double runs its container as host processes (the daemon wrapper and the fake
`nvidia-imex` it starts). A ComputeDomain's workload pod, holding the domain's channel, runs on each
node throughout.

Each round strikes one node's daemon twice. First its container dies: the wrapper's process group is
SIGKILLed and the kubelet restarts the container. Then its pod is deleted and the DaemonSet makes a new
one. The figures (kill or delete -> Ready again) are printed; the bound asserted on them is generous,
there to catch a daemon that never comes back rather than a slow one.

Rounds alternate between the nodes, and each kill strikes a pod whose container was never killed: the
kubelet's crash-loop back-off, which grows with every restart of a container, stays out of the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.kubeletbed import NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.kubelets import KubeletNode
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from fakes.imex.harness import read_events
from support.chaos import report
from support.domains import domain_manifest, workload_pod
from support.examples import delete_namespace
from support.namespaces import create_namespace
from support.realnodes import container_record, require_kubelets, wait_running
from support.testbed import control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]

TRAYS = nvl72_racks(1, 2, prefix="kk")
NODES = [t.name for t in TRAYS]
CLIQUE = TRAYS[0].clique_id
ROUNDS = 3
# Generous: a daemon back after this long did not come back (the figures are seconds).
BOUND = 120.0
# Fine enough for the figures, light enough for a small machine.
POLL = 0.1


@pytest_asyncio.fixture(scope="module")
async def bed() -> AsyncIterator[KubeletBed]:
    require_kubelets()
    async with (
        control_plane(prefix="chaos-clique-kills-") as plane,
        kubelet_bed(plane.cluster, plane.api, TRAYS, imex_mode=names.IMEX_MODE_CLIQUE) as running,
    ):
        yield running


def core(bed: KubeletBed) -> client.CoreV1Api:
    return client.CoreV1Api(bed.api)


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def restarts(pod: client.V1Pod) -> int:
    return sum(s.restart_count for s in pod.status.container_statuses or [])


async def daemon_pods(bed: KubeletBed) -> dict[str, client.V1Pod]:
    """node -> its clique daemon pod (not being deleted)."""
    listing = await core(bed).list_namespaced_pod(NAMESPACE, label_selector=names.CLIQUE_DAEMONS_SELECTOR)
    return {
        p.spec.node_name: p for p in listing.items if p.spec.node_name and not p.metadata.deletion_timestamp
    }


async def clique_object(bed: KubeletBed, name: str) -> dict[str, Any]:
    body: dict[str, Any] = await client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL, name
    )
    return body


async def peer_entries(bed: KubeletBed) -> dict[str, dict[str, Any]]:
    """node -> its daemon's entry in the clique's peer object `imex.<clique>`."""
    body = await clique_object(bed, names.clique_peers_name(CLIQUE))
    return {d["nodeName"]: d for d in body.get("daemons") or []}


def container_id(pod: client.V1Pod) -> str:
    """The runtime's ID of the pod's daemon container now (without the `<runtime>://` prefix)."""
    (status,) = [s for s in pod.status.container_statuses or [] if s.name == names.DAEMON_CONTAINER]
    return str(status.container_id).split("://", 1)[-1]


def wrapper_pid(node: KubeletNode, pod: client.V1Pod) -> int | None:
    """The host process of the pod's daemon container: the runtime double's child that carries the
    container's record and runs `... run` (its exec probes carry the record too, but run `check` or
    a shell)."""
    record = f"CRI_DOUBLE_RECORD={node.runtime_state / 'containers' / container_id(pod)}.json"
    runtime = node.pid("cri-double")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # The command (field 2) may hold spaces: the fields after its closing parenthesis.
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != runtime:
                continue
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if record.encode() in environ and b"run" in argv:
            return int(entry)
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def imex_folder(node: KubeletNode, pod: client.V1Pod) -> Path:
    """The host folder mounted at `/imexd` in the pod's daemon container: IMEX's config, the fake's
    records and the daemon's readiness state."""
    record = container_record(node, NAMESPACE, pod.metadata.name, names.DAEMON_CONTAINER)
    (mount,) = [m for m in record["cdi"]["mounts"] if m["containerPath"] == "/imexd"]
    return Path(mount["hostPath"])


def imex_hosts(node: KubeletNode, pod: client.V1Pod) -> dict[str, str]:
    """IMEX peer name -> IP as the node's fake `nvidia-imex` last read them."""
    try:
        events = read_events(imex_folder(node, pod))
    except ValueError:  # a record being written
        return {}
    hosts: dict[str, str] = events[-1].get("hosts", {}) if events else {}
    return hosts


def serving_since(folder: Path, after: float) -> tuple[float, float] | None:
    """When (epoch seconds) an IMEX started after `after` that the daemon reports ready with all its
    peers, and since when the daemon reports it ready; None while there is none."""
    try:
        state = json.loads((folder / names.IMEX_STATE_FILE).read_text())
        events = read_events(folder)
    except (OSError, ValueError):  # between the daemon's writes, or a record being written
        return None
    starts = [e for e in events if e["event"] == "start" and e["time"] > after and e["pid"] == state["pid"]]
    if not starts or state["ready"] is not True or len(events[-1].get("hosts", {})) != len(NODES):
        return None
    return float(starts[-1]["time"]), float(state["since"])


async def wait_all_ready(bed: KubeletBed) -> dict[str, client.V1Pod]:
    async def probe() -> dict[str, client.V1Pod] | None:
        pods = await daemon_pods(bed)
        return pods if set(pods) == set(NODES) and all(ready(p) for p in pods.values()) else None

    found: dict[str, client.V1Pod] = await eventually(
        probe, timeout=BOUND, interval=0.5, what="a Ready clique daemon on every node"
    )
    return found


class Workload:
    """A ComputeDomain with a workload pod on each node holding its channel, in a namespace of its own."""

    def __init__(self, bed: KubeletBed) -> None:
        self.bed = bed
        self.namespace = f"kills-{uuid.uuid4().hex[:6]}"
        self.name = "held"
        self.uid = ""
        self.pods: dict[str, str] = {}  # pod name -> its UID

    async def start(self) -> None:
        await create_namespace(self.bed.api, self.namespace)
        body = await client.CustomObjectsApi(self.bed.api).create_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            self.namespace,
            names.DOMAIN_PLURAL,
            domain_manifest(self.name, self.namespace),
        )
        self.uid = str(body["metadata"]["uid"])
        for node in NODES:
            manifest = workload_pod(f"worker-{node}", self.namespace, f"{self.name}-channel", node)
            await core(self.bed).create_namespaced_pod(self.namespace, cast(Any, manifest))
        for node in NODES:
            pod = await wait_running(self.bed.api, self.namespace, f"worker-{node}", timeout=BOUND)
            self.pods[pod.metadata.name] = pod.metadata.uid

    async def record(self) -> dict[str, Any]:
        """Its ComputeDomainClique in the clique, once it holds a channel there."""

        async def holding() -> dict[str, Any] | None:
            try:
                body = await clique_object(self.bed, names.clique_name(self.uid, CLIQUE))
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return body if isinstance(body.get("channel"), int) else None

        found: dict[str, Any] = await eventually(
            holding, timeout=BOUND, interval=0.5, what=f"a channel for {self.name}"
        )
        return found

    async def assert_untouched(self, before: dict[str, Any]) -> None:
        """Its pods are the same ones, running without a restart, and its clique object (its channel)
        is exactly as it was."""
        for name, uid in self.pods.items():
            pod = await core(self.bed).read_namespaced_pod(name, self.namespace)
            assert pod.metadata.uid == uid, f"{name} was replaced"
            assert pod.status.phase == "Running", f"{name}: {pod.status.phase}"
            assert restarts(pod) == 0, f"{name} restarted"
        after = await clique_object(self.bed, names.clique_name(self.uid, CLIQUE))
        assert after["channel"] == before["channel"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
            f"the domain's clique object changed: {before} -> {after}"
        )


class Milestones:
    """When (seconds after a strike) each step of a recovery was first seen, polled together so that
    no step's figure waits on another's."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.seen: dict[str, float] = {}

    def mark(self, step: str, reached: bool = True) -> None:
        if reached and step not in self.seen:
            self.seen[step] = time.monotonic() - self.began

    async def wait(self, probe: Callable[[], Awaitable[None]], steps: Sequence[str], what: str) -> None:
        """Run `probe` (which marks steps) until every one of `steps` was seen, within the bound."""

        async def done() -> bool:
            await probe()
            return all(step in self.seen for step in steps)

        try:
            await eventually(done, timeout=BOUND, interval=POLL, what=what)
        except AssertionError as error:
            missing = [step for step in steps if step not in self.seen]
            raise AssertionError(f"{error}; seen {self.seen}, never {missing}") from None


KILL_STEPS = ("running", "ready", "imex_ready")
DELETE_STEPS = ("created", "peer_imex", "listed", "ready")


async def kill_daemon(bed: KubeletBed, node: str) -> dict[str, float]:
    """SIGKILL the node's daemon container; seconds until its container runs again (`running`), its
    pod is Ready again (`ready`), and its new IMEX is started (`imex_started`, by the fake's clock)
    and reported ready with both peers (`imex_ready`, by the daemon's)."""
    pod = (await daemon_pods(bed))[node]
    assert ready(pod), f"{pod.metadata.name} not Ready before the kill"
    assert restarts(pod) == 0, "a daemon container killed before: its restart would wait out a back-off"
    host = bed.node(node)
    folder = imex_folder(host, pod)
    pid = await asyncio.to_thread(wrapper_pid, host, pod)
    assert pid is not None, f"no host process for {pod.metadata.name} on {node}"
    steps, killed_at = Milestones(), time.time()
    # The whole process group, IMEX with the wrapper: a container's processes end with its first one.
    os.killpg(pid, signal.SIGKILL)
    serving: list[tuple[float, float]] = []

    async def probe() -> None:
        now = await core(bed).read_namespaced_pod(pod.metadata.name, NAMESPACE)
        assert now.metadata.uid == pod.metadata.uid, "the pod was replaced instead of its container restarted"
        steps.mark("running", restarts(now) > 0)
        steps.mark("ready", restarts(now) > 0 and ready(now))
        if not serving:
            serving[:] = [s for s in [serving_since(folder, killed_at)] if s is not None]
        steps.mark("imex_ready", bool(serving))

    await steps.wait(probe, KILL_STEPS, f"{pod.metadata.name} back after a kill")
    now = await core(bed).read_namespaced_pod(pod.metadata.name, NAMESPACE)
    assert restarts(now) == 1
    assert not alive(pid), f"the killed wrapper {pid} still runs"
    again = await asyncio.to_thread(wrapper_pid, host, now)
    assert again is not None, f"no wrapper process for the restarted {pod.metadata.name}"
    assert again != pid
    # The daemon's own clocks, more exact than the polling (which only sees its state file).
    started, since = serving[0]
    seen = {**steps.seen, "imex_started": started - killed_at, "imex_ready": since - killed_at}
    return {step: seen[step] for step in ("running", "imex_started", "imex_ready", "ready")}


async def delete_daemon(bed: KubeletBed, node: str) -> dict[str, float]:
    """Delete the node's daemon pod; seconds until the new pod exists (`created`), is Ready (`ready`),
    is listed Ready at its address in the peer object (`listed`), and the other node's IMEX has that
    address (`peer_imex`)."""
    old = (await daemon_pods(bed))[node]
    index = (await peer_entries(bed))[node]["index"]
    (other,) = [n for n in NODES if n != node]
    peer, peer_pod = bed.node(other), (await daemon_pods(bed))[other]
    steps = Milestones()
    await core(bed).delete_namespaced_pod(old.metadata.name, NAMESPACE)

    async def probe() -> None:
        new = (await daemon_pods(bed)).get(node)
        if new is None or new.metadata.uid == old.metadata.uid:
            return
        steps.mark("created")
        steps.mark("ready", ready(new))
        address = new.status.pod_ip
        if not address:
            return
        entry = (await peer_entries(bed)).get(node, {})
        steps.mark("listed", entry.get("ipAddress") == address and entry.get("status") == "Ready")
        hosts = await asyncio.to_thread(imex_hosts, peer, peer_pod)
        steps.mark("peer_imex", hosts.get(names.imex_host(index)) == address)

    await steps.wait(probe, DELETE_STEPS, f"a new daemon on {node} after its pod's deletion")
    entries = await peer_entries(bed)
    assert entries[node]["index"] == index, f"{node} moved from slot {index}: {entries[node]}"
    assert other in entries, f"{other} left imex.{CLIQUE}: {entries}"
    return {step: steps.seen[step] for step in DELETE_STEPS}


def figures(runs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """p50, max and each run's seconds of every step."""
    shown: dict[str, Any] = {"rounds": len(runs)}
    for step in runs[0]:
        values = [run[step] for run in runs]
        shown[f"{step}_p50_s"] = statistics.median(values)
        shown[f"{step}_max_s"] = max(values)
        shown[f"{step}_each_s"] = "/".join(f"{v:.1f}" for v in values)
    return shown


async def test_killed_and_deleted_clique_daemons_are_back_and_ready(
    bed: KubeletBed, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three rounds, alternating nodes. A SIGKILLed daemon container is restarted in its pod, Ready
    again and serving with a new IMEX, while the domain's workload pods keep running and the domain
    keeps its channel (its clique object unchanged). A deleted daemon pod is replaced by a Ready one
    that keeps its slot in `imex.<clique>`, and the other node's IMEX has it as a peer at its new
    address. Each comes back within the bound; the figures are printed."""
    await wait_all_ready(bed)
    workload = Workload(bed)
    await workload.start()
    kills: list[dict[str, float]] = []
    deletes: list[dict[str, float]] = []
    try:
        held = await workload.record()
        for round_ in range(ROUNDS):
            node = NODES[round_ % len(NODES)]
            kills.append(await kill_daemon(bed, node))
            await wait_all_ready(bed)
            await workload.assert_untouched(held)
            deletes.append(await delete_daemon(bed, node))
            await wait_all_ready(bed)
            await workload.assert_untouched(held)
    finally:
        await delete_namespace(bed.api, workload.namespace)

    # Straight to the terminal: the captured output of a passing test is not shown.
    with capsys.disabled():
        report("clique-daemon-sigkill", **figures(kills))
        report("clique-daemon-pod-deleted", **figures(deletes))
