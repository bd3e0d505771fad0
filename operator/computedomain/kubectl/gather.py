"""Reading one domain's world from the API server into a `Snapshot` (reads only, never a write).

Every list is narrowed on the server (the domain label, a field selector) so that the cost follows the
domain, not the cluster: the domain's daemon pods, clique objects, member nodes and claims by the
domain label, Events by the involved object's kind or UID, the workload's pods by phase. Logs are read
only of the few pods whose container keeps exiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import replace

from computedomain.api import names
from computedomain.kube import (
    CLIQUES,
    DAEMONSETS,
    DOMAINS,
    EVENTS,
    NODES,
    PODS,
    Kube,
    KubeError,
    Object,
    claims,
)
from computedomain.kube.discovery import discover_resource_version
from computedomain.kube.retry import RetryPolicy
from computedomain.kubectl.snapshot import (
    NodeInfo,
    PodInfo,
    Snapshot,
    claim_info,
    domain_facts,
    event_info,
    node_info,
    pod_info,
    slots_of,
)

PLUGIN_SELECTOR = "app.kubernetes.io/component=kubelet-plugin"
# A command-line tool waits a little for an API server that blinks, not minutes.
_POLICY = RetryPolicy(initial=0.2, maximum=1.0)
_DISCOVERY_SECONDS = 10.0
# Logs and nodes read one request each: bounded, as a domain may have thousands of nodes.
_LOGS_READ = 5
_NODES_READ = 50
_LOG_LINES = 5


async def gather(kube: Kube, namespace: str, name: str, operator_namespace: str) -> Snapshot | None:
    """The domain `namespace/name` and what belongs to it; None when no such domain exists."""
    domain = await kube.get(DOMAINS, name, namespace)
    if domain is None:
        return None
    facts = domain_facts(domain)
    uid = facts["uid"]
    selector = f"{names.DOMAIN_LABEL}={uid}"
    version = await discover_resource_version(
        kube, policy=_POLICY, deadline=time.monotonic() + _DISCOVERY_SECONDS
    )
    daemonset = await kube.get(DAEMONSETS, names.daemon_name(uid), operator_namespace, metadata_only=True)
    listed = await asyncio.gather(
        kube.list(CLIQUES, operator_namespace, selector),
        kube.list(PODS, operator_namespace, selector),
        kube.list(claims(version), namespace, selector) if version else _nothing(),
        kube.list(NODES, label_selector=selector, metadata_only=True),
        kube.list(PODS, operator_namespace, PLUGIN_SELECTOR),
        kube.list(PODS, namespace, field_selector="status.phase=Pending"),
        kube.list(EVENTS, namespace, field_selector=f"involvedObject.uid={uid}"),
        kube.list(EVENTS, namespace, field_selector="involvedObject.kind=Pod"),
        # Daemon pods' and the node agent's Events about nodes: the operator's namespace holds both.
        kube.list(EVENTS, operator_namespace),
    )
    (
        cliques,
        daemon_pods,
        claim_items,
        members,
        plugin_pods,
        pending,
        domain_events,
        workload_events,
        operator_events,
    ) = (items for items, _ in listed)
    claim_facts = tuple(claim_info(c) for c in claim_items)
    workload = {pod for claim in claim_facts for pod in claim.pods}
    pods = [pod_info(p) for p in daemon_pods]
    daemon_uids = {p.uid for p in pods}
    nodes = {info.name: info for info in (node_info(n) for n in members)}
    named = {*(n.get("name", "") for n in (domain.get("status") or {}).get("nodes") or [])}
    named |= {c.node for c in claim_facts if c.node}
    nodes |= await _nodes(kube, sorted(n for n in named if n and n not in nodes))
    stuck = [p for p in pods if p.restarts and not p.ready][:_LOGS_READ]
    pods = [p for p in pods if p not in stuck] + await _with_logs(kube, stuck, names.DAEMON_CONTAINER)
    plugins = {p.node: p for p in (pod_info(p) for p in plugin_pods) if p.node in {*nodes, *named}}
    failing = [p for p in plugins.values() if not p.ready][:_LOGS_READ]
    plugins |= {p.node: p for p in await _with_logs(kube, failing, None)}
    events = [event_info(e) for e in domain_events]
    events += [e for e in map(event_info, workload_events) if e.name in workload]
    events += [
        e
        for e in map(event_info, operator_events)
        if (e.kind == "Pod" and e.uid in daemon_uids) or (e.kind == "Node" and e.name in nodes)
    ]
    return Snapshot(
        **facts,
        operator_namespace=operator_namespace,
        daemonset_exists=daemonset is not None,
        slots=slots_of(cliques),
        daemon_pods=tuple(pods),
        claims=claim_facts,
        pending_pods=tuple(pod_info(p) for p in pending if p["metadata"]["name"] in workload),
        node_info=nodes,
        plugin_pods=plugins,
        events=tuple(events),
    )


async def _nothing() -> tuple[list[Object], str]:
    return [], ""


async def _nodes(kube: Kube, wanted: Iterable[str]) -> dict[str, NodeInfo]:
    """Nodes the domain names that do not carry its label (another domain's, or not labelled yet)."""
    read = await asyncio.gather(*(kube.get(NODES, n, metadata_only=True) for n in list(wanted)[:_NODES_READ]))
    return {info.name: info for info in (node_info(n) for n in read if n is not None)}


async def _with_logs(kube: Kube, pods: Iterable[PodInfo], container: str | None) -> list[PodInfo]:
    async def one(pod: PodInfo) -> PodInfo:
        tail = await _log_tail(kube, pod, container, previous=True)
        if not tail:
            tail = await _log_tail(kube, pod, container, previous=False)
        return replace(pod, log_tail=tail)

    reads: list[Awaitable[PodInfo]] = [one(p) for p in pods]
    return list(await asyncio.gather(*reads))


async def _log_tail(kube: Kube, pod: PodInfo, container: str | None, *, previous: bool) -> str:
    """The last lines of a pod's container log ('' when there is none to read)."""
    query = {"tailLines": str(_LOG_LINES), "previous": "true" if previous else "false"}
    if container:
        query["container"] = container
    path = f"{PODS.path(pod.namespace, pod.name)}/log"
    try:
        response = await kube.request("GET", path, query=query, accept="text/plain", timeout=10.0)
    except KubeError:
        # No previous container, a node whose kubelet does not answer: the state alone must do.
        return ""
    async with response:
        return await response.text(errors="replace")
