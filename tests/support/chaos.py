"""Helpers for tests that break things under the controller: bursts of domains, an inventory of every
object that carries a domain label, and the checks that follow every storm (nothing leaked, nothing
duplicated, every domain converged)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes_asyncio import config
from kubernetes_asyncio.client.exceptions import ApiException

from cdtestbed.cluster import ClusterOptions, LocalCluster
from cdtestbed.controller_process import ControllerProcess
from cdtestbed.install import prepare_operator
from cdtestbed.nodes import add_ready_nodes
from cdtestbed.topology import FakeNode
from computedomain.api import names
from conftest import controller_env
from support.domains import RESOURCE_GROUP, RESOURCE_VERSION, Cluster, condition, domain_manifest
from support.testbed import local_cluster
from support.waiting import eventually

Object = dict[str, Any]
OPERATOR_NAMESPACE = "computedomain-system"

# `make chaos` sets CHAOS_SCALE above 1 for bigger bursts and longer outages; CI runs the default.
SCALE = float(os.environ.get("CHAOS_SCALE", "1") or "1")


def scaled(count: float) -> int:
    """`count` grown by CHAOS_SCALE (at least 1)."""
    return max(1, round(count * SCALE))


def scaled_seconds(seconds: float, cap: float = 30.0) -> float:
    """A duration grown by CHAOS_SCALE, at most `cap`."""
    return min(cap, seconds * SCALE)


def replica(
    cluster: LocalCluster, namespace: str, pod_name: str, lease: str, user: str | None = None, **env: str
) -> ControllerProcess:
    """A controller process with leader election on `lease`, logging to `<logs>/<pod_name>.log`; with
    `user`, it talks to the API server as that user (so the audit log tells replicas apart)."""
    kubeconfig = cluster.kubeconfig_for(user, ("system:masters",)) if user else cluster.kubeconfig
    settings = controller_env(namespace, POD_NAME=pod_name, LEADER_ELECTION="true", LEASE_NAME=lease)
    settings.update(env)
    return ControllerProcess(kubeconfig, cluster.logs / f"{pod_name}.log", settings)


async def create_burst(cluster: Cluster, namespace: str, prefix: str, count: int) -> list[str]:
    """Create `count` domains at once; returns their names."""
    wanted = [f"{prefix}-{i:03d}" for i in range(count)]
    await asyncio.gather(*(cluster.create_domain(domain_manifest(name, namespace)) for name in wanted))
    return wanted


async def delete_burst(cluster: Cluster, namespace: str, domains: Iterable[str]) -> None:
    """Ask for the deletion of every named domain at once (without waiting for it)."""

    async def delete(name: str) -> None:
        try:
            await cluster.custom.delete_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    await asyncio.gather(*(delete(name) for name in domains))


@dataclass
class Inventory:
    """Every live domain and every object that carries a domain label, by domain UID."""

    domains: dict[str, Object] = field(default_factory=dict)
    daemonsets: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    templates: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    cliques: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    node_labels: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def leaks(self) -> list[str]:
        """Objects whose domain no longer exists."""
        found = []
        for what, index in self._indexes():
            for uid, objects in index.items():
                if uid not in self.domains:
                    found += [f"{what} {name} of vanished domain {uid}" for name in objects]
        return found

    def duplicates(self) -> list[str]:
        """Domains with more than one DaemonSet, more than its two templates, or two cliques of one ID."""
        found = []
        for uid, sets in self.daemonsets.items():
            if len(sets) > 1:
                found.append(f"{len(sets)} DaemonSets for {uid}: {sets}")
        for uid, templates in self.templates.items():
            if len(templates) > 2:
                found.append(f"{len(templates)} templates for {uid}: {templates}")
        for uid, cliques in self.cliques.items():
            if len(set(cliques)) != len(cliques):
                found.append(f"repeated cliques for {uid}: {cliques}")
        return found

    def unconverged(self, namespace: str | None = None) -> list[str]:
        """Domains (of `namespace`, or all) that are not Ready with their children in place."""
        found = []
        for uid, body in self.domains.items():
            meta = body["metadata"]
            if namespace is not None and meta["namespace"] != namespace:
                continue
            why = _not_converged(body, len(self.daemonsets.get(uid, ())), len(self.templates.get(uid, ())))
            if why:
                found.append(f"{meta['namespace']}/{meta['name']}: {why}")
        return found

    def _indexes(self) -> list[tuple[str, dict[str, list[str]]]]:
        return [
            ("DaemonSet", self.daemonsets),
            ("ResourceClaimTemplate", self.templates),
            ("ComputeDomainClique", self.cliques),
            ("label on node", self.node_labels),
        ]


def _not_converged(body: Object, daemonsets: int, templates: int) -> str:
    meta = body["metadata"]
    status = body.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "being deleted"
    if names.FINALIZER not in (meta.get("finalizers") or []):
        return "no finalizer"
    if status.get("observedGeneration") != meta.get("generation"):
        return f"status for generation {status.get('observedGeneration')} of {meta.get('generation')}"
    if condition(body, "ChildrenReady").get("status") != "True":
        return f"ChildrenReady={condition(body, 'ChildrenReady')}"
    if daemonsets != 1 or templates != 2:
        return f"{daemonsets} DaemonSets and {templates} templates"
    return ""


def _by_uid(items: Iterable[Object], index: dict[str, list[str]]) -> None:
    for item in items:
        meta = item["metadata"]
        uid = (meta.get("labels") or {}).get(names.DOMAIN_LABEL, "")
        name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        index[uid].append(name)


async def _list(cluster: Cluster, group: str, version: str, plural: str, **query: Any) -> list[Object]:
    async def listing() -> list[Object] | None:
        try:
            found: Object = await cluster.custom.list_cluster_custom_object(group, version, plural, **query)
        except ApiException as error:
            if error.status in (429, 500, 503):  # storage re-initializing after a restart
                return None
            raise
        items: list[Object] = found["items"]
        return items

    result: list[Object] = await eventually(listing, timeout=60, what=f"a list of {plural}")
    return result


async def inventory(cluster: Cluster) -> Inventory:
    """What the cluster holds now."""
    selector = names.DOMAIN_LABEL
    found = Inventory()
    for body in await _list(cluster, names.GROUP, names.VERSION, names.DOMAIN_PLURAL):
        found.domains[str(body["metadata"]["uid"])] = body
    _by_uid(await _list(cluster, "apps", "v1", "daemonsets", label_selector=selector), found.daemonsets)
    _by_uid(
        await _list(
            cluster, RESOURCE_GROUP, RESOURCE_VERSION, "resourceclaimtemplates", label_selector=selector
        ),
        found.templates,
    )
    _by_uid(
        await _list(cluster, names.GROUP, names.VERSION, names.CLIQUE_PLURAL, label_selector=selector),
        found.cliques,
    )
    nodes = await cluster.core.list_node(label_selector=selector)
    _by_uid((cluster.api.sanitize_for_serialization(n) for n in nodes.items), found.node_labels)
    return found


async def wait_settled(cluster: Cluster, namespace: str, count: int, timeout: float = 120.0) -> float:
    """Wait until `namespace` holds exactly `count` domains, all converged, and nothing anywhere has
    leaked or doubled; returns the seconds it took. Fails with what was still wrong."""
    started = time.monotonic()
    last: list[str] = []

    async def settled() -> bool:
        found = await inventory(cluster)
        mine = [b for b in found.domains.values() if b["metadata"]["namespace"] == namespace]
        last[:] = found.leaks() + found.duplicates() + found.unconverged(namespace)
        if len(mine) != count:
            last.insert(0, f"{len(mine)} domains in {namespace}, want {count}")
        return not last

    try:
        await eventually(settled, timeout=timeout, interval=0.5, what=f"{namespace} to settle")
    except AssertionError as error:
        raise AssertionError(f"{error}\nstill wrong ({len(last)}): {last[:10]}") from None
    return time.monotonic() - started


async def wait_burst_under_way(cluster: Cluster, namespace: str, timeout: float = 60.0) -> None:
    """Wait until the controller has begun on a burst in `namespace`: some domain has its finalizer.

    Chaos that should strike in the middle of a burst waits for this rather than a fixed delay.
    """

    async def begun() -> bool:
        listed = await cluster.custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.DOMAIN_PLURAL
        )
        return any(names.FINALIZER in (d["metadata"].get("finalizers") or []) for d in listed["items"])

    await eventually(begun, timeout=timeout, interval=0.05, what=f"the controller at work in {namespace}")


def writes_by(audit_log: Path, user: str, since: float, until: float | None = None) -> list[str]:
    """Writes (not to Leases) the API server received from `user` between two wall-clock times."""
    found: list[str] = []
    if not audit_log.exists():
        return found
    for line in audit_log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != user:
            continue
        if event.get("verb") in ("get", "list", "watch"):
            continue
        resource = (event.get("objectRef") or {}).get("resource", "")
        if resource == "leases":
            continue
        stamp = _epoch(str(event.get("requestReceivedTimestamp", "")))
        if stamp >= since and (until is None or stamp <= until):
            code = (event.get("responseStatus") or {}).get("code")
            found.append(
                f"{event['verb']} {resource} {(event.get('objectRef') or {}).get('name', '')} -> {code}"
            )
    return found


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def report(scenario: str, **figures: Any) -> None:
    """Print a scenario's figures on one line (pytest -s, or the captured output of a failure)."""
    shown = " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\nCHAOS {scenario}: {shown}", flush=True)


@contextmanager
def chaos_plane(prefix: str, *, nodes: bool = False, audit: bool = False) -> Iterator[LocalCluster]:
    """A private control plane for one chaos module (its API server and etcd get restarted). Without
    `nodes` it runs no scheduler, controller manager or KWOK: domains without nodes need none."""
    with local_cluster(ClusterOptions(controllers=nodes, audit=audit), prefix=prefix) as cluster:
        yield cluster


@asynccontextmanager
async def admin_of(cluster: LocalCluster, nodes: Sequence[FakeNode] = ()) -> AsyncIterator[Cluster]:
    """An admin client with the operator's prerequisites (and `nodes`, Ready) in place."""
    async with await config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api:
        if nodes:
            await add_ready_nodes(api, nodes)
        await prepare_operator(api, OPERATOR_NAMESPACE, [n.name for n in nodes])
        yield Cluster(api, OPERATOR_NAMESPACE)


async def plain_namespace(cluster: Cluster, name: str) -> str:
    """Create a namespace for domains (without waiting for a ServiceAccount no pod here needs)."""
    await cluster.core.create_namespace(cast(Any, {"metadata": {"name": name}}))
    return name
