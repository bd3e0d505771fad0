"""The reconcile of one ComputeDomain against an in-memory API server: the same `World` and `Reconciler`
the controller runs, checked in milliseconds (the real-API tests in tests/integration stay)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio

from computedomain import kube as k
from computedomain.api import names
from computedomain.api.models import ComputeDomain
from computedomain.controller import metrics
from computedomain.controller.events import EventRecorder
from computedomain.controller.reconcile.reconciler import Reconciler
from computedomain.controller.reconcile.statuspace import StatusPacer, progress_interval
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.kube import Kube, KubeError, Object
from support.fakekube import FakeKube, Write, register

VERSION = "v1"
OPERATOR_NS = "cd-system"
NS = "team-a"
CLIQUE = "7d3b0f5e-2c41-4e8e-b8a7-5a3c1e9d0b22.32766"
TEMPLATES = k.claim_templates(VERSION)
CLAIMS = k.claims(VERSION)
register(k.DOMAINS, k.CLIQUES, k.DAEMONSETS, k.PODS, k.NODES, TEMPLATES, CLAIMS)


class Bed:
    """A fake API server, the controller's caches on it, and a reconciler."""

    def __init__(self, fake: FakeKube, world: World, reconciler: Reconciler) -> None:
        self.fake = fake
        self.world = world
        self.reconcile = reconciler
        self.notified: list[str] = []

    async def create_domain(self, name: str = "train", **spec: Any) -> str:
        body = {
            "apiVersion": names.API_VERSION,
            "kind": names.DOMAIN_KIND,
            "metadata": {"name": name, "namespace": NS},
            "spec": {"channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}, **spec},
        }
        created = await self.fake.create(k.DOMAINS, body)
        self.world.set_domain(created)
        return str(created["metadata"]["uid"])

    def domain(self, uid: str) -> Object:
        body: Object = self.world.domains[uid]
        return body

    async def pass_(self, uid: str) -> list[Write]:
        """One reconcile once the caches have seen every change; the writes it made."""
        await self.fake.drain()
        body = await self.fake.get(k.DOMAINS, self.domain(uid)["metadata"]["name"], NS)
        if body is None:
            self.world.drop_domain(uid)
        else:
            self.world.set_domain(body)
        self.fake.take_writes()
        await self.reconcile(uid)
        return self.fake.take_writes()

    async def add_node(self, name: str, clique: str = CLIQUE, **labels: str) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {**labels, names.GPU_CLIQUE_LABEL: clique}},
        }
        await self.fake.create(k.NODES, node)

    async def allocate(self, uid: str, node: str) -> None:
        """A workload channel claim of the domain, allocated to `node` (the scheduler's part)."""
        claim = {
            "apiVersion": CLAIMS.api_version,
            "kind": "ResourceClaim",
            "metadata": {"name": f"claim-{node}", "namespace": NS, "labels": {names.DOMAIN_LABEL: uid}},
            "status": {
                "allocation": {
                    "devices": {"results": [{"driver": names.DRIVER, "pool": node, "request": "channel"}]}
                }
            },
        }
        await self.fake.create(CLAIMS, claim)

    async def start_daemon(self, uid: str, node: str, ip: str) -> None:
        """The IMEX daemon pod the DaemonSet would start on `node` (no DaemonSet controller here)."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"daemon-{node}",
                "namespace": OPERATOR_NS,
                "labels": {names.DOMAIN_LABEL: uid},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "DaemonSet",
                        "name": names.daemon_name(uid),
                        "uid": f"ds-{uid}",
                        "controller": True,
                    }
                ],
            },
            "spec": {"nodeName": node},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
        }
        await self.fake.create(k.PODS, pod)


@pytest_asyncio.fixture
async def bed() -> AsyncIterator[Bed]:
    fake = FakeKube()
    settings = Settings(image="img", pod_name="controller-0", namespace=OPERATOR_NS)
    kube = cast(Kube, fake)
    world = World(kube, OPERATOR_NS, VERSION, lambda uid: None)
    reconciler = Reconciler(kube, world, settings, VERSION, EventRecorder(kube))
    bed = Bed(fake, world, reconciler)
    world.notify = bed.notified.append
    task = asyncio.create_task(world.run())
    await asyncio.wait_for(world.wait_synced(), 5)
    yield bed
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def ready(body: Object) -> Object:
    return next(c for c in body["status"]["conditions"] if c["type"] == "Ready")


def events(fake: FakeKube, reason: str) -> list[Object]:
    return [e for e in fake.of_kind(k.EVENTS) if e["reason"] == reason]


async def test_a_new_domain_gets_its_objects_and_a_second_pass_writes_nothing(bed: Bed) -> None:
    uid = await bed.create_domain()
    writes = await bed.pass_(uid)

    assert {(w.verb, w.resource) for w in writes} >= {
        ("patch", "computedomains"),
        ("apply", "daemonsets"),
        ("create", "resourceclaimtemplates"),
        ("patch", "computedomains/status"),
    }
    body = bed.domain(uid)
    assert body["metadata"]["finalizers"] == [names.FINALIZER]
    assert ready(body)["reason"] == "DomainReady"
    assert bed.fake.stored(k.DAEMONSETS, names.daemon_name(uid), OPERATOR_NS) is not None
    assert await bed.pass_(uid) == []


async def test_a_refused_write_reaches_the_status_once_and_the_reconcile_still_fails(bed: Bed) -> None:
    uid = await bed.create_domain()
    denied = 'daemonsets.apps "x" is forbidden: User "system:serviceaccount:cd-system:c" cannot create'
    bed.fake.fail("apply", "daemonsets", 403, denied, "Forbidden")

    with pytest.raises(KubeError) as raised:
        await bed.pass_(uid)
    assert raised.value.status == 403
    condition = ready(bed.domain(uid))
    assert (condition["status"], condition["reason"]) == ("False", "ReconcileError")
    assert denied in condition["message"]
    (event,) = events(bed.fake, "ReconcileError")
    assert event["type"] == "Warning"
    assert denied in event["message"]

    # The retry fails the same way: no second status write, no second Event.
    with pytest.raises(KubeError):
        await bed.pass_(uid)
    assert [w for w in bed.fake.writes if w.resource == "computedomains/status"] == []
    assert len(events(bed.fake, "ReconcileError")) == 1

    # Once the refusal is lifted, the next retry repairs the domain and its status.
    bed.fake.heal()
    writes = await bed.pass_(uid)
    assert ("apply", "daemonsets") in {(w.verb, w.resource) for w in writes}
    assert ready(bed.domain(uid))["reason"] == "DomainReady"


async def test_a_transient_failure_is_retried_without_touching_the_status(bed: Bed) -> None:
    uid = await bed.create_domain()
    bed.fake.fail("apply", "daemonsets", 503, "the server is currently unable to handle the request")

    with pytest.raises(KubeError):
        await bed.pass_(uid)
    assert "status" not in bed.domain(uid)
    assert events(bed.fake, "ReconcileError") == []


async def test_a_refused_node_label_reaches_the_status(bed: Bed) -> None:
    await bed.add_node("n1")
    uid = await bed.create_domain()
    await bed.pass_(uid)
    await bed.allocate(uid, "n1")
    bed.fake.fail("patch", "nodes", 422, 'Node "n1" is invalid: metadata.labels: Invalid value', "Invalid")

    with pytest.raises(KubeError):
        await bed.pass_(uid)
    condition = ready(bed.domain(uid))
    assert condition["reason"] == "ReconcileError"
    assert condition["message"].startswith(
        "labelling nodes and writing ComputeDomainCliques failed (HTTP 422)"
    )


async def test_nodes_join_and_leave_with_their_clique_slots(bed: Bed) -> None:
    for name in ("n1", "n2"):
        await bed.add_node(name)
    uid = await bed.create_domain(numNodes=2)
    await bed.pass_(uid)

    await bed.allocate(uid, "n1")
    await bed.allocate(uid, "n2")
    writes = await bed.pass_(uid)
    assert [(w.verb, w.key) for w in writes if w.resource == "nodes"] == [("patch", "n1"), ("patch", "n2")]
    for name, ip in (("n1", "10.0.0.1"), ("n2", "10.0.0.2")):
        await bed.start_daemon(uid, name, ip)
    await bed.pass_(uid)
    (clique,) = bed.fake.of_kind(k.CLIQUES)
    assert [(d["nodeName"], d["index"]) for d in clique["daemons"]] == [("n1", 0), ("n2", 1)]
    assert bed.domain(uid)["status"]["nodeSummary"] == "2/2"
    assert ready(bed.domain(uid))["reason"] == "DomainReady"
    assert await bed.pass_(uid) == []

    # n1's workload ends: its label goes; once its daemon is gone, so is its slot.
    await bed.fake.delete(CLAIMS, "claim-n1", NS)
    writes = await bed.pass_(uid)
    assert [(w.verb, w.key) for w in writes if w.resource == "nodes"] == [("patch", "n1")]
    node = bed.fake.stored(k.NODES, "n1")
    assert node is not None
    assert names.DOMAIN_LABEL not in node["metadata"]["labels"]
    await bed.fake.delete(k.PODS, "daemon-n1", OPERATOR_NS)
    await bed.pass_(uid)
    (clique,) = bed.fake.of_kind(k.CLIQUES)
    assert [(d["nodeName"], d["index"]) for d in clique["daemons"]] == [("n2", 1)]

    # The last node leaves: the clique object goes too.
    await bed.fake.delete(CLAIMS, "claim-n2", NS)
    await bed.fake.delete(k.PODS, "daemon-n2", OPERATOR_NS)
    await bed.pass_(uid)
    assert bed.fake.of_kind(k.CLIQUES) == []


async def test_a_node_of_another_domain_is_reported_and_left_alone(bed: Bed) -> None:
    await bed.add_node("n1", **{names.DOMAIN_LABEL: "another-uid"})
    uid = await bed.create_domain()
    await bed.allocate(uid, "n1")
    writes = await bed.pass_(uid)

    assert [w for w in writes if w.resource == "nodes"] == []
    condition = ready(bed.domain(uid))
    assert condition["reason"] == "LabelConflict"
    assert "n1 (ComputeDomain UID another-uid)" in condition["message"]


async def test_a_taken_template_name_is_a_name_conflict(bed: Bed) -> None:
    taken = {
        "apiVersion": TEMPLATES.api_version,
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "train-channel", "namespace": NS},
        "spec": {"spec": {}},
    }
    version = (await bed.fake.create(TEMPLATES, taken))["metadata"]["resourceVersion"]
    uid = await bed.create_domain()
    await bed.pass_(uid)

    condition = ready(bed.domain(uid))
    assert condition["reason"] == "NameConflict"
    assert "train-channel" in condition["message"]
    # The existing object is left as it was: one write (ours failed), no label, the same spec.
    stored = bed.fake.stored(TEMPLATES, "train-channel", NS)
    assert stored is not None
    assert (stored["metadata"]["resourceVersion"], stored["spec"]) == (version, taken["spec"])
    assert "labels" not in stored["metadata"]


async def test_deletion_removes_children_then_labels_then_the_finalizer(bed: Bed) -> None:
    await bed.add_node("n1")
    uid = await bed.create_domain()
    await bed.allocate(uid, "n1")
    await bed.pass_(uid)
    await bed.start_daemon(uid, "n1", "10.0.0.1")
    await bed.pass_(uid)
    assert bed.fake.of_kind(k.CLIQUES)

    await bed.fake.delete(k.DOMAINS, "train", NS)
    writes = await bed.pass_(uid)

    order = [(w.verb, w.resource) for w in writes]
    assert order == [
        ("delete", "daemonsets"),
        ("delete", "resourceclaimtemplates"),
        ("delete", "resourceclaimtemplates"),
        ("delete", names.CLIQUE_PLURAL),
        ("patch", "nodes"),
        ("patch", "computedomains"),
    ]
    assert bed.fake.stored(k.DOMAINS, "train", NS) is None
    node = bed.fake.stored(k.NODES, "n1")
    assert node is not None
    assert names.DOMAIN_LABEL not in node["metadata"]["labels"]


async def test_a_field_no_longer_rendered_leaves_the_daemonset(bed: Bed) -> None:
    uid = await bed.create_domain()
    bed.reconcile.settings = bed.reconcile.settings.model_copy(update={"daemon_priority_class": "critical"})
    await bed.pass_(uid)
    ds_name = names.daemon_name(uid)
    ds = bed.fake.stored(k.DAEMONSETS, ds_name, OPERATOR_NS)
    assert ds is not None
    assert ds["spec"]["template"]["spec"]["priorityClassName"] == "critical"

    bed.reconcile.settings = bed.reconcile.settings.model_copy(update={"daemon_priority_class": ""})
    writes = await bed.pass_(uid)
    assert [(w.verb, w.resource) for w in writes] == [("apply", "daemonsets")]
    ds = bed.fake.stored(k.DAEMONSETS, ds_name, OPERATOR_NS)
    assert ds is not None
    assert "priorityClassName" not in ds["spec"]["template"]["spec"]
    assert await bed.pass_(uid) == []


async def test_a_daemonset_created_by_post_is_taken_over_by_our_apply(bed: Bed) -> None:
    # As an earlier version left it: created by POST, so every field belongs to an update entry;
    # the setting is dropped at the same time as the new version takes over.
    uid = await bed.create_domain()
    critical = bed.reconcile.settings.model_copy(update={"daemon_priority_class": "critical"})
    domain = ComputeDomain.model_validate(bed.domain(uid))
    await bed.fake.create(k.DAEMONSETS, daemonset(domain, critical))
    writes = await bed.pass_(uid)
    assert [(w.verb, w.resource) for w in writes if w.resource == "daemonsets"] == [
        ("patch", "daemonsets"),
        ("apply", "daemonsets"),
    ]
    ds = bed.fake.stored(k.DAEMONSETS, names.daemon_name(uid), OPERATOR_NS)
    assert ds is not None
    assert "priorityClassName" not in ds["spec"]["template"]["spec"]
    assert [e["operation"] for e in ds["metadata"]["managedFields"]] == ["Apply"]
    assert await bed.pass_(uid) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_big_domain_writes_progress_at_a_pace_and_readiness_at_once(bed: Bed) -> None:
    clock = Clock()
    bed.reconcile.pacer = StatusPacer(clock)
    nodes = [f"node-{i:03d}" for i in range(300)]
    uid = await bed.create_domain(numNodes=len(nodes))
    await bed.pass_(uid)
    for i, node in enumerate(nodes):
        await bed.add_node(node, clique=f"{CLIQUE[:-6]}.{i // 18}")  # 18 nodes per NVLink clique
        await bed.allocate(uid, node)
    await bed.pass_(uid)

    async def reconcile() -> tuple[float | None, list[Write]]:
        await bed.fake.drain()
        bed.fake.take_writes()
        delay = await bed.reconcile(uid)
        return delay, [w for w in bed.fake.take_writes() if w.resource == "computedomains/status"]

    for i, node in enumerate(nodes[:200]):
        await bed.start_daemon(uid, node, f"127.0.1.{i}")
    delay, status_writes = await reconcile()
    # Only progress (still waiting for nodes): it waits for 2 ms per listed node since the last write.
    assert status_writes == []
    assert delay == pytest.approx(progress_interval(200))
    clock.now += delay
    _, status_writes = await reconcile()
    assert len(status_writes) == 1
    assert bed.domain(uid)["status"]["joinedNodes"] == 200

    for i, node in enumerate(nodes[200:299]):
        await bed.start_daemon(uid, node, f"127.0.2.{i}")
    delay, status_writes = await reconcile()
    assert status_writes == []
    assert delay == pytest.approx(progress_interval(299))

    # The last node makes the domain Ready: that goes out at once.
    await bed.start_daemon(uid, nodes[-1], "127.0.3.1")
    delay, status_writes = await reconcile()
    assert len(status_writes) == 1
    assert delay is None
    assert bed.domain(uid)["status"]["status"] == "Ready"
    assert bed.domain(uid)["status"]["joinedNodes"] == 300


async def test_the_cache_metrics_report_what_the_caches_hold(bed: Bed) -> None:
    uid = await bed.create_domain()
    await bed.pass_(uid)
    await bed.fake.drain()
    collector = metrics.CacheCollector()
    collector.figures = bed.world.cache_figures
    families = {f.name: {s.labels["kind"]: s.value for s in f.samples} for f in collector.collect()}
    objects, stored = families["computedomain_cache_objects"], families["computedomain_cache_bytes"]
    assert objects["computedomains"] == 1
    assert objects["daemonsets"] == 1
    assert objects["templates"] == 2
    daemonset_store = bed.world._informers["daemonsets"].store
    assert stored["daemonsets"] == daemonset_store.size > 0
    collector.figures = None
    assert [list(f.samples) for f in collector.collect()] == [[], []]


@pytest_asyncio.fixture
async def clique_bed() -> AsyncIterator[Bed]:
    """The bed with the controller in clique mode and a pool of channels 1 and 2."""
    fake = FakeKube()
    settings = Settings(
        image="img", pod_name="controller-0", namespace=OPERATOR_NS, imex_mode="clique", imex_channels=3
    )
    kube = cast(Kube, fake)
    world = World(kube, OPERATOR_NS, VERSION, lambda uid: None)
    world.use_clique_mode()
    reconciler = Reconciler(kube, world, settings, VERSION, EventRecorder(kube))
    bed = Bed(fake, world, reconciler)
    world.notify = bed.notified.append
    task = asyncio.create_task(world.run())
    await asyncio.wait_for(world.wait_synced(), 5)
    yield bed
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def channel_of(fake: FakeKube, uid: str) -> int | None:
    found = fake.stored(k.CLIQUES, names.clique_name(uid, CLIQUE), OPERATOR_NS)
    assert found is not None
    channel = found.get("channel")
    return int(channel) if channel is not None else None


async def test_clique_mode_gives_a_channel_and_a_second_pass_writes_nothing(clique_bed: Bed) -> None:
    bed = clique_bed
    await bed.add_node("n1")
    uid = await bed.create_domain()
    await bed.allocate(uid, "n1")
    await bed.pass_(uid)

    assert channel_of(bed.fake, uid) == 1
    assert not bed.fake.of_kind(k.DAEMONSETS)
    assert await bed.pass_(uid) == []


async def test_clique_mode_a_deleted_domain_holds_its_channel_until_its_claims_go(clique_bed: Bed) -> None:
    bed = clique_bed
    await bed.add_node("n1")
    uid = await bed.create_domain()
    await bed.allocate(uid, "n1")
    await bed.pass_(uid)
    await bed.fake.delete(k.DOMAINS, "train", NS)

    await bed.pass_(uid)
    assert channel_of(bed.fake, uid) == 1
    body = bed.fake.stored(k.DOMAINS, "train", NS)
    assert body is not None
    assert ready(body)["reason"] == "ReleasingChannels"
    assert CLIQUE in ready(body)["message"]
    # Nothing changed: nothing written again.
    assert await bed.pass_(uid) == []

    await bed.fake.delete(CLAIMS, "claim-n1", NS)
    await bed.pass_(uid)
    assert bed.fake.stored(k.CLIQUES, names.clique_name(uid, CLIQUE), OPERATOR_NS) is None
    assert bed.fake.stored(k.DOMAINS, "train", NS) is None
