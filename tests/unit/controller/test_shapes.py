"""The controller's caches keep only what the planners read, encoded, with exact size accounting."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from computedomain.api import names
from computedomain.controller import shapes
from computedomain.controller import world as w
from computedomain.controller.plan.membership import claim_facts, daemon_facts, members, wanted_nodes
from computedomain.controller.world import World
from computedomain.kube import PODS, Object
from computedomain.kube.informer import Informer
from computedomain.kube.store import DEFLATE_FROM, Store, encode

UID = "0f6c1b7e-1111-4222-8333-944455556666"


def daemon_pod(node: str, ready: bool = True) -> Object:
    """A daemon pod as the API server sends it (trimmed of nothing the planners could read)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"computedomain-daemon-{node}",
            "namespace": "computedomain-system",
            "uid": f"pod-{node}",
            "resourceVersion": "41",
            "generateName": "computedomain-daemon-",
            "labels": {
                names.DOMAIN_LABEL: UID,
                names.CLIQUE_LABEL: "fabric.7",
                "pod-template-generation": "1",
            },
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": names.daemon_name(UID),
                    "uid": "ds-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "imex", "image": "registry.example/cd:1", "env": [{"name": "A", "value": "1"}]}
            ],
            "volumes": [{"name": "config", "emptyDir": {}}],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.244.0.7",
            "podIPs": [{"ip": "10.244.0.7"}],
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Ready", "status": "True" if ready else "False", "lastProbeTime": None},
            ],
            "containerStatuses": [{"name": "imex", "ready": ready, "restartCount": 0, "image": "x"}],
        },
    }


def channel_claim(node: str) -> Object:
    return {
        "metadata": {
            "name": f"job-{node}-channel",
            "namespace": "team",
            "uid": f"claim-{node}",
            "resourceVersion": "50",
            "labels": {names.DOMAIN_LABEL: UID},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}],
        },
        "spec": {"devices": {"requests": [{"name": "channel", "exactly": {"deviceClassName": "x"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"driver": names.DRIVER, "pool": node, "device": "channel-0", "request": "channel"},
                        {"driver": "gpu.nvidia.com", "pool": node, "device": "gpu-0", "request": "gpu"},
                    ],
                    "config": [{"source": "FromClaim", "opaque": {"driver": names.DRIVER, "parameters": {}}}],
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                },
            },
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}],
        },
    }


def test_a_shaped_pod_and_claim_plan_exactly_like_the_full_ones() -> None:
    nodes = ["n1", "n2", "n3"]
    pods = [daemon_pod("n1"), daemon_pod("n2", ready=False), daemon_pod("n3")]
    claims = [channel_claim(n) for n in nodes]
    node_cliques = {"n1": "fabric.7", "n2": "fabric.7"}
    full = members(pods, node_cliques, names.daemon_name(UID))
    shaped = members([shapes.pod(copy.deepcopy(p)) for p in pods], node_cliques, names.daemon_name(UID))
    assert shaped == full
    assert [m.ready for m in shaped[0]] == [True, False]
    assert (
        wanted_nodes([shapes.claim(c) for c in claims], "team") == wanted_nodes(claims, "team") == set(nodes)
    )


def test_shapes_are_a_fraction_of_the_object() -> None:
    pod, claim = daemon_pod("n1"), channel_claim("n1")
    assert len(encode(shapes.pod(pod))) * 2 < len(encode(pod))
    assert len(encode(shapes.claim(claim))) < len(encode(claim))
    assert "config" not in json.dumps(shapes.claim(claim))
    assert "gpu-0" not in json.dumps(shapes.claim(claim))
    # A deleted pod is told by its deletionTimestamp, which the shape keeps.
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert shapes.pod(pod)["metadata"]["deletionTimestamp"]


def test_a_node_keeps_only_the_labels_the_planners_read() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "resourceVersion": "7",
            "labels": {
                names.DOMAIN_LABEL: UID,
                names.GPU_CLIQUE_LABEL: "fabric.7",
                "kubernetes.io/os": "linux",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"cpu": "144"}},
    }
    assert shapes.node(node) == {
        "metadata": {
            "name": "n1",
            "resourceVersion": "7",
            "labels": {names.DOMAIN_LABEL: UID, names.GPU_CLIQUE_LABEL: "fabric.7"},
        }
    }


def test_a_daemonset_loses_only_its_status() -> None:
    ds = {"metadata": {"name": "d", "generation": 3}, "spec": {"x": 1}, "status": {"numberReady": 4}}
    assert shapes.without_status(ds) == {"metadata": {"name": "d", "generation": 3}, "spec": {"x": 1}}


def test_the_store_counts_encoded_bytes_and_hands_out_copies() -> None:
    store = Store()
    store.put("a", {"x": "é" * 10})
    store.put("b", {"y": 1})
    assert (
        store.size == len(json.dumps({"x": "é" * 10}, separators=(",", ":"), ensure_ascii=False).encode()) + 7
    )
    store.put("b", {"y": 12345})
    assert store.size == len(encode({"x": "é" * 10})) + len(encode({"y": 12345}))
    got = store["a"]
    got["x"] = "changed"
    assert store.get("a") == {"x": "é" * 10}
    assert sorted(store) == ["a", "b"]
    assert len(store) == 2
    assert "a" in store
    assert store.pop("a") == {"x": "é" * 10}
    assert store.pop("a") is None
    assert store.size == len(encode({"y": 12345}))
    store.clear()
    assert store.size == 0
    assert len(store) == 0


class OneList:
    """A `Kube` double whose list answers once and whose watch stays silent."""

    def __init__(self, items: list[Object]) -> None:
        self.items = items

    async def list(self, *_: Any, **__: Any) -> tuple[list[Object], str]:
        return self.items, "100"

    async def watch(self, *_: Any, **__: Any) -> Any:
        await asyncio.Event().wait()
        yield {}  # pragma: no cover


async def test_an_informer_stores_and_hands_handlers_the_shaped_object() -> None:
    seen: list[Object] = []
    informer = Informer(
        OneList([daemon_pod("n1")]),  # type: ignore[arg-type]
        PODS,
        lambda _event, obj, _old: seen.append(obj),
        shape=shapes.pod,
    )
    task = asyncio.create_task(informer.run())
    await asyncio.wait_for(informer.synced.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stored = informer.store["computedomain-system/computedomain-daemon-n1"]
    assert stored == seen[0] == shapes.pod(daemon_pod("n1"))
    assert "containers" not in json.dumps(stored)
    assert informer.store.size == len(encode(stored))


def test_large_objects_are_deflated_and_come_back_whole() -> None:
    store = Store()
    big = {
        "metadata": {"name": "ds"},
        "spec": {"env": [{"name": f"VAR_{i}", "value": "x" * 20} for i in range(80)]},
    }
    assert len(encode(big)) >= DEFLATE_FROM
    store.put("big", big)
    store.put("small", {"a": 1})
    assert store["big"] == big
    assert store["small"] == {"a": 1}
    assert store.size < len(encode(big)) // 3 + len(encode({"a": 1}))


class _NoKube:
    """The World only needs its client's field manager until a watch runs (none does here)."""

    field_manager = names.FIELD_MANAGER


def test_the_world_keeps_the_planners_facts_in_step_with_its_caches() -> None:
    world = World(_NoKube(), "computedomain-system", "v1", lambda _: None)  # type: ignore[arg-type]
    pods = [daemon_pod("n2"), daemon_pod("n1", ready=False)]
    claims = [channel_claim("n1"), channel_claim("n2")]
    for pod in pods:
        world.record(w.PODS, pod)
    for claim in claims:
        world.record(w.CLAIMS, claim)
    # The same facts, in the same (key) order, as decoding every cached object would give.
    assert world.daemon_facts(UID) == [daemon_facts(p) for p in world.related(w.PODS, UID)]
    assert [f.node for f in world.daemon_facts(UID)] == ["n1", "n2"]
    assert world.claim_facts(UID) == [claim_facts(c) for c in world.related(w.CLAIMS, UID)]

    # A change replaces the facts; a pod that loses the domain label, or is gone, leaves none.
    ready = daemon_pod("n1")
    ready["metadata"]["resourceVersion"] = "42"
    world.record(w.PODS, ready)
    assert [f.ready for f in world.daemon_facts(UID)] == [True, True]
    unlabelled = daemon_pod("n2")
    unlabelled["metadata"]["resourceVersion"] = "43"
    del unlabelled["metadata"]["labels"][names.DOMAIN_LABEL]
    world.record(w.PODS, unlabelled)
    world.forget(w.CLAIMS, claims[0])
    assert [f.node for f in world.daemon_facts(UID)] == ["n1"]
    assert world._daemons.keys() == {"computedomain-system/computedomain-daemon-n1"}
    assert [f.node for f in world.claim_facts(UID)] == ["n2"]
