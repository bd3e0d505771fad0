"""The `join` scale scenario: one domain over every fake node, joined by an Indexed Job of one pod per
node. Prints where the time goes (phases), what the controller wrote, the largest object it wrote, and
what one node's watchers receive while the others join (fan-out)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client

import audit
import guards
import procstats
import run
import scenarios as sc
from computedomain.api import names
from computedomain.objects import pod_ready
from fanoutprobe import FanoutProbe
from standin import SchedulerStandIn
from tracker import Tracker, claim_allocated, pod_scheduled

NAMESPACE = "bench-join"
DOMAIN = "big"
JOB_PODS = f"bench={DOMAIN}"
OPERATOR = sc.OPERATOR_NAMESPACE
# etcd's default --max-request-bytes: no object can be stored larger.
ETCD_LIMIT = 1536 * 1024


@dataclass
class Phases:
    """Moments of the join (monotonic seconds), printed relative to the Job's creation."""

    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, name: str, at: float | None = None) -> None:
        """Record that `name` happened at `at` (now by default)."""
        self.marks.append((name, time.monotonic() if at is None else at))

    def print(self, zero: str) -> None:
        """The timeline, each moment relative to the one named `zero`, in order."""
        origin = dict(self.marks)[zero]
        print(f"    phases (seconds from {zero}):", flush=True)
        for name, at in sorted(self.marks, key=lambda m: m[1]):
            print(f"      {at - origin:>+9.1f}  {name}", flush=True)


def job_without_anti_affinity(pods: int) -> dict[str, Any]:
    """The join Job without pod anti-affinity: each node offers one channel device, so DRA alone puts
    one pod per node and the scheduler skips the costly inter-pod affinity checks."""
    job = sc.join_job(DOMAIN, NAMESPACE, pods)
    del job["spec"]["template"]["spec"]["affinity"]
    return job


async def raw_get(call: Any, *args: Any) -> Any:
    """A GET's JSON as stored (managedFields included), without model objects."""
    response = await call(*args, _preload_content=False)
    return json.loads(await response.read())


async def object_sizes(bench: run.Bench, uid: str, nodes: int) -> None:
    """Report the bytes of the domain (and its status) and of its largest ComputeDomainClique."""
    custom = client.CustomObjectsApi(bench.api)
    domain = await raw_get(
        custom.get_namespaced_custom_object,
        names.GROUP,
        names.VERSION,
        NAMESPACE,
        names.DOMAIN_PLURAL,
        DOMAIN,
    )
    response = await custom.list_namespaced_custom_object(
        names.GROUP,
        names.VERSION,
        sc.OPERATOR_NAMESPACE,
        names.CLIQUE_PLURAL,
        label_selector=f"{names.DOMAIN_LABEL}={uid}",
        _preload_content=False,
    )
    cliques = json.loads(await response.read())["items"]
    size = procstats.stored_size(domain)
    managed = procstats.stored_size(domain["metadata"].get("managedFields"))
    bench.report("join: domain object size (with managedFields)", f"{size} B")
    bench.report("join: domain status size", f"{procstats.stored_size(domain.get('status'))} B")
    bench.report("join: domain managedFields size", f"{managed} B")
    bench.report("join: domain bytes per node", f"{size / nodes:.0f} B", f"x nodes < {ETCD_LIMIT} B")
    if cliques:
        sizes = sorted((procstats.stored_size(c), c["metadata"]["name"]) for c in cliques)
        bench.report(f"join: largest of {len(cliques)} cliques", f"{sizes[-1][0]} B")
        print(f"    largest clique: {sizes[-1][1]}", flush=True)


async def join(
    bench: run.Bench,
    racks: int,
    first_node: str,
    clique_id: str,
    anti_affinity: bool,
    scale: float,
    phases: Phases,
    standin: SchedulerStandIn | None = None,
) -> None:
    """One domain of racks x 18 nodes joined by an Indexed Job; prints the join's figures, with the
    timeline in `phases` (which may already hold the set-up's moments). With `standin` that double, not
    kube-scheduler, places the pods (see `standin`)."""
    nodes = racks * 18
    wait = scale * (300 + 0.5 * nodes)  # seconds for each phase at this size
    print(f"join: one domain of {nodes} nodes in {racks} cliques (phase timeout {wait:.0f} s)", flush=True)
    api = bench.api
    await sc.create_namespace(api, NAMESPACE)
    domains = await guards.open_domain_watcher(api, NAMESPACE)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    pid = bench.controller.process.pid if bench.controller.process else 0
    cpu_before = run.cpu_by_component(bench.cluster, pid)
    start = time.time()
    phases.mark("domain created")
    created = await custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, NAMESPACE, names.DOMAIN_PLURAL, sc.domain(DOMAIN, NAMESPACE, nodes)
    )
    uid = created["metadata"]["uid"]
    clique = names.clique_name(uid, clique_id)
    watchers = FanoutProbe.make(api, bench.cluster.kubeconfig, first_node, OPERATOR, clique)
    if watchers is not None:
        watchers.start(wait)
    await guards.while_alive(bench.controller, domains.wait({DOMAIN}, "settled", wait))
    phases.mark("domain children ready", domains.settled[DOMAIN])
    selector = f"{names.DOMAIN_LABEL}={uid}"
    trackers = [
        Tracker("job pods scheduled", core.list_namespaced_pod, (NAMESPACE,), pod_scheduled, nodes, JOB_PODS),
        Tracker(
            "workload claims allocated",
            custom.list_namespaced_custom_object,
            ("resource.k8s.io", "v1", NAMESPACE, "resourceclaims"),
            claim_allocated,
            nodes,
            selector,
        ),
        Tracker("job pods ready", core.list_namespaced_pod, (NAMESPACE,), pod_ready, nodes, JOB_PODS),
        Tracker("daemon pods ready", core.list_namespaced_pod, (OPERATOR,), pod_ready, nodes, selector),
    ]
    for tracker in trackers:
        tracker.start()
    if standin is not None:
        standin.start()
    writes_before = bench.controller.metric("computedomain_api_writes_total")
    job = sc.join_job(DOMAIN, NAMESPACE, nodes) if anti_affinity else job_without_anti_affinity(nodes)
    phases.mark("job created")
    await client.BatchV1Api(api).create_namespaced_job(NAMESPACE, cast(Any, job))
    try:
        for tracker in trackers:
            phases.mark(f"all {tracker.what}", await guards.while_alive(bench.controller, tracker.wait(wait)))
        await guards.while_alive(bench.controller, domains.wait({DOMAIN}, "ready", wait))
        phases.mark("domain ready", domains.ready[DOMAIN])
    except (TimeoutError, RuntimeError):
        phases.print("job created")
        raise
    finally:
        for tracker in trackers:
            await tracker.stop()
        if standin is not None:
            await standin.stop()
    cpu_after = run.cpu_by_component(bench.cluster, pid)
    metric_writes = bench.controller.metric("computedomain_api_writes_total") - writes_before
    received = watchers.bytes() if watchers is not None else {}
    if watchers is not None:
        await watchers.stop()
    until = time.time() + 0.5
    await asyncio.sleep(0.5)
    await domains.stop()
    phases.print("job created")
    if standin is not None:
        print(f"    scheduler stand-in placed {standin.placed} pods", flush=True)
    marks = dict(phases.marks)
    ready = marks["domain ready"]
    took = ready - marks["all daemon pods ready"]
    bench.report(f"join: all {nodes} daemons Ready -> domain Ready", f"{took * 1000:.0f} ms", "< 5 s")
    bench.report("join: Job created -> domain Ready", f"{ready - marks['job created']:.1f} s")
    writes = audit.writes(bench.controller_requests(start, until))
    if bench.cluster.options.audit:
        bench.report("join: controller writes per joining node", f"{len(writes) / nodes:.2f}")
        status = sum(1 for w in writes if w.subresource == "status")
        bench.report("join: status writes for the whole join", str(status))
        print(f"    join writes: {audit.summary(writes)}", flush=True)
    bench.report("join: controller writes per node (own metric)", f"{metric_writes / nodes:.2f}")
    await object_sizes(bench, uid, nodes)
    used = {n: cpu_after[n] - cpu_before[n] for n in cpu_after}
    bench.report("join: controller CPU seconds", f"{used['controller']:.1f} s")
    bench.report("join: kube-apiserver CPU seconds", f"{used['kube-apiserver']:.1f} s")
    print("    CPU seconds: " + ", ".join(f"{n} {s:.1f}" for n, s in sorted(used.items())), flush=True)
    bench.report("join: controller peak RSS", f"{procstats.memory_mib(pid)[1]:.0f} MiB")
    if received:
        total = sum(received.values())
        bench.report(f"join: bytes one node's watchers received ({first_node})", f"{total}")
        bench.report("join: watcher bytes per joining node", f"{total / nodes:.0f}")
        print("    per watch: " + ", ".join(f"{k} {v}" for k, v in sorted(received.items())), flush=True)
