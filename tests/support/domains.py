"""Helpers for tests that drive ComputeDomains on a control plane: create domains and workloads, read
what the controller made of them, and wait until a domain has left nothing behind."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names
from computedomain.testbed.controller_process import ControllerProcess
from computedomain.testbed.tools import Tools, repo_root
from support.waiting import eventually

Object = dict[str, Any]
RESOURCE_GROUP = "resource.k8s.io"
RESOURCE_VERSION = "v1"
# A domain UID that no ComputeDomain ever has: for objects that must look foreign or orphaned.
FOREIGN_UID = "00000000-0000-4000-8000-0000000000f0"
WORKLOAD_IMAGE = "registry.example/trainer:1"


def unique(prefix: str) -> str:
    """A name that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def domain_manifest(
    name: str, namespace: str, template: str | None = None, num_nodes: int | None = None, **channel: Any
) -> Object:
    """A ComputeDomain whose channel template is `template` (default `<name>-channel`)."""
    spec: Object = {"channel": {"resourceClaimTemplate": {"name": template or f"{name}-channel"}, **channel}}
    if num_nodes is not None:
        spec["numNodes"] = num_nodes
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.DOMAIN_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def workload_pod(name: str, namespace: str, template: str, node: str) -> Object:
    """A pod pinned (by node selector, so the scheduler still allocates its claim) to `node`, claiming
    the domain's channel template."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "workload"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "resourceClaims": [{"name": "imex-channel", "resourceClaimTemplateName": template}],
            "containers": [
                {
                    "name": "trainer",
                    "image": WORKLOAD_IMAGE,
                    "resources": {"claims": [{"name": "imex-channel"}]},
                }
            ],
        },
    }


def condition(body: Object | None, kind: str = "Ready") -> Object:
    """One condition of a domain's status ({} when absent)."""
    conditions = ((body or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def example(folder: str) -> list[Object]:
    """Every document of every manifest in `examples/<folder>`, namespace first, as committed."""
    documents: list[Object] = []
    for path in sorted(Path(repo_root() / "examples" / folder).glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return sorted(documents, key=lambda d: d["kind"] != "Namespace")


@dataclass
class Cluster:
    """Typed shortcuts over one API client, for one operator namespace."""

    api: client.ApiClient
    operator_namespace: str

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    # --- ComputeDomains ---------------------------------------------------------------------------

    async def create_domain(self, manifest: Object) -> Object:
        """Create a ComputeDomain and return it as the server stored it."""
        namespace = manifest["metadata"]["namespace"]
        created: Object = await self.custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, manifest
        )
        return created

    async def domain(self, namespace: str, name: str) -> Object | None:
        """A ComputeDomain, or None when it does not exist."""
        try:
            body: Object = await self.custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def patch_domain(self, namespace: str, name: str, patch: Object) -> Object:
        """Merge-patch a ComputeDomain."""
        body: Object = await self.custom.patch_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            namespace,
            names.DOMAIN_PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )
        return body

    async def wait_domain(
        self, namespace: str, name: str, check: Any, what: str, timeout: float = 60.0
    ) -> Object:
        """Wait until `check(domain)` is true; returns the domain."""

        async def probe() -> Object | None:
            body = await self.domain(namespace, name)
            return body if body is not None and check(body) else None

        result: Object = await eventually(probe, timeout=timeout, what=f"{namespace}/{name}: {what}")
        return result

    async def wait_reconciled(self, namespace: str, name: str, timeout: float = 60.0) -> Object:
        """Wait until the controller has put its finalizer and a status for the current generation."""

        def done(body: Object) -> bool:
            status = body.get("status") or {}
            return (
                names.FINALIZER in (body["metadata"].get("finalizers") or [])
                and status.get("observedGeneration") == body["metadata"]["generation"]
                and bool(condition(body))
            )

        return await self.wait_domain(namespace, name, done, "reconciled", timeout)

    async def wait_nodes(
        self, namespace: str, name: str, nodes: Iterable[str], ready: bool = True, timeout: float = 90.0
    ) -> Object:
        """Wait until the domain's status lists exactly `nodes` (all with Ready daemons if `ready`)."""
        wanted = sorted(nodes)

        def done(body: Object) -> bool:
            entries = (body.get("status") or {}).get("nodes") or []
            if sorted(e["name"] for e in entries) != wanted:
                return False
            return not ready or all(e.get("status") == "Ready" for e in entries)

        return await self.wait_domain(namespace, name, done, f"status.nodes == {wanted}", timeout)

    async def delete_domain(self, namespace: str, name: str, timeout: float = 60.0) -> None:
        """Delete a ComputeDomain and wait until it is gone (the controller has finalized it)."""
        try:
            await self.custom.delete_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

        async def gone() -> bool:
            return await self.domain(namespace, name) is None

        await eventually(gone, timeout=timeout, what=f"ComputeDomain {namespace}/{name} deleted")

    # --- What the controller made of a domain -------------------------------------------------------

    async def daemonset(self, uid: str) -> Object | None:
        """The domain's DaemonSet as a plain dict, or None."""
        try:
            # The generic client returns the server's JSON as it is (no model round trip).
            body: Object = await self.custom.get_namespaced_custom_object(
                "apps", "v1", self.operator_namespace, "daemonsets", names.daemon_name(uid)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def claim_template(self, namespace: str, name: str) -> Object | None:
        """A ResourceClaimTemplate, or None."""
        try:
            body: Object = await self.custom.get_namespaced_custom_object(
                RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaimtemplates", name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return body

    async def labelled(self, plural: str, uid: str, namespace: str | None = None) -> list[Object]:
        """Objects of a `resource.k8s.io` or ComputeDomain kind that carry the domain label `uid`."""
        group = RESOURCE_GROUP if plural.startswith("resource") else names.GROUP
        version = RESOURCE_VERSION if group == RESOURCE_GROUP else names.VERSION
        selector = f"{names.DOMAIN_LABEL}={uid}"
        if namespace is None:
            listing = await self.custom.list_cluster_custom_object(
                group, version, plural, label_selector=selector
            )
        else:
            listing = await self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, label_selector=selector
            )
        items: list[Object] = listing["items"]
        return items

    async def cliques(self, uid: str) -> dict[str, list[tuple[str, int | None]]]:
        """Clique ID -> [(node, index)] sorted by index, of the domain's ComputeDomainCliques."""
        result: dict[str, list[tuple[str, int | None]]] = {}
        for clique in await self.labelled(names.CLIQUE_PLURAL, uid, self.operator_namespace):
            clique_id = clique["metadata"]["labels"][names.CLIQUE_LABEL]
            daemons = [(d["nodeName"], d.get("index")) for d in clique.get("daemons") or []]
            result[clique_id] = sorted(daemons, key=lambda d: (d[1] is None, d[1] or 0, d[0]))
        return result

    async def labelled_nodes(self, uid: str) -> list[str]:
        """Nodes that carry the domain label `uid`, sorted."""
        nodes = await self.core.list_node(label_selector=f"{names.DOMAIN_LABEL}={uid}")
        return sorted(n.metadata.name for n in nodes.items)

    async def node_label(self, node: str) -> str | None:
        """The domain label of one node, if any."""
        body = await self.core.read_node(node)
        value = (body.metadata.labels or {}).get(names.DOMAIN_LABEL)
        return str(value) if value is not None else None

    async def daemon_pods(self, uid: str) -> list[Object]:
        """The domain's daemon pods (not yet being deleted) as plain dicts."""
        pods = await self.core.list_namespaced_pod(
            self.operator_namespace, label_selector=f"{names.DOMAIN_LABEL}={uid}"
        )
        return [
            self.api.sanitize_for_serialization(p) for p in pods.items if not p.metadata.deletion_timestamp
        ]

    async def daemon_nodes(self, uid: str) -> list[str]:
        """Nodes where a daemon pod of the domain runs, sorted."""
        return sorted(p["spec"].get("nodeName", "") for p in await self.daemon_pods(uid))

    async def events(self, namespace: str, name: str) -> list[Object]:
        """Events about the ComputeDomain `namespace/name`, as plain dicts."""
        listing = await self.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind={names.DOMAIN_KIND},involvedObject.name={name}",
        )
        return [self.api.sanitize_for_serialization(e) for e in listing.items]

    async def wait_event(self, namespace: str, name: str, reason: str, kind: str = "Warning") -> Object:
        """Wait for an Event of `reason` and type `kind` about the domain; returns it."""

        async def probe() -> Object | None:
            found = [
                e for e in await self.events(namespace, name) if e["reason"] == reason and e["type"] == kind
            ]
            return found[0] if found else None

        event: Object = await eventually(probe, timeout=60, what=f"{kind} Event {reason} on {name}")
        return event

    async def leftovers(self, uid: str) -> list[str]:
        """Everything that still carries the domain's UID: DaemonSet, templates, cliques, node labels."""
        found = []
        if await self.daemonset(uid) is not None:
            found.append(f"DaemonSet {names.daemon_name(uid)}")
        found += [
            f"ResourceClaimTemplate {t['metadata']['namespace']}/{t['metadata']['name']}"
            for t in await self.labelled("resourceclaimtemplates", uid)
        ]
        found += [
            f"ComputeDomainClique {c['metadata']['name']}"
            for c in await self.labelled(names.CLIQUE_PLURAL, uid)
        ]
        found += [f"label on node {n}" for n in await self.labelled_nodes(uid)]
        return found

    async def wait_nothing_left(self, uid: str, timeout: float = 60.0) -> None:
        """Wait until nothing carries the domain's UID any more."""

        async def clean() -> bool:
            return not await self.leftovers(uid)

        await eventually(clean, timeout=timeout, what=f"every object of domain {uid} removed")

    # --- Workloads ----------------------------------------------------------------------------------

    async def start_workload(self, namespace: str, template: str, nodes: Sequence[str]) -> list[str]:
        """One workload pod per node, each claiming `template`; returns the pod names."""
        pods = []
        for node in nodes:
            name = unique(f"w-{node}")
            await self.core.create_namespaced_pod(namespace, workload_pod(name, namespace, template, node))
            pods.append(name)
        return pods

    async def allocated_nodes(self, namespace: str) -> list[str]:
        """Nodes of the allocated ResourceClaims in `namespace`, sorted."""
        listing = await self.custom.list_namespaced_custom_object(
            RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims"
        )
        nodes = []
        for claim in listing["items"]:
            allocation = (claim.get("status") or {}).get("allocation") or {}
            for result in (allocation.get("devices") or {}).get("results") or []:
                if result.get("driver") == names.DRIVER:
                    nodes.append(str(result["pool"]))
        return sorted(nodes)

    async def stop_workload(self, namespace: str, pods: Iterable[str], timeout: float = 90.0) -> None:
        """Delete workload pods and wait until they and their claims are gone (their nodes are free)."""
        pods = list(pods)
        for pod in pods:
            try:
                await self.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
            except ApiException as error:
                if error.status != 404:
                    raise

        async def gone() -> bool:
            left = {p.metadata.name for p in (await self.core.list_namespaced_pod(namespace)).items}
            if left & set(pods):
                return False
            listing = await self.custom.list_namespaced_custom_object(
                RESOURCE_GROUP, RESOURCE_VERSION, namespace, "resourceclaims"
            )
            owners = {
                ref.get("name")
                for claim in listing["items"]
                for ref in claim["metadata"].get("ownerReferences") or []
            }
            return not owners & set(pods)

        await eventually(gone, timeout=timeout, what=f"workload pods {pods[:3]}... and their claims gone")


class StatusChanges:
    """Counts how often a domain's status changes, from a watch started before the change begins.

    The controller writes a status only when it differs from the live one, so each change seen here
    is one status write.
    """

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self.count = 0
        # "ready/expected" of each status seen, for a failure message.
        self.history: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start watching from the domain's current version."""
        body = await self.cluster.domain(self.namespace, self.name)
        assert body is not None, f"{self.name} does not exist"
        response = await self.cluster.custom.list_namespaced_custom_object(
            names.GROUP,
            names.VERSION,
            self.namespace,
            names.DOMAIN_PLURAL,
            field_selector=f"metadata.name={self.name}",
            watch=True,
            resource_version=body["metadata"]["resourceVersion"],
            timeout_seconds=600,
            _preload_content=False,
        )
        self._task = asyncio.create_task(self._count(response, body.get("status")))

    async def _count(self, response: Any, status: Any) -> None:
        async with response:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                new = (event.get("object") or {}).get("status")
                if event.get("type") == "MODIFIED" and new != status:
                    self.count += 1
                    self.history.append(f"{(new or {}).get('nodeSummary')}@{time.monotonic():.2f}")
                    status = new

    async def stop(self) -> int:
        """Stop watching; returns the number of status changes seen."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.count


async def quiet(controller: ControllerProcess, seconds: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until the controller neither reconciles nor writes for `seconds` (it has settled)."""
    last: list[float] = []

    async def probe() -> bool:
        now = [controller.metric(RECONCILES), controller.metric(WRITES)]
        settled = now == last
        last[:] = now
        return settled

    await eventually(probe, timeout=timeout, interval=seconds, what="the controller to settle")


RECONCILES = "computedomain_reconcile_total"
WRITES = "computedomain_api_writes_total"


async def kubectl(kubeconfig: Path, *args: str) -> str:
    """Run the test bed's kubectl; returns stdout (raises with stderr on failure)."""
    process = await asyncio.create_subprocess_exec(
        str(Tools.default().bin("kubectl")),
        f"--kubeconfig={kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode()}")
    return out.decode()


async def create_manifest(api: client.ApiClient, manifest: Object) -> None:
    """Create one object of the kinds the examples hold, exactly as written."""
    kind, namespace = manifest["kind"], manifest["metadata"].get("namespace", "")
    core = client.CoreV1Api(api)
    if kind == "Namespace":
        await core.create_namespace(manifest)
    elif kind == "Service":
        await core.create_namespaced_service(namespace, manifest)
    elif kind == "Job":
        await client.BatchV1Api(api).create_namespaced_job(namespace, manifest)
    elif kind == names.DOMAIN_KIND:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, manifest
        )
    else:
        raise ValueError(f"no way to create a {kind} here")


async def delete_namespace(api: client.ApiClient, name: str, timeout: float = 120.0) -> None:
    """Delete a namespace (if it exists) and wait until it is gone."""
    core = client.CoreV1Api(api)
    try:
        await core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise

    async def gone() -> bool:
        try:
            await core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    await eventually(gone, timeout=timeout, what=f"namespace {name} deleted")
