"""A scheduler double for the join benchmark: it places pods that hold ComputeDomain claims the way
kube-scheduler would, but without searching.

At 5,000 nodes kube-scheduler, which also allocates every pod's DRA claims, places about one daemon pod
a second on this 2-core machine; a 5,000-node join would then measure the scheduler, not the
controller. This double knows where each pod goes: a DaemonSet pod names its node in its node
affinity, and the Job's pod of completion index i goes to the i-th node. For each pod it writes what
the scheduler writes, in the same order: each claim's `status.allocation` (our driver's device on that
node, the claim's own config, the node as node selector) with the pod in `reservedFor`, then the pod's
binding. KWOK then runs the pod. Only pods left to the default scheduler and holding claims are placed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names
from computedomain.dra.allocation import node_named_by
from computedomain.dra.slices import channel_device, daemon_device
from tracker import follow

GROUP, VERSION = "resource.k8s.io", "v1"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# What the scheduler writes for each request, by the DeviceClass the request names.
DEVICE_OF_CLASS = {
    names.CHANNEL_DEVICE_CLASS: channel_device(0, VERSION)["name"],
    names.DAEMON_DEVICE_CLASS: daemon_device(VERSION)["name"],
}
# Answers worth another try: a conflict (re-read first), throttling, an overloaded or restarting server.
RETRY = {409, 429, 500, 502, 503, 504}
T = TypeVar("T")


class Unplaceable(RuntimeError):
    """A pod this double cannot place (no target node, a request of an unknown class)."""


def target_node(pod: dict[str, Any], nodes: Sequence[str]) -> str | None:
    """Where the pod goes: the node its required node affinity names (DaemonSet pods), else the node at
    its Job completion index; None for a pod that names neither."""
    affinity = (pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    node = node_named_by(affinity.get("requiredDuringSchedulingIgnoredDuringExecution"))
    if node is not None:
        return node
    index = (pod["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    if index is not None and int(index) < len(nodes):
        return nodes[int(index)]
    return None


def claim_names(pod: dict[str, Any]) -> list[str] | None:
    """The names of the pod's generated claims, or None while the claim controller has not made them all."""
    wanted = [c["name"] for c in pod["spec"].get("resourceClaims") or []]
    made = {
        s["name"]: s.get("resourceClaimName")
        for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []
    }
    if any(not made.get(name) for name in wanted):
        return None
    return [str(made[name]) for name in wanted]


def allocation(claim: dict[str, Any], node: str) -> dict[str, Any]:
    """The allocation the scheduler would write: one device of our driver's pool on `node` per request."""
    devices = claim["spec"].get("devices") or {}
    results = []
    for request in devices.get("requests") or []:
        device_class = (request.get("exactly") or {}).get("deviceClassName", "")
        if device_class not in DEVICE_OF_CLASS:
            raise Unplaceable(f"claim {claim['metadata']['name']}: request of unknown class {device_class!r}")
        results.append(
            {
                "request": request["name"],
                "driver": names.DRIVER,
                "pool": node,
                "device": DEVICE_OF_CLASS[device_class],
            }
        )
    config = [{"source": "FromClaim", **entry} for entry in devices.get("config") or []]
    return {
        "devices": {"results": results, "config": config},
        "nodeSelector": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        },
    }


async def retried(call: Callable[[], Awaitable[T]], what: str, attempts: int = 30) -> T:
    """`call()`, tried again after a short random wait on an answer worth another try."""
    for attempt in range(attempts - 1):
        try:
            return await call()
        except ApiException as error:
            if error.status not in RETRY:
                raise RuntimeError(f"{what}: {error.status} {error.reason}") from None
        await asyncio.sleep(random.uniform(0.05, 0.1) * min(2**attempt, 20))
    try:
        return await call()
    except ApiException as error:
        raise RuntimeError(f"{what}: {error.status} {error.reason} after {attempts} tries") from None


@dataclass
class SchedulerStandIn:
    """Places every pending pod with claims (see the module docstring); start, then stop when done."""

    api: client.ApiClient
    nodes: Sequence[str]
    concurrency: int = 16
    placed: int = 0
    failures: list[str] = field(default_factory=list)
    _busy: set[str] = field(default_factory=set)
    _done: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _watch: asyncio.Task[None] | None = None
    _slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        """Watch unscheduled pods in every namespace and place each once its claims exist."""
        self._slots = asyncio.Semaphore(self.concurrency)
        core = client.CoreV1Api(self.api)
        self._watch = asyncio.create_task(
            follow(
                core.list_pod_for_all_namespaces,
                (),
                lambda: None,
                self._observe,
                "scheduler stand-in",
                field_selector="spec.nodeName=",
            )
        )

    async def stop(self) -> None:
        """Stop watching and placing."""
        for task in [self._watch, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in [self._watch, *self._tasks] if t), return_exceptions=True)

    def _observe(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if kind == "DELETED" or uid in self._busy or uid in self._done or pod["spec"].get("nodeName"):
            return
        if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        claims = claim_names(pod)
        if not claims:  # none yet, or a pod without claims: not ours to place
            return
        self._busy.add(uid)
        task = asyncio.create_task(self._place(pod, claims))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _place(self, pod: dict[str, Any], claims: list[str]) -> None:
        meta = pod["metadata"]
        where = f"pod {meta['namespace']}/{meta['name']}"
        assert self._slots is not None
        try:
            async with self._slots:
                node = target_node(pod, self.nodes)
                if node is None:
                    raise Unplaceable(f"{where}: no node to place it on")
                for claim in claims:
                    await self._allocate(meta, claim, node)
                await self._bind(meta, node)
            self._done.add(meta["uid"])
            self.placed += 1
        except RuntimeError as error:  # Unplaceable, or an answer that retrying did not mend
            self.failures.append(str(error))
            print(f"    (scheduler stand-in: {error})", flush=True)
        finally:
            self._busy.discard(meta["uid"])

    async def _allocate(self, pod: dict[str, Any], name: str, node: str) -> None:
        custom = client.CustomObjectsApi(self.api)
        namespace = pod["namespace"]
        consumer = {"resource": "pods", "name": pod["name"], "uid": pod["uid"]}

        async def write() -> None:
            response = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "resourceclaims", name, _preload_content=False
            )
            claim = json.loads(await response.read())
            status = claim.setdefault("status", {})
            if not status.get("allocation"):
                status["allocation"] = allocation(claim, node)
            reserved = status.setdefault("reservedFor", [])
            if all(r.get("uid") != pod["uid"] for r in reserved):
                reserved.append(consumer)
            await custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, "resourceclaims", name, claim, _preload_content=False
            )

        await retried(write, f"claim {namespace}/{name}")

    async def _bind(self, pod: dict[str, Any], node: str) -> None:
        core = client.CoreV1Api(self.api)
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod["name"], "namespace": pod["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }

        async def bind() -> None:
            try:
                await core.create_namespaced_pod_binding(
                    pod["name"], pod["namespace"], cast(Any, body), _preload_content=False
                )
            except ApiException as error:
                if error.status != 409:  # 409: already bound (an earlier try landed)
                    raise

        await retried(bind, f"binding of pod {pod['namespace']}/{pod['name']}")
