"""Helpers for tests that drive ComputeDomains on a control plane: create domains and workloads, read
what the controller made of them, and wait until a domain has left nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from computedomain.api import names
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


DOMAINS_CRD = f"{names.DOMAIN_PLURAL}.{names.GROUP}"
# Status fields of ours that NVIDIA's CRD lacks: an outdated CRD prunes them.
OUR_STATUS_FIELDS = (
    "conditions",
    "observedGeneration",
    "readyNodes",
    "joinedNodes",
    "cliqueCount",
    "nodeSummary",
)


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

    async def create_namespace(self, name: str) -> str:
        """Create a namespace and wait until pods can be admitted there (its default ServiceAccount)."""
        await self.core.create_namespace(cast(Any, {"metadata": {"name": name}}))

        async def default_account() -> bool:
            accounts = await self.core.list_namespaced_service_account(name)
            return any(a.metadata.name == "default" for a in accounts.items)

        await eventually(default_account, timeout=60, what=f"default ServiceAccount in {name}")
        return name

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
        # `_content_type` is a keyword the generated client takes but does not declare.
        custom: Any = self.custom
        body: Object = await custom.patch_namespaced_custom_object(
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
        self, namespace: str, name: str, check: Callable[[Object], bool], what: str, timeout: float = 60.0
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

        async def listing() -> Object | None:
            try:
                if namespace is None:
                    found: Object = await self.custom.list_cluster_custom_object(
                        group, version, plural, label_selector=selector
                    )
                else:
                    found = await self.custom.list_namespaced_custom_object(
                        group, version, namespace, plural, label_selector=selector
                    )
            except ApiException as error:
                # 429 "storage is (re)initializing": a kind nobody has listed since its CRD arrived.
                if error.status == 429:
                    return None
                raise
            return found

        result = await eventually(listing, timeout=30, what=f"a list of {plural}")
        items: list[Object] = result["items"]
        return items

    async def cliques(self, uid: str) -> dict[str, list[tuple[str, int]]]:
        """Clique ID -> [(node, index)] sorted by index, of the domain's ComputeDomainCliques
        (an index the controller left out shows as -2)."""
        result: dict[str, list[tuple[str, int]]] = {}
        for clique in await self.labelled(names.CLIQUE_PLURAL, uid, self.operator_namespace):
            clique_id = clique["metadata"]["labels"][names.CLIQUE_LABEL]
            daemons = [(str(d["nodeName"]), int(d.get("index", -2))) for d in clique.get("daemons") or []]
            result[clique_id] = sorted(daemons, key=lambda d: (d[1], d[0]))
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
            await self.core.create_namespaced_pod(
                namespace, cast(Any, workload_pod(name, namespace, template, node))
            )
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
