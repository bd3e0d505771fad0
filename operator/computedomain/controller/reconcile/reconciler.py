"""The level-based reconcile of one ComputeDomain.

Read the cached world, plan the membership (`controller.plan`) and render every desired object with
pure functions, apply what differs under one field manager, prune what is ours but no longer
desired, then write the status once. A second run with nothing changed makes no API writes. A phase
the API server refuses is told in the status (reason ReconcileError) before the reconcile fails and
is retried with backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

from pydantic import ValidationError

from computedomain import kube as k
from computedomain.api import names
from computedomain.api.models import ComputeDomain
from computedomain.controller import metrics
from computedomain.controller import world as w
from computedomain.controller.events import EventRecorder
from computedomain.controller.plan.cliques import CliquePlan
from computedomain.controller.plan.domain_members import MembershipPlan, label_conflict, plan_membership
from computedomain.controller.plan.problems import Problem
from computedomain.controller.reconcile import children, joining, teardown
from computedomain.controller.reconcile.statuspace import StatusPacer
from computedomain.controller.render.claimtemplates import daemon_claim_template, workload_claim_template
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.render.status import clique_full, render_status
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.kube import Kube, KubeError, Object, is_transient
from computedomain.objects import contains

logger = logging.getLogger(__name__)

# While a problem may clear without any event we watch (a foreign object deleted), look again.
RECHECK_SECONDS = 30.0


def _failure(phase: str, error: KubeError) -> Problem:
    return Problem("ReconcileError", f"{phase} failed (HTTP {error.status}): {error}")


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
        self.pacer = StatusPacer()

    async def __call__(self, uid: str) -> float | None:
        """Reconcile one domain; returns a delay after which to look again, or None."""
        await self.world.wait_synced()
        body = self.world.domains.get(uid)
        if body is None:
            self.events.forget(uid)
            self.pacer.forget(uid)
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
            self.pacer.forget(uid)
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
        # Planning reads only the cache, so the status can show the layout even when a write fails.
        plan = self._plan(domain)
        # Only the phases that write our objects report their failures in the status: the finalizer's
        # guarded patch fails routinely on a stale view (the retry sees the current object), and a
        # failed status write cannot report itself.
        phase = ""
        problems: list[Problem] = []
        try:
            body = await self._ensure_finalizer(body)
            phase = "writing the DaemonSet and ResourceClaimTemplates"
            problems += await self._ensure_children(domain)
            phase = "labelling nodes and writing ComputeDomainCliques"
            problems += await self._ensure_membership(domain, plan)
            phase = ""
            status_wait = await self._write_status(body, plan.cliques, problems)
        except KubeError as error:
            if error.status == 404 and error.kind == names.DOMAIN_PLURAL:
                await self._vanished(uid, domain)
                return None
            if phase and not is_transient(error):
                # A refusal (403, 422...) will not cure itself: say so where users look, then let the
                # work queue retry with backoff. Transient failures are only retried.
                await self._report_failure(body, plan.cliques, [*problems, _failure(phase, error)], error)
            raise
        metrics.RECONCILES.labels(result="ok").inc()
        recheck = any(p.reason in ("NameConflict", "LabelConflict") for p in problems)
        delays = [d for d in (RECHECK_SECONDS if recheck else None, status_wait or None) if d is not None]
        return min(delays, default=None)

    async def _vanished(self, uid: str, domain: ComputeDomain) -> None:
        # Deleted before our finalizer was on it (or with it forced off): whatever this pass created
        # belongs to nobody now.
        logger.info(
            "ComputeDomain %s/%s vanished while reconciled; removing what it left",
            domain.namespace,
            domain.name,
        )
        await teardown.remove_everything(self.kube, self.world, uid)
        self.world.drop_domain(uid)
        self.events.forget(uid)
        self.pacer.forget(uid)
        self._count_state(uid, None)

    async def _report_failure(
        self, body: Object, plan: CliquePlan, problems: list[Problem], error: KubeError
    ) -> None:
        """Write a failed phase into the status (once: an unchanged status is not written again)."""
        try:
            await self._write_status(body, plan, problems)
        except KubeError as status_error:
            # The original refusal is what the retry is about; this one only goes to the log.
            logger.warning("could not report %s in the status: %s", error, status_error)

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
        # The three children are independent: write them in parallel (one round trip, not three).
        _, _, problem = await asyncio.gather(
            children.TEMPLATES.ensure(
                self.kube, self.world, daemon_claim_template(domain, self.settings, version)
            ),
            children.DAEMONSETS.ensure(self.kube, self.world, daemonset(domain, self.settings)),
            children.ensure_workload_template(
                self.kube,
                self.world,
                k.claim_templates(version),
                domain,
                workload_claim_template(domain, version),
            ),
        )
        return [problem] if problem else []

    def _plan(self, domain: ComputeDomain) -> MembershipPlan:
        uid = domain.uid
        return plan_membership(
            uid,
            domain.namespace,
            self.world.labelled_nodes(),
            self.world.claim_facts(uid),
            self.world.daemon_facts(uid),
            self.world.related(w.CLIQUES, uid),
            self.settings.max_nodes_per_clique,
        )

    async def _ensure_membership(self, domain: ComputeDomain, plan: MembershipPlan) -> list[Problem]:
        refused = await joining.apply_labels(self.kube, self.world, domain.uid, plan)
        await joining.apply_cliques(self.kube, self.world, domain, self.settings, plan)
        conflict = label_conflict(plan.labels.conflicts, refused)
        return [conflict] if conflict is not None else []

    async def _write_status(self, body: Object, plan: CliquePlan | None, problems: list[Problem]) -> float:
        """Write the status if it changed; returns seconds until a deferred progress write is due."""
        domain = ComputeDomain.model_validate(body)
        status = render_status(domain, plan or CliquePlan(), problems, domain.metadata.generation, _now())
        current = body.get("status") or {}
        if not contains(current, status):
            wait = self.pacer.wait(str(body["metadata"]["uid"]), current, status)
            if wait > 0:
                # Only progress changed: the next pass after `wait` writes it (see `statuspace`).
                return wait
            meta = body["metadata"]
            # The controller is the status's only writer, so a merge patch of the whole status does
            # what an apply would, at a fraction of the API server's cost.
            result = await self.kube.patch(
                k.DOMAINS, meta["name"], meta["namespace"], {"status": status}, subresource="status"
            )
            self.world.record_write(result)
            self.pacer.written(str(meta["uid"]))
        self._count_state(str(body["metadata"]["uid"]), str(status.get("status", "NotReady")))
        # An idle domain (no node joined yet) is "Ready" by the reference's rule; that is no news.
        ready = status.get("status") == "Ready" and bool(status.get("joinedNodes"))
        # A full clique is found while planning rather than while writing, but is as much a problem.
        full = clique_full(plan) if plan is not None else None
        warnings = [*problems, full] if full is not None else problems
        await self.events.record(body, [(p.reason, p.message) for p in warnings], ready)
        return 0.0
