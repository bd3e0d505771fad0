"""Every pod of a job receives its IMEX channel, on real kubelets, with the real kubelet plugin.

One private control plane and four real kubelet nodes (GB200 trays of one clique) for the module. No
ResourceSlice double: each node's slice comes from its kubelet plugin (a host process with a token
bound to a plugin pod on that node, so the chart's RBAC and admission policy apply). The IMEX daemon
pods the controller creates are run by each node's runtime double as host processes, from what their
daemon claim's CDI spec gives them; their `check` probe decides when they are Ready. What a
container received is read from the runtime double's records of its CDI resolution.

The tests run in file order and share the nodes; each leaves them as it found them.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed.kubeletbed import NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.pluginprocess import DEVICE_NODES, FABRIC_IMEX_MGMT_MINOR
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from computedomain.daemon.readiness import STATE_FILE_NAME
from computedomain.plugin.events import REASON_WAITING
from fakes.imex.harness import read_events
from support.domains import domain_manifest, workload_pod
from support.examples import create_manifest, delete_namespace, example
from support.namespaces import create_namespace
from support.realnodes import (
    RESOURCE_GROUP,
    RESOURCE_VERSION,
    cdi_spec,
    cdi_specs,
    channel_node,
    container_record,
    events_of,
    node_slices,
    pod_claim_uids,
    require_kubelets,
    wait_event,
    wait_running,
)
from support.testbed import control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TRAYS = nvl72_racks(1, 4, prefix="kl")
CLIQUE = TRAYS[0].clique_id
EXAMPLE_NAMESPACE = "team-a"
WAIT = 120.0


@pytest_asyncio.fixture(scope="module")
async def bed() -> AsyncIterator[KubeletBed]:
    require_kubelets()
    async with (
        control_plane(prefix="kubelet-channels-") as plane,
        kubelet_bed(plane.cluster, plane.api, TRAYS) as running,
    ):
        yield running


@pytest_asyncio.fixture
async def ns(bed: KubeletBed) -> AsyncIterator[str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    await create_namespace(bed.api, name)
    yield name
    await delete_namespace(bed.api, name)


def core(bed: KubeletBed) -> client.CoreV1Api:
    return client.CoreV1Api(bed.api)


async def daemon_pods(bed: KubeletBed, domain_uid: str) -> list[client.V1Pod]:
    listing = await core(bed).list_namespaced_pod(
        NAMESPACE, label_selector=f"{names.DOMAIN_LABEL}={domain_uid}"
    )
    return list(listing.items)


def ready_since(pod: client.V1Pod) -> Any:
    """When the pod last became Ready (None when it is not)."""
    for condition in pod.status.conditions or []:
        if condition.type == "Ready" and condition.status == "True":
            return condition.last_transition_time
    return None


def state_ready_since(bed: KubeletBed, node: str, domain_uid: str) -> datetime.datetime | None:
    """When the domain's IMEX daemon on `node` wrote that it is ready (its state file in the plugin's
    folder of the domain), or None."""
    path = bed.host(node).state / "domains" / domain_uid / STATE_FILE_NAME
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not state.get("ready"):
        return None
    return datetime.datetime.fromtimestamp(float(state["since"]), tz=datetime.UTC)


async def wait_daemon_ready(bed: KubeletBed, domain_uid: str, node: str) -> client.V1Pod:
    async def probe() -> client.V1Pod | None:
        pods = [p for p in await daemon_pods(bed, domain_uid) if p.spec.node_name == node]
        return pods[0] if pods and ready_since(pods[0]) is not None else None

    found: client.V1Pod = await eventually(
        probe, timeout=WAIT, interval=0.5, what=f"IMEX daemon Ready on {node}"
    )
    return found


def imex_dir(record: dict[str, Any]) -> Path:
    """The host folder the daemon container got as its IMEX config dir (a CDI mount)."""
    (mount,) = [m for m in record["cdi"]["mounts"] if m["containerPath"] == "/imexd"]
    return Path(mount["hostPath"])


async def create_domain(bed: KubeletBed, namespace: str, name: str, **channel: Any) -> str:
    body = await client.CustomObjectsApi(bed.api).create_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        namespace,
        names.DOMAIN_PLURAL,
        domain_manifest(name, namespace, **channel),
    )
    return str(body["metadata"]["uid"])


async def channel_pod(bed: KubeletBed, namespace: str, name: str, template: str, node: str) -> None:
    await core(bed).create_namespaced_pod(namespace, cast(Any, workload_pod(name, namespace, template, node)))


async def wait_gone(paths: list[Path], what: str) -> None:
    async def gone() -> bool:
        return not any(path.exists() for path in paths)

    await eventually(gone, timeout=WAIT, interval=0.5, what=what)


async def test_example_01_every_container_receives_channel_0(bed: KubeletBed) -> None:
    """examples/01-single-rack unchanged: each Job container receives exactly channel 0 of its claim,
    after waiting (with the plugin's Event) for its node's IMEX daemon; deleting the pods unprepares
    their claims and removes their CDI specs."""
    documents = example("01-single-rack")
    await delete_namespace(bed.api, EXAMPLE_NAMESPACE)
    for document in documents:
        await create_manifest(bed.api, document)
    (domain,) = [d for d in documents if d["kind"] == names.DOMAIN_KIND]
    (job,) = [d for d in documents if d["kind"] == "Job"]
    selector = f"job-name={job['metadata']['name']}"

    async def running() -> list[client.V1Pod] | None:
        pods = (await core(bed).list_namespaced_pod(EXAMPLE_NAMESPACE, label_selector=selector)).items
        return pods if len(pods) == 4 and all(p.status.phase == "Running" for p in pods) else None

    pods: list[client.V1Pod] = await eventually(
        running, timeout=WAIT, interval=0.5, what="4 Job pods Running"
    )
    assert sorted(p.spec.node_name for p in pods) == sorted(t.name for t in TRAYS)
    live = await client.CustomObjectsApi(bed.api).get_namespaced_custom_object(
        names.GROUP, names.VERSION, EXAMPLE_NAMESPACE, names.DOMAIN_PLURAL, domain["metadata"]["name"]
    )
    domain_uid = live["metadata"]["uid"]

    channel_specs: list[Path] = []
    waited = 0
    for pod in pods:
        node = bed.node(pod.spec.node_name)
        (uid,) = await pod_claim_uids(bed.api, pod)
        record = container_record(node, EXAMPLE_NAMESPACE, pod.metadata.name, "trainer")
        assert record["cdiDevices"] == [f"k8s.compute-domain.nvidia.com/claim={uid}-channel-0"]
        assert record["cdi"]["deviceNodes"] == [channel_node(0)]
        assert cdi_spec(node, uid).exists()
        channel_specs.append(cdi_spec(node, uid))
        # The container was created only once the node's IMEX daemon was ready: its state file (which
        # the plugin's gate reads) or its pod's Ready condition, whichever came first; the plugin said
        # why the pod waited until then.
        daemon = await wait_daemon_ready(bed, domain_uid, node.name)
        started = pod.status.container_statuses[0].state.running.started_at
        ready = min(t for t in (ready_since(daemon), state_ready_since(bed, node.name, domain_uid)) if t)
        assert started >= ready.replace(microsecond=0), (pod.metadata.name, started, ready)
        events = [
            e
            for e in await events_of(bed.api, EXAMPLE_NAMESPACE, pod.metadata.name)
            if e.reason == REASON_WAITING
        ]
        if events:
            waited += 1
            assert "IMEX daemon" in events[0].message, events[0].message
    assert waited >= 1, "no Job pod waited for its node's IMEX daemon"

    # Each daemon took domain, clique, config folder, devices and IMEX binaries from its claim's CDI
    # edits, and its IMEX (the fake) runs with all four peers.
    daemons = await daemon_pods(bed, domain_uid)
    assert len(daemons) == 4
    for daemon in daemons:
        node = bed.node(daemon.spec.node_name)
        record = container_record(node, NAMESPACE, daemon.metadata.name, names.DAEMON_CONTAINER)
        # The DaemonSet sets the domain too; CDI adds the clique and the config folder.
        assert f"COMPUTE_DOMAIN_UUID={domain_uid}" in record["cdi"]["env"]
        assert {f"CLIQUE_ID={CLIQUE}", "IMEX_CONFIG_DIR=/imexd"} <= set(record["cdi"]["addedEnv"])
        # The fabric-imex-mgmt capability with the driver's root-only mode, and the management set:
        # every device node of the driver root (GPUs, control, UVM, channel 0), each once.
        devices = record["cdi"]["deviceNodes"]
        nodes = {d["path"]: (d["major"], d["minor"], d["fileMode"]) for d in devices}
        assert len(nodes) == len(devices), devices
        capability = f"/dev/nvidia-caps/nvidia-cap{FABRIC_IMEX_MGMT_MINOR}"
        assert nodes[capability] == (235, FABRIC_IMEX_MGMT_MINOR, "0400")
        assert nodes["/dev/nvidiactl"] == (195, 255, "0666")
        assert nodes == {
            f"/{path}": (major, minor, f"{mode:04o}") for path, (major, minor, mode) in DEVICE_NODES.items()
        }
        assert {"/usr/bin/nvidia-imex", "/usr/bin/nvidia-imex-ctl"} <= {
            m["containerPath"] for m in record["cdi"]["mounts"]
        }
        folder = imex_dir(record)

        async def four_peers(folder: Path = folder) -> bool:
            events = await asyncio.to_thread(read_events, folder)
            return bool(events) and len(events[-1].get("hosts", {})) == 4

        await eventually(four_peers, timeout=WAIT, interval=0.5, what=f"IMEX on {node.name} with 4 peers")

    # Deleting the pods unprepares their claims: the CDI specs go.
    await client.BatchV1Api(bed.api).delete_namespaced_job(
        job["metadata"]["name"], EXAMPLE_NAMESPACE, propagation_policy="Background"
    )
    await wait_gone(channel_specs, "the Job's channel CDI specs removed")

    # A spec goes first, then the checkpoint entry, then the count: wait for the count too.
    async def unprepared() -> bool:
        counts = [p.metric("computedomain_plugin_unprepares_total") for p in bed.plugins.values()]
        return sum(counts) >= 4

    await eventually(unprepared, timeout=WAIT, interval=0.5, what="four claims counted as unprepared")
    # And the domain's end takes its daemons' claims with it: no spec is left on any node.
    await delete_namespace(bed.api, EXAMPLE_NAMESPACE)
    await wait_gone([s for n in bed.nodes for s in cdi_specs(n)], "every CDI spec removed")


async def test_plugin_killed_mid_prepare_and_restarted_loses_nothing(bed: KubeletBed, ns: str) -> None:
    node = bed.nodes[0]
    plugin = bed.plugins[node.name]
    domain_uid = await create_domain(bed, ns, "restart")
    await channel_pod(bed, ns, "worker", "restart-channel", node.name)
    # The plugin is inside the prepare call: it posted that it waits for the daemon.
    await wait_event(bed.api, ns, "worker", REASON_WAITING, timeout=WAIT)
    await asyncio.to_thread(plugin.kill)
    await bed.start_plugin(node.name)

    pod = await wait_running(bed.api, ns, "worker", timeout=WAIT)
    (uid,) = await pod_claim_uids(bed.api, pod)
    record = container_record(node, ns, "worker", "trainer")
    assert record["cdi"]["deviceNodes"] == [channel_node(0)]
    daemon = await wait_daemon_ready(bed, domain_uid, node.name)
    (daemon_uid,) = await pod_claim_uids(bed.api, daemon)
    checkpoint = await asyncio.to_thread((bed.host(node.name).state / "checkpoint.json").read_text)
    assert uid in checkpoint
    assert daemon_uid in checkpoint
    assert cdi_spec(node, uid).exists()
    assert cdi_spec(node, daemon_uid).exists()

    # The restarted plugin unprepares what its predecessor prepared.
    await core(bed).delete_namespaced_pod("worker", ns)
    await wait_gone([cdi_spec(node, uid)], "the worker's CDI spec removed by the restarted plugin")


async def test_allocation_mode_all_gives_2048_device_nodes(bed: KubeletBed, ns: str) -> None:
    node = bed.nodes[1]
    await create_domain(bed, ns, "wide", allocationMode="All")
    await channel_pod(bed, ns, "worker", "wide-channel", node.name)
    await wait_running(bed.api, ns, "worker", timeout=WAIT)
    record = container_record(node, ns, "worker", "trainer")
    assert record["cdi"]["deviceNodes"] == [channel_node(n) for n in range(2048)]


async def test_kubelet_restart_reregisters_the_plugin_and_the_slice_comes_back(bed: KubeletBed) -> None:
    node = bed.nodes[2]
    plugin = bed.plugins[node.name]
    before = await node_slices(bed.api, node.name)
    assert len(before) == 1
    registrations = plugin.log.read_text().count("registered with the kubelet")
    await bed.restart_kubelet(node.name, TRAYS)

    async def republished() -> dict[str, str] | None:
        now = await node_slices(bed.api, node.name)
        return now if now and set(now.values()).isdisjoint(before.values()) else None

    # The kubelet deletes its node's slices when it starts; the plugin publishes its slice again.
    await eventually(republished, timeout=WAIT, interval=0.5, what=f"a new slice of {node.name}")

    async def registered_again() -> bool:
        return plugin.log.read_text().count("registered with the kubelet") > registrations

    await eventually(registered_again, timeout=WAIT, interval=0.5, what="the plugin registered again")
    assert plugin.metric("computedomain_plugin_registered") == 1


async def test_bad_channel_config_gets_a_clear_error_and_the_plugin_stays_up(
    bed: KubeletBed, ns: str
) -> None:
    node = bed.nodes[2]  # the node whose kubelet restarted: the plugin answers it
    missing = str(uuid.uuid4())
    parameters = {"apiVersion": names.API_VERSION, "kind": names.CHANNEL_CONFIG_KIND, "domainID": missing}
    claim = {
        "apiVersion": f"{RESOURCE_GROUP}/{RESOURCE_VERSION}",
        "kind": "ResourceClaim",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {
            "devices": {
                "requests": [{"name": "channel", "exactly": {"deviceClassName": names.CHANNEL_DEVICE_CLASS}}],
                "config": [
                    {"requests": ["channel"], "opaque": {"driver": names.DRIVER, "parameters": parameters}}
                ],
            }
        },
    }
    await client.CustomObjectsApi(bed.api).create_namespaced_custom_object(
        RESOURCE_GROUP, RESOURCE_VERSION, ns, "resourceclaims", claim
    )
    pod = workload_pod("worker", ns, "unused", node.name)
    pod["spec"]["resourceClaims"] = [{"name": "imex-channel", "resourceClaimName": "bad"}]
    await core(bed).create_namespaced_pod(ns, cast(Any, pod))

    event = await wait_event(bed.api, ns, "worker", "FailedPrepareDynamicResources", timeout=WAIT)
    assert f"names ComputeDomain UID {missing}, and no ComputeDomain has that UID" in event.message, (
        event.message
    )
    assert node.records(ns, "worker") == []
    plugin = bed.plugins[node.name]
    assert plugin.pid is not None
    assert plugin.get("/readyz")[0] == 200
    assert plugin.metric('computedomain_plugin_prepares_total{result="error"}') >= 1
