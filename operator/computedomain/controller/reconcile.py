"""The level-based reconcile of one ComputeDomain.

Read the cached world, render every desired object with pure functions, apply what differs under one
field manager, prune what is ours but no longer desired, then write the status once. A second run
with nothing changed makes no API writes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

from pydantic import ValidationError

from computedomain import kube as k
from computedomain.api import names
from computedomain.api.models import ComputeDomain, ComputeDomainClique
from computedomain.controller import children, metrics, nodelabels, teardown
from computedomain.controller import world as w
from computedomain.controller.events import EventRecorder
from computedomain.controller.membership import label_plan, members, wanted_nodes
from computedomain.controller.render.claimtemplates import daemon_claim_template, workload_claim_template
from computedomain.controller.render.cliques import CliquePlan, clique_object, plan_cliques
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.render.status import Problem, clique_full, render_status
from computedomain.controller.settings import Settings
from computedomain.controller.world import World, domain_uid_of
from computedomain.kube import Kube, KubeError, Object
from computedomain.kube.contains import contains

logger = logging.getLogger(__name__)

# While a problem may clear without any event we watch (a foreign object deleted), look again.
RECHECK_SECONDS = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """Reconciles domains by UID; called by the work queue."""

    def __init__(
        self,
        kube: Kube,
        world: World,
        settings: Settings,
        resource_version: str | None,
        events: EventRecorder,
    ) -> None:
        self.kube = kube
        self.world = world
        self.settings = settings
        self.resource_version = resource_version
        self.events = events
        self._states: dict[str, str] = {}

    async def __call__(self, uid: str) -> float | None:
        """Reconcile one domain; returns a delay after which to look again, or None."""
        await self.world.wait_synced()
        body = self.world.domains.get(uid)
        if body is None:
            self.events.forget(uid)
            self._count_state(uid, None)
            return None
        started = time.perf_counter()
        try:
            return await self._reconcile(uid, body)
        except Exception as error:
            reason = type(error).__name__ if not isinstance(error, KubeError) else f"HTTP{error.status}"
            metrics.RECONCILE_ERRORS.labels(reason=reason).inc()
            metrics.RECONCILES.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)

    async def _reconcile(self, uid: str, body: Object) -> float | None:
        if body["metadata"].get("deletionTimestamp"):
            await teardown.finalize(self.kube, self.world, body)
            # Nothing more is said about a domain that is gone (its DELETED event drops its key).
            self.events.forget(uid)
            self._count_state(uid, None)
            metrics.RECONCILES.labels(result="deleted").inc()
            return None
        try:
            domain = ComputeDomain.model_validate(body)
        except ValidationError as error:
            # The CRD schema should make this impossible; say so on the object rather than crash-loop.
            meta = body["metadata"]
            logger.error("ComputeDomain %s/%s is invalid: %s", meta.get("namespace"), meta.get("name"), error)
            await self._write_status(body, None, [Problem("InvalidSpec", str(error)[:300])])
            return None
        try:
            body = await self._ensure_finalizer(body)
            problems = await self._ensure_children(domain)
            plan, membership_problems = await self._ensure_membership(domain)
            problems += membership_problems
            await self._write_status(body, plan, problems)
        except KubeError as error:
            if error.status != 404 or error.kind != names.DOMAIN_PLURAL:
                raise
            # Deleted before our finalizer was on it (or with it forced off): whatever this pass
            # created belongs to nobody now.
            logger.info(
                "ComputeDomain %s/%s vanished while reconciled; removing what it left",
                domain.namespace,
                domain.name,
            )
            await teardown.remove_everything(self.kube, self.world, uid)
            self.world.drop_domain(uid)
            self.events.forget(uid)
            self._count_state(uid, None)
            return None
        metrics.RECONCILES.labels(result="ok").inc()
        recheck = any(p.reason in ("NameConflict", "LabelConflict") for p in problems)
        return RECHECK_SECONDS if recheck else None

    def _count_state(self, uid: str, state: str | None) -> None:
        """Keep the `computedomain_domains{status}` gauge equal to the domains' current states."""
        previous = self._states.pop(uid, None)
        if previous is not None:
            metrics.DOMAINS.labels(status=previous).dec()
        if state is not None:
            self._states[uid] = state
            metrics.DOMAINS.labels(status=state).inc()

    async def _ensure_finalizer(self, body: Object) -> Object:
        meta = body["metadata"]
        finalizers = meta.get("finalizers")
        if names.FINALIZER in (finalizers or []):
            return body
        # A JSON patch guarded by the resourceVersion, not an apply: an apply would re-create a
        # domain deleted a moment ago, and a stale view would fail the test instead of dropping
        # another writer's finalizer (the next pass then sees the current object).
        add = (
            {"op": "add", "path": "/metadata/finalizers/-", "value": names.FINALIZER}
            if finalizers
            else {"op": "add", "path": "/metadata/finalizers", "value": [names.FINALIZER]}
        )
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}, add]
        result = await self.kube.patch(
            k.DOMAINS, meta["name"], meta["namespace"], patch, content_type=k.JSON_PATCH
        )
        return self.world.record_write(result)

    async def _ensure_children(self, domain: ComputeDomain) -> list[Problem]:
        version = self.resource_version
        if version is None:
            return [
                Problem(
                    "ResourceAPIUnavailable",
                    "the API server serves no resource.k8s.io version (v1, v1beta2 or v1beta1); "
                    "enable Dynamic Resource Allocation",
                )
            ]
        templates = k.claim_templates(version)
        # The three children are independent: write them in parallel (one round trip, not three).
        _, _, problem = await asyncio.gather(
            children.ensure(
                self.kube,
                self.world,
                w.TEMPLATES,
                templates,
                daemon_claim_template(domain, self.settings, version),
            ),
            children.ensure(
                self.kube, self.world, w.DAEMONSETS, k.DAEMONSETS, daemonset(domain, self.settings)
            ),
            children.ensure_workload_template(
                self.kube, self.world, templates, domain, workload_claim_template(domain, version)
            ),
        )
        return [problem] if problem else []

    async def _ensure_membership(self, domain: ComputeDomain) -> tuple[CliquePlan, list[Problem]]:
        uid, problems = domain.uid, []
        nodes = self.world.informers[w.NODES].store
        labelled = {name: owner for name, node in nodes.items() if (owner := domain_uid_of(node))}
        wanted = wanted_nodes(self.world.related(w.CLAIMS, uid), domain.namespace)
        plan = label_plan(uid, wanted, labelled)
        refused: list[str] = []
        for node in plan.add:
            result = await nodelabels.add_label(self.kube, node, uid)
            if result is None:
                refused.append(node)
            else:
                self.world.informers[w.NODES].upsert(result)
        for node in plan.remove:
            result = await nodelabels.remove_label(self.kube, node, uid)
            if result is not None:
                self.world.informers[w.NODES].upsert(result)
        if plan.conflicts or refused:
            detail = [f"{n} (ComputeDomain UID {owner})" for n, owner in sorted(plan.conflicts.items())]
            detail += [f"{n} (label owned by another writer)" for n in refused]
            problems.append(
                Problem(
                    "LabelConflict",
                    "nodes already belong to another domain and cannot join this one: "
                    + ", ".join(detail[:5])
                    + (f" and {len(detail) - 5} more" if len(detail) > 5 else ""),
                )
            )
        node_cliques = {
            name: (node["metadata"].get("labels") or {}).get(names.GPU_CLIQUE_LABEL, "")
            for name, node in nodes.items()
            if domain_uid_of(node) == uid
        }
        found, _unknown = members(self.world.related(w.PODS, uid), node_cliques)
        current = [ComputeDomainClique.model_validate(c) for c in self.world.related(w.CLIQUES, uid)]
        cliques = plan_cliques(current, found, self.settings.max_nodes_per_clique)
        keep: set[str] = set()
        for clique_id, daemons in cliques.cliques.items():
            manifest = clique_object(domain, self.settings, clique_id, daemons)
            keep.add(f"{manifest['metadata']['namespace']}/{manifest['metadata']['name']}")
            await children.ensure(self.kube, self.world, w.CLIQUES, k.CLIQUES, manifest)
        await children.prune(self.kube, self.world, w.CLIQUES, k.CLIQUES, uid, keep)
        return cliques, problems

    async def _write_status(self, body: Object, plan: CliquePlan | None, problems: list[Problem]) -> None:
        domain = ComputeDomain.model_validate(body)
        status = render_status(domain, plan or CliquePlan(), problems, domain.metadata.generation, _now())
        if not contains(body.get("status") or {}, status):
            meta = body["metadata"]
            # The controller is the status's only writer, so a merge patch of the whole status does
            # what an apply would, at a fraction of the API server's cost.
            result = await self.kube.patch(
                k.DOMAINS, meta["name"], meta["namespace"], {"status": status}, subresource="status"
            )
            self.world.record_write(result)
        self._count_state(str(body["metadata"]["uid"]), str(status.get("status", "NotReady")))
        # An idle domain (no node joined yet) is "Ready" by the reference's rule; that is no news.
        ready = status.get("status") == "Ready" and bool(status.get("joinedNodes"))
        # A full clique is found while planning rather than while writing, but is as much a problem.
        full = clique_full(plan) if plan is not None else None
        warnings = [*problems, full] if full is not None else problems
        await self.events.record(body, [(p.reason, p.message) for p in warnings], ready)
