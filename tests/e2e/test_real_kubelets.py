"""Real kubelet nodes in the test bed: two kubelets (v1.36, built from the pinned module) beside a
private control plane, each with its own container-runtime double, become Ready nodes that run
pods, report loopback pod IPs, run mapped containers as host processes and answer exec probes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.cluster import LocalCluster
from cdtestbed.kubelet_config import KUBELET_SYSCTLS
from cdtestbed.kubelets import KubeletNodes, KubeletOptions, kubelet_nodes
from cdtestbed.nodes import wait_nodes_ready
from cdtestbed.tools import repo_root
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from support.namespaces import create_namespace
from support.realnodes import require_kubelets
from support.testbed import local_cluster
from support.waiting import eventually

NODES = nvl72_racks(1, 2, prefix="real")
WAIT = 90.0
# Skips where kubelets cannot run, and fails instead where CD_REQUIRE_KUBELETS=1 (as in CI).
needs_kubelet = pytest.mark.usefixtures("kubelets_required")


@pytest.fixture
def kubelets_required() -> None:
    require_kubelets()


def host_state() -> dict[str, str]:
    """What a kubelet must not change on the host: the entries of "/" and the sysctls it rewrites."""
    state = {"/": " ".join(sorted(os.listdir("/")))}
    for sysctl in KUBELET_SYSCTLS:
        path = Path("/proc/sys") / sysctl
        if path.exists():
            state[sysctl] = path.read_text().strip()
    return state


@pytest.fixture(scope="module")
def host_before() -> dict[str, str]:
    return host_state()


@pytest.fixture(scope="module")
def kubelet_bed(host_before: dict[str, str]) -> Iterator[tuple[LocalCluster, KubeletNodes]]:
    require_kubelets()
    with local_cluster(prefix="kubelets-") as cluster:
        options = KubeletOptions(commands={"/bin/sh": ["/bin/sh"]})
        with kubelet_nodes(cluster, NODES, options) as nodes:
            yield cluster, nodes


@pytest_asyncio.fixture(scope="module")
async def kube(kubelet_bed: tuple[LocalCluster, KubeletNodes]) -> AsyncIterator[client.ApiClient]:
    cluster, _ = kubelet_bed
    async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
        await wait_nodes_ready(api, [n.name for n in NODES], timeout=WAIT)
        yield api


@pytest_asyncio.fixture
async def ns(kube: client.ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(kube)
    name = f"k-{uuid.uuid4().hex[:8]}"
    await create_namespace(kube, name)
    yield name
    await core.delete_namespace(name)


def pod_manifest(name: str, node: str, container: dict[str, Any], restart: str = "Always") -> dict[str, Any]:
    """A one-container pod pinned by node selector (so the scheduler still places it)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "registry.example/tool:1", **container}],
        },
    }


async def pod_where(kube: client.ApiClient, ns: str, name: str, check: Any, what: str) -> client.V1Pod:
    core = client.CoreV1Api(kube)

    async def probe() -> client.V1Pod | None:
        pod = await core.read_namespaced_pod(name, ns)
        return pod if check(pod) else None

    result: client.V1Pod = await eventually(probe, timeout=WAIT, interval=0.5, what=what)
    return result


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_kubelets_register_labelled_ready_nodes(kube: client.ApiClient) -> None:
    listing = await client.CoreV1Api(kube).list_node()
    nodes = {n.metadata.name: n for n in listing.items}
    for tray in NODES:
        node = nodes[tray.name]
        assert node.metadata.labels[names.GPU_CLIQUE_LABEL] == tray.clique_id
        assert node.metadata.labels[names.GPU_PRODUCT_LABEL] == "NVIDIA-GB200"
        assert node.status.node_info.kubelet_version.startswith("v1.36.")
        assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_plain_pod_runs_with_a_loopback_ip(
    kube: client.ApiClient, kubelet_bed: tuple[LocalCluster, KubeletNodes], ns: str
) -> None:
    _, nodes = kubelet_bed
    node = nodes.running[0]
    manifest = pod_manifest("plain", node.name, {"command": ["sleep", "3600"]})
    await client.CoreV1Api(kube).create_namespaced_pod(ns, cast(Any, manifest))
    pod = await pod_where(
        kube, ns, "plain", lambda p: p.status.phase == "Running" and p.status.pod_ip, "Running"
    )
    assert pod.spec.node_name == node.name
    ips = [ipaddress.ip_address(ip.ip) for ip in pod.status.pod_ips]
    assert ips
    assert all(ip in ipaddress.ip_network(node.pod_cidr) for ip in ips), ips
    [record] = node.records(ns, "plain")
    assert record["command"] == ["sleep", "3600"]
    assert record["cdiDevices"] == []
    assert "hostCommand" not in record


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_mapped_container_is_a_host_process_and_its_probe_gates_readiness(
    kube: client.ApiClient, kubelet_bed: tuple[LocalCluster, KubeletNodes], ns: str, tmp_path: Path
) -> None:
    _, nodes = kubelet_bed
    node = nodes.running[1]
    marker, pidfile = tmp_path / "ready", tmp_path / "pid"
    # The kubelet expands $(VAR) in commands and turns $$ into $: the shell sees `echo $$`.
    script = f'echo "hello $GREETING"; echo $$ > {pidfile}; trap "exit 0" TERM; while :; do sleep 0.2; done'
    spec_script = script.replace("$$", "$$$$")
    container = {
        "command": ["/bin/sh", "-c", spec_script],
        "env": [{"name": "GREETING", "value": "world"}],
        "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", f"test -f {marker}"]}, "periodSeconds": 1},
    }
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(ns, cast(Any, pod_manifest("probed", node.name, container)))

    async def probe_failed() -> bool:
        events = await core.list_namespaced_event(ns, field_selector="involvedObject.name=probed")
        return any(e.reason == "Unhealthy" and "Readiness probe failed" in e.message for e in events.items)

    await eventually(probe_failed, timeout=WAIT, what="a failed readiness probe")
    pod = await core.read_namespaced_pod("probed", ns)
    assert pod.status.container_statuses[0].state.running is not None
    assert not ready(pod)
    await asyncio.to_thread(marker.touch)
    await pod_where(kube, ns, "probed", ready, "Ready once the probe's file exists")

    [record] = node.records(ns, "probed")
    assert record["hostCommand"] == ["/bin/sh", "-c", script]
    assert "hello world" in await asyncio.to_thread(Path(record["logFile"]).read_text)
    pid = int(await asyncio.to_thread(pidfile.read_text))
    await core.delete_namespaced_pod("probed", ns)

    async def process_gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(process_gone, timeout=WAIT, what="the host process stopped with its pod")


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_container_state_follows_its_process_exit_code(
    kube: client.ApiClient, kubelet_bed: tuple[LocalCluster, KubeletNodes], ns: str
) -> None:
    node = kubelet_bed[1].running[0]
    manifest = pod_manifest("exits", node.name, {"command": ["/bin/sh", "-c", "exit 3"]}, restart="Never")
    await client.CoreV1Api(kube).create_namespaced_pod(ns, cast(Any, manifest))
    pod = await pod_where(kube, ns, "exits", lambda p: p.status.phase == "Failed", "phase Failed")
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_restarted_kubelet_keeps_its_running_pod(
    kube: client.ApiClient, kubelet_bed: tuple[LocalCluster, KubeletNodes], ns: str
) -> None:
    """The runtime outlives a kubelet restart, as containerd does: the pod keeps its container and IP."""
    node = kubelet_bed[1].running[1]
    manifest = pod_manifest("steady", node.name, {"command": ["sleep", "3600"]})
    await client.CoreV1Api(kube).create_namespaced_pod(ns, cast(Any, manifest))
    before = await pod_where(kube, ns, "steady", ready, "Ready")
    restarted = datetime.datetime.now(datetime.UTC)
    await asyncio.to_thread(kubelet_bed[1].restart_kubelet, node.name)
    leases = client.CoordinationV1Api(kube)

    async def renewed_by_new_kubelet() -> bool:
        try:
            lease = await leases.read_namespaced_lease(node.name, "kube-node-lease")
        except ApiException as error:
            # A kubelet coming up may find its lease gone and create it anew.
            if error.status == 404:
                return False
            raise
        return bool(lease.spec.renew_time > restarted)

    await eventually(renewed_by_new_kubelet, timeout=WAIT, what="the restarted kubelet renewing its lease")
    await wait_nodes_ready(kube, [node.name], timeout=WAIT)
    after = await pod_where(kube, ns, "steady", ready, "Ready after the kubelet restart")
    assert after.status.pod_ip == before.status.pod_ip
    assert after.status.container_statuses[0].restart_count == 0
    assert len(node.records(ns, "steady")) == 1


@needs_kubelet
@pytest.mark.cluster
@pytest.mark.e2e
async def test_host_is_untouched(
    kube: client.ApiClient, kubelet_bed: tuple[LocalCluster, KubeletNodes], host_before: dict[str, str]
) -> None:
    """After pods came and went (the kubelet removes their containers' logs), the host's root and
    sysctls are as they were, and the kubelets' working directories are still empty."""
    _, nodes = kubelet_bed
    core = client.CoreV1Api(kube)

    async def containers_removed() -> bool:
        pods = await core.list_pod_for_all_namespaces(field_selector="spec.nodeName=" + nodes.running[0].name)
        return not pods.items

    await eventually(containers_removed, timeout=WAIT, what="the first node's pods gone")
    assert await asyncio.to_thread(host_state) == host_before
    for node in nodes.running:
        assert not list((node.short / "cwd").iterdir())


@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain")
def test_runtime_double_resolves_cdi_devices() -> None:
    """The runtime double's own tests: CDI resolution against a spec file, the record it writes, the
    CDI library's error for an unknown device, host processes, exec probes and loopback pod IPs."""
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOFLAGS": "-trimpath -buildvcs=false -modcacherw",
    }
    result = subprocess.run(
        ["go", "test", "-count=1", "./..."],
        cwd=repo_root() / "tools" / "cri-double",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
