"""The benchmark scenarios: single, burst, join and idle (each returns printable figures)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.tools import COMPLETE_ANNOTATION
from computedomain.api import names

OPERATOR_NAMESPACE = "computedomain-system"


def domain(name: str, namespace: str, num_nodes: int = 0) -> dict[str, Any]:
    """A minimal ComputeDomain manifest."""
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.DOMAIN_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"numNodes": num_nodes, "channel": {"resourceClaimTemplate": {"name": f"{name}-channel"}}},
    }


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class DomainWatcher:
    """Watches ComputeDomains and records when each first shows its children in place."""

    api: client.ApiClient
    namespace: str
    settled: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _started: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Begin watching (returns once the watch is open)."""
        self._task = asyncio.create_task(self._run())
        await self._started.wait()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while True:
            # A freshly established CRD answers 429 for a moment: ask again rather than hang.
            try:
                listing = await custom.list_namespaced_custom_object(
                    names.GROUP, names.VERSION, self.namespace, names.DOMAIN_PLURAL
                )
                break
            except ApiException as error:
                if error.status != 429:
                    raise
                await asyncio.sleep(0.5)
        version = listing["metadata"]["resourceVersion"]
        self._started.set()
        while True:
            stream = watch.Watch().stream(
                custom.list_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.DOMAIN_PLURAL,
                resource_version=version,
                timeout_seconds=300,
            )
            async for event in stream:
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                self._observe(obj)

    def _observe(self, obj: dict[str, Any]) -> None:
        name, now = obj["metadata"]["name"], time.monotonic()
        status = obj.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if conditions.get("ChildrenReady") == "True":
            self.settled.setdefault(name, now)
        if status.get("status") == "Ready" and status.get("joinedNodes"):
            self.ready.setdefault(name, now)

    async def wait(self, names_: set[str], which: str, timeout: float) -> None:
        """Wait until every named domain reached `which` ("settled" or "ready")."""
        record = self.settled if which == "settled" else self.ready
        deadline = time.monotonic() + timeout
        while not names_ <= record.keys():
            if time.monotonic() > deadline:
                missing = sorted(names_ - record.keys())
                raise TimeoutError(f"{len(missing)} domains not {which} after {timeout:.0f}s: {missing[:3]}")
            await asyncio.sleep(0.05)


async def create_namespace(api: client.ApiClient, name: str) -> None:
    """Create a namespace for a scenario."""
    # The typed client takes plain manifests too; its stubs only know its own models.
    await client.CoreV1Api(api).create_namespace(cast(Any, {"metadata": {"name": name}}))


async def create_pod_namespace(api: client.ApiClient, name: str, timeout: float = 60.0) -> None:
    """Create a namespace for pods that real kubelets run, and wait until it is as one in use is.

    A pod's service-account volume holds the namespace's `kube-root-ca.crt`, which
    kube-controller-manager publishes a moment after the namespace appears; a kubelet given a pod
    before then retries its mount a second later, and that second would be charged to the figures.
    """
    await create_namespace(api, name)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        listing = await core.list_namespaced_config_map(name, field_selector="metadata.name=kube-root-ca.crt")
        if listing.items:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {name}: no kube-root-ca.crt after {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def create_domains(
    api: client.ApiClient, namespace: str, count: int, prefix: str, concurrency: int = 64
) -> dict[str, float]:
    """Create `count` domains as fast as the API server takes them; returns each one's send time."""
    custom = client.CustomObjectsApi(api)
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        name = f"{prefix}-{i:04d}"
        async with gate:
            sent[name] = time.monotonic()
            await custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, domain(name, namespace)
            )

    await asyncio.gather(*(one(i) for i in range(count)))
    return sent


async def count_children(api: client.ApiClient, namespace: str) -> tuple[int, int, int]:
    """(daemon DaemonSets, daemon templates, workload templates in `namespace`) that exist."""
    selector = names.DOMAIN_LABEL
    daemonsets = await client.AppsV1Api(api).list_namespaced_daemon_set(
        OPERATOR_NAMESPACE, label_selector=selector
    )
    custom = client.CustomObjectsApi(api)
    daemon = await custom.list_namespaced_custom_object(
        "resource.k8s.io", "v1", OPERATOR_NAMESPACE, "resourceclaimtemplates", label_selector=selector
    )
    workload = await custom.list_namespaced_custom_object(
        "resource.k8s.io", "v1", namespace, "resourceclaimtemplates", label_selector=selector
    )
    return len(daemonsets.items), len(daemon["items"]), len(workload["items"])


def join_job(name: str, namespace: str, pods: int) -> dict[str, Any]:
    """An Indexed Job of `pods` pods, one per node, each holding the domain's channel claim."""
    labels = {"bench": name}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "completionMode": "Indexed",
            "completions": pods,
            "parallelism": pods,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": labels},
                                }
                            ]
                        }
                    },
                    "containers": [
                        {
                            "name": "worker",
                            "image": "registry.example/train:1",
                            "resources": {"claims": [{"name": "imex-channel"}]},
                        }
                    ],
                    "resourceClaims": [
                        {"name": "imex-channel", "resourceClaimTemplateName": f"{name}-channel"}
                    ],
                },
            },
        },
    }


@dataclass
class DaemonPodWatcher:
    """Watches one domain's daemon pods and records when the last of `count` became Ready."""

    api: client.ApiClient
    uid: str
    count: int
    all_ready: float | None = None
    _ready: set[str] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop watching."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        core = client.CoreV1Api(self.api)
        selector = f"{names.DOMAIN_LABEL}={self.uid}"
        stream = watch.Watch().stream(
            core.list_namespaced_pod, OPERATOR_NAMESPACE, label_selector=selector, timeout_seconds=900
        )
        async for event in stream:
            pod = event["object"]
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if ready and event["type"] != "DELETED":
                self._ready.add(pod.metadata.name)
            else:
                self._ready.discard(pod.metadata.name)
            if self.all_ready is None and len(self._ready) >= self.count:
                self.all_ready = time.monotonic()

    async def wait(self, timeout: float) -> float:
        """Wait until all daemon pods were Ready at once; returns when that was first seen."""
        deadline = time.monotonic() + timeout
        while self.all_ready is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._ready)}/{self.count} daemon pods ready after {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return self.all_ready


async def finish_job(api: client.ApiClient, namespace: str, name: str) -> None:
    """Play the workload's exit: every pod of the Job completes."""
    core = client.CoreV1Api(api)
    pods = await core.list_namespaced_pod(namespace, label_selector=f"bench={name}")
    patch = {"metadata": {"annotations": {COMPLETE_ANNOTATION: "true"}}}
    await asyncio.gather(*(core.patch_namespaced_pod(p.metadata.name, namespace, patch) for p in pods.items))


def latency_figures(sent: dict[str, float], seen: dict[str, float]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds of seen - sent."""
    values = [(seen[name] - sent[name]) * 1000 for name in sent]
    return percentile(values, 0.5), percentile(values, 0.99), max(values)


def mean(values: list[float]) -> float:
    """Arithmetic mean (0 for no values)."""
    return statistics.fmean(values) if values else 0.0
