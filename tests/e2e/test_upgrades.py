"""Upgrades and rollbacks of the operator with ComputeDomains running, on real kubelets with the real
kubelet plugin, in each IMEX mode.

Per mode, one private control plane and two real kubelet nodes (GB200 trays of one clique), set up as
by `helm install --set image.repository=... --set imex.mode=<mode>`, and two domains whose pods hold
their IMEX channels: in clique mode each domain has a pod on both nodes (and a channel of its own), in
domain mode each has one node (there a node serves one domain at a time).

The bed runs the chart's workloads as processes (the controller's Deployment, the plugin's
DaemonSet), so `helm upgrade` itself cannot run here: an upgrade is done as Helm and the workload
controllers would do it. The chart is rendered again with the new values and applied over the old
rendering; the controller is replaced as its Deployment's rollout replaces it (the old process stops,
a new one starts with the new rendering's daemon image, `IMAGE_NAME`); the plugins are replaced one
node at a time as their DaemonSet's rolling update (`maxUnavailable: 1`) replaces them: a new pod and
process on the same node, with the same host folders. A rollback is the same with the earlier values.
The IMEX daemon pods the controller creates run as host processes of each node's runtime double
whatever their image's tag (the double maps commands, not images), so a new tag rolls them for real.
`tests/e2e/test_helm_chart.py` runs the real `helm upgrade` of the chart on a KWOK cluster.

The tests run in file order and share the nodes and the domains.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import pytest_asyncio
from kubernetes_asyncio import client

from cdtestbed import chartparts
from cdtestbed.kubeletbed import CONTROLLER_COMPONENT, NAMESPACE, KubeletBed, kubelet_bed
from cdtestbed.topology import nvl72_racks
from computedomain.api import names
from support.domains import domain_manifest, workload_pod
from support.namespaces import create_namespace
from support.realnodes import (
    cdi_spec,
    channel_node,
    container_record,
    pod_claim_uids,
    require_kubelets,
    wait_running,
)
from support.testbed import control_plane
from support.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

TRAYS = nvl72_racks(1, 2, prefix="up")
NODES = [t.name for t in TRAYS]
CLIQUE = TRAYS[0].clique_id
REPOSITORY = "registry.example/computedomain-operator"
OLD_TAG, NEW_TAG = "0.1.0", "0.2.0"
CHECKPOINT_FILE = "checkpoint.json"
WAIT = 120.0


def release_values(tag: str) -> list[str]:
    """The values of the release at `tag` (`--set` items)."""
    return [f"image.repository={REPOSITORY}", f"image.tag={tag}"]


def image(tag: str) -> str:
    return f"{REPOSITORY}:{tag}"


def rendered_daemon_image(bed: KubeletBed) -> str:
    """The daemon image the chart's controller Deployment gives the controller (`IMAGE_NAME`)."""
    deployment = chartparts.component(bed.manifests, "Deployment", CONTROLLER_COMPONENT)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(next(e["value"] for e in container["env"] if e["name"] == "IMAGE_NAME"))


@pytest_asyncio.fixture(scope="module", params=[names.IMEX_MODE_CLIQUE, names.IMEX_MODE_DOMAIN])
async def bed(request: pytest.FixtureRequest) -> AsyncIterator[KubeletBed]:
    require_kubelets()
    mode = str(request.param)
    async with (
        control_plane(prefix=f"upgrades-{mode}-") as plane,
        kubelet_bed(
            plane.cluster,
            plane.api,
            TRAYS,
            controller_env={"IMAGE_NAME": image(OLD_TAG)},
            imex_mode=mode,
            values=release_values(OLD_TAG),
        ) as running,
    ):
        yield running


@dataclass
class Domain:
    """A ComputeDomain of the test in a namespace of its own, with a pod on each of its nodes."""

    name: str
    namespace: str
    uid: str
    # pod name -> node
    pods: dict[str, str]

    @property
    def record_name(self) -> str:
        """Clique mode: its ComputeDomainClique in the bed's clique, which holds its channel."""
        return names.clique_name(self.uid, CLIQUE)


def core(bed: KubeletBed) -> client.CoreV1Api:
    return client.CoreV1Api(bed.api)


def custom(bed: KubeletBed) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(bed.api)


def clique_mode(bed: KubeletBed) -> bool:
    return bed.imex_mode == names.IMEX_MODE_CLIQUE


def layout(bed: KubeletBed) -> dict[str, list[str]]:
    """The nodes of each domain's pods."""
    if clique_mode(bed):
        return {"alpha": NODES, "beta": NODES}
    # Domain mode: a node's one daemon device belongs to one domain at a time.
    return {"alpha": NODES[:1], "beta": NODES[1:]}


@pytest_asyncio.fixture(scope="module")
async def domains(bed: KubeletBed) -> list[Domain]:
    """Two domains, each with a Running pod on each of its nodes (`layout`)."""
    found = []
    for name, nodes in layout(bed).items():
        namespace = f"{name}-{uuid.uuid4().hex[:6]}"
        await create_namespace(bed.api, namespace)
        body = await custom(bed).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, domain_manifest(name, namespace)
        )
        pods = {}
        for node in nodes:
            pod = f"worker-{node}"
            manifest = workload_pod(pod, namespace, f"{name}-channel", node)
            await core(bed).create_namespaced_pod(namespace, cast(Any, manifest))
            pods[pod] = node
        found.append(Domain(name, namespace, str(body["metadata"]["uid"]), pods))
    for domain in found:
        for pod in domain.pods:
            await wait_running(bed.api, domain.namespace, pod, timeout=WAIT)
    return found


async def channel_record(bed: KubeletBed, domain: Domain) -> dict[str, Any]:
    """Clique mode: the domain's ComputeDomainClique, once it holds a channel."""

    async def given() -> dict[str, Any] | None:
        body: dict[str, Any] = await custom(bed).get_namespaced_custom_object(
            names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL, domain.record_name
        )
        return body if isinstance(body.get("channel"), int) else None

    found: dict[str, Any] = await eventually(
        given, timeout=WAIT, interval=0.5, what=f"a channel for {domain.name}"
    )
    return found


def checkpoint_claims(bed: KubeletBed, node: str) -> dict[str, Any]:
    """The claims in the checkpoint of the node's plugin, by UID."""
    document = json.loads((bed.host(node).state / CHECKPOINT_FILE).read_text())
    claims: dict[str, Any] = document["data"]["claims"]
    return claims


def spec_text(bed: KubeletBed, node: str, claim_uid: str) -> str | None:
    """The claim's CDI spec on `node` (None when there is none)."""
    path = cdi_spec(bed.node(node), claim_uid)
    return path.read_text() if path.exists() else None


async def workloads(bed: KubeletBed, domains: list[Domain]) -> dict[str, Any]:
    """Everything of the running workloads that an upgrade must leave as it is: each pod's UID, phase,
    restarts and the containers the runtime created for it (with the CDI devices each received), each
    claim's CDI spec and checkpoint entry, and in clique mode each domain's channel record (its
    resourceVersion included). Checked on the way (`assert_channels`): every container holds its
    domain's channel and every claim is prepared in its node's checkpoint."""
    pods: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for domain in domains:
        if clique_mode(bed):
            record = await channel_record(bed, domain)
            channels[domain.name] = {
                "channel": record["channel"],
                "resourceVersion": record["metadata"]["resourceVersion"],
            }
        for pod, node in domain.pods.items():
            live = await core(bed).read_namespaced_pod(pod, domain.namespace)
            checkpoint = checkpoint_claims(bed, node)
            claims = {
                uid: {"spec": spec_text(bed, node, uid), "checkpoint": checkpoint.get(uid)}
                for uid in await pod_claim_uids(bed.api, live)
            }
            pods[f"{domain.namespace}/{pod}"] = {
                "uid": live.metadata.uid,
                "phase": live.status.phase,
                "restarts": [s.restart_count for s in live.status.container_statuses],
                "containers": bed.node(node).records(domain.namespace, pod),
                "claims": claims,
            }
    held = {"pods": pods, "channels": channels}
    assert_channels(bed, domains, held)
    return held


def assert_channels(bed: KubeletBed, domains: list[Domain], held: dict[str, Any]) -> None:
    """Every workload container received exactly its domain's channel (the domain's own in clique mode,
    channel 0 in domain mode), and each claim is prepared in its node's checkpoint."""
    if clique_mode(bed):
        # Channel 0 is never given in clique mode; two live domains never share one.
        given = [c["channel"] for c in held["channels"].values()]
        assert 0 not in given, held["channels"]
        assert len(set(given)) == len(domains), held["channels"]
    for domain in domains:
        channel = held["channels"][domain.name]["channel"] if clique_mode(bed) else 0
        for pod, node in domain.pods.items():
            state = held["pods"][f"{domain.namespace}/{pod}"]
            assert state["phase"] == "Running"
            record = container_record(bed.node(node), domain.namespace, pod, "trainer")
            assert record["cdi"]["deviceNodes"] == [channel_node(channel)], (pod, node)
            assert state["claims"]
            for uid, claim in state["claims"].items():
                assert claim["spec"] is not None, (node, uid)
                assert (claim["checkpoint"] or {}).get("state") == "PrepareCompleted", (node, uid)


def daemonsets(bed: KubeletBed, domains: list[Domain]) -> dict[str, list[str]]:
    """The IMEX daemon DaemonSets the controller keeps (the clique daemons', or one per domain) and the
    nodes each runs a daemon on."""
    if clique_mode(bed):
        return {names.CLIQUE_DAEMONS_NAME: NODES}
    return {names.daemon_name(d.uid): sorted(d.pods.values()) for d in domains}


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def daemons(bed: KubeletBed, domains: list[Domain], tag: str) -> dict[str, Any]:
    """Once every daemon DaemonSet runs the image of `tag` on each of its nodes, all Ready: per
    DaemonSet its generation and, per node, its pod's name and UID."""
    apps = client.AppsV1Api(bed.api)

    async def rolled() -> dict[str, Any] | None:
        found: dict[str, Any] = {}
        for name, nodes in daemonsets(bed, domains).items():
            daemonset = await apps.read_namespaced_daemon_set(name, NAMESPACE)
            (container,) = daemonset.spec.template.spec.containers
            status = daemonset.status
            if container.image != image(tag) or status.observed_generation != daemonset.metadata.generation:
                return None
            counts = (status.desired_number_scheduled, status.updated_number_scheduled, status.number_ready)
            if counts != (len(nodes),) * 3:
                return None
            selector = ",".join(f"{k}={v}" for k, v in daemonset.spec.selector.match_labels.items())
            listing = await core(bed).list_namespaced_pod(NAMESPACE, label_selector=selector)
            pods = [p for p in listing.items if not p.metadata.deletion_timestamp]
            if sorted(p.spec.node_name for p in pods) != nodes:
                return None
            if not all(p.spec.containers[0].image == image(tag) and ready(p) for p in pods):
                return None
            found[name] = {
                "generation": daemonset.metadata.generation,
                "pods": {p.spec.node_name: (p.metadata.name, p.metadata.uid) for p in pods},
            }
        return found

    result: dict[str, Any] = await eventually(
        rolled, timeout=WAIT, interval=0.5, what=f"every IMEX daemon of {image(tag)} on its nodes, Ready"
    )
    # The runtime created each daemon's container from that image.
    for daemonset in result.values():
        for node, (pod, _) in daemonset["pods"].items():
            record = container_record(bed.node(node), NAMESPACE, pod, names.DAEMON_CONTAINER)
            assert record["image"] == image(tag), record["image"]
    return result


async def upgrade(bed: KubeletBed, tag: str, *values: str) -> dict[str, float]:
    """What `helm upgrade` to the release at `tag` (with `values` besides) does: the new rendering
    applied, the plugins replaced one node at a time, the controller replaced with the new settings.
    How many seconds each took.

    The plugins go first: Kubernetes rolls them and the controller at once, and the daemons' roll that
    the new controller starts may meet a node's plugin restarting; the kubelet retries that daemon's
    prepare only at its next sync of the pod, up to a minute later. Nothing is lost then (the daemon
    merely starts later), but the test would wait for it.
    """
    figures = {}
    started = time.monotonic()
    await bed.install(*release_values(tag), *values)
    figures["apply"] = time.monotonic() - started
    started = time.monotonic()
    for node in NODES:
        await bed.roll_plugin(node)
    figures["plugins"] = time.monotonic() - started
    started = time.monotonic()
    await bed.restart_controller(IMAGE_NAME=rendered_daemon_image(bed))
    figures["controller"] = time.monotonic() - started
    return figures


def report(bed: KubeletBed, what: str, figures: dict[str, float]) -> None:
    seconds = ", ".join(f"{step} {value:.1f} s" for step, value in figures.items())
    print(f"[{bed.imex_mode} mode] {what}: {seconds}")


async def test_an_upgrade_that_keeps_the_daemon_image_keeps_pods_channels_and_daemons(
    bed: KubeletBed, domains: list[Domain]
) -> None:
    """An upgrade whose rendering changes nothing the daemons get (here: the controller's resources)
    replaces the controller and every plugin, and nothing else moves: each running pod keeps its
    containers, its channel, its claims' CDI specs and checkpoint entries (the new plugins took over
    the old ones' checkpoints, and the kubelet prepared nothing again); in clique mode no channel
    record was written; no daemon DaemonSet changed and no daemon pod was replaced."""
    before = await workloads(bed, domains)
    daemons_before = await daemons(bed, domains, OLD_TAG)

    old_plugins = {
        node: (pod["metadata"]["uid"], bed.plugins[node].pid) for node, pod in bed.plugin_pods.items()
    }

    figures = await upgrade(bed, OLD_TAG, "controller.resources.requests.memory=160Mi")
    report(bed, "upgrade, same image", figures)
    assert rendered_daemon_image(bed) == image(OLD_TAG)
    for node, (pod, pid) in old_plugins.items():
        assert bed.plugin_pods[node]["metadata"]["uid"] != pod
        assert bed.plugins[node].pid not in (None, pid)

    # The new controller has reconciled both domains with nothing left to do.
    controller = bed.controller
    assert controller is not None

    def settled() -> bool:
        reconciled = controller.metric("computedomain_reconcile_total") >= len(domains)
        return reconciled and controller.metric("computedomain_queue_depth") == 0

    await eventually(settled, timeout=WAIT, interval=0.5, what="the new controller's first reconciles")
    assert await workloads(bed, domains) == before
    assert await daemons(bed, domains, OLD_TAG) == daemons_before
    # The kubelet asked the new plugins to prepare nothing again: it keeps its own record of the
    # running pods' prepared claims.
    for node in NODES:
        assert bed.plugins[node].metric("computedomain_plugin_prepares_total") == 0, node


async def test_an_upgrade_to_a_new_image_rolls_every_daemon_and_keeps_every_channel(
    bed: KubeletBed, domains: list[Domain]
) -> None:
    """An upgrade to a new image tag: the new controller re-renders every daemon DaemonSet (each
    domain's in domain mode, the clique daemons' in clique mode) with the new image, and the DaemonSet
    controller rolls their pods node by node onto it, while the plugins are replaced too. The workload
    pods run on untouched: same containers, same channels, same claims; in clique mode the channel
    records are not even written."""
    before = await workloads(bed, domains)
    daemons_before = await daemons(bed, domains, OLD_TAG)

    started = time.monotonic()
    figures = await upgrade(bed, NEW_TAG)
    assert rendered_daemon_image(bed) == image(NEW_TAG)
    after = await daemons(bed, domains, NEW_TAG)
    figures["daemons rolled"] = time.monotonic() - started
    report(bed, f"upgrade {OLD_TAG} -> {NEW_TAG}", figures)

    for name, daemonset in after.items():
        assert daemonset["generation"] > daemons_before[name]["generation"]
        old_pods = set(daemons_before[name]["pods"].values())
        assert not old_pods & set(daemonset["pods"].values()), name
    assert await workloads(bed, domains) == before


async def test_a_rollback_brings_the_old_image_back_and_pods_unprepare_cleanly_afterwards(
    bed: KubeletBed, domains: list[Domain]
) -> None:
    """Rolling back to the earlier release rolls every daemon back onto the old image, and again
    nothing running loses its channel. Then deleting one domain's pods has the plugins unprepare claims
    that the plugins of the first install prepared, three replacements back: their CDI specs and
    checkpoint entries go, and in clique mode the domain's channel record with them; the other domain
    keeps its pods, claims and channel."""
    before = await workloads(bed, domains)
    started = time.monotonic()
    figures = await upgrade(bed, OLD_TAG)
    await daemons(bed, domains, OLD_TAG)
    figures["daemons rolled"] = time.monotonic() - started
    report(bed, f"rollback {NEW_TAG} -> {OLD_TAG}", figures)
    assert await workloads(bed, domains) == before

    leaving, staying = domains
    claims: list[tuple[str, str]] = []
    for pod, node in leaving.pods.items():
        live = await core(bed).read_namespaced_pod(pod, leaving.namespace)
        claims += [(node, uid) for uid in await pod_claim_uids(bed.api, live)]
        await core(bed).delete_namespaced_pod(pod, leaving.namespace, grace_period_seconds=0)

    def unprepared() -> bool:
        return not any(
            cdi_spec(bed.node(node), uid).exists() or uid in checkpoint_claims(bed, node)
            for node, uid in claims
        )

    await eventually(unprepared, timeout=WAIT, interval=0.5, what=f"{leaving.name}'s claims unprepared")
    if clique_mode(bed):

        async def released() -> bool:
            listing = await custom(bed).list_namespaced_custom_object(
                names.GROUP, names.VERSION, NAMESPACE, names.CLIQUE_PLURAL
            )
            return leaving.record_name not in {o["metadata"]["name"] for o in listing["items"]}

        await eventually(released, timeout=WAIT, interval=0.5, what=f"{leaving.name}'s channel released")
    kept = await workloads(bed, [staying])
    assert kept["pods"] == {k: v for k, v in before["pods"].items() if k.startswith(f"{staying.namespace}/")}
    assert kept["channels"] == {k: v for k, v in before["channels"].items() if k == staying.name}
