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
from computedomain.api.models import CliqueDaemon, ComputeDomain
from computedomain.controller import metrics
from computedomain.controller import world as w
from computedomain.controller.events import EventRecorder
from computedomain.controller.plan.channels import ChannelPlan, plan_channels
from computedomain.controller.plan.cliques import NON_FABRIC_INDEX, CliquePlan
from computedomain.controller.plan.domain_members import MembershipPlan, label_conflict, plan_membership
from computedomain.controller.plan.problems import Problem
from computedomain.controller.reconcile import children, joining, teardown
from computedomain.controller.reconcile.statuspace import StatusPacer
from computedomain.controller.render.claimtemplates import daemon_claim_template, workload_claim_template
from computedomain.controller.render.cliques import clique_object
from computedomain.controller.render.daemonset import daemonset
from computedomain.controller.render.status import (
    ALL_REFUSED,
    ALL_REFUSED_MESSAGE,
    MODE_MISMATCH,
    POOL_EXHAUSTED,
    ChannelState,
    clique_full,
    mismatch_status,
    mode_mismatch_message,
    pool_exhausted,
    releasing_message,
    releasing_status,
    render_status,
)
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.dra.allocation import allocated_node
from computedomain.kube import Kube, KubeError, Object, is_transient
from computedomain.objects import contains

logger = logging.getLogger(__name__)

# While a problem may clear without any event we watch (a foreign object deleted), look again.
RECHECK_SECONDS = 30.0


def _failure(phase: str, error: KubeError) -> Problem:
    return Problem("ReconcileError", f"{phase} failed (HTTP {error.status}): {error}")


_NO_RESOURCE_API = Problem(
    "ResourceAPIUnavailable",
    "the API server serves no resource.k8s.io version (v1, v1beta2 or v1beta1); "
    "enable Dynamic Resource Allocation",
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _formation(body: Object, current: Object, status: Object) -> None:
    """Observe the domain's formation time if the status now written is the first formed one."""
    meta = body["metadata"]
    metrics.FORMATION.see(
        str(meta["uid"]),
        str(meta.get("creationTimestamp") or ""),
        metrics.formed(current),
        metrics.formed(status),
        time.time(),
    )


def _annotate(meta: Object, key: str, value: str) -> list[Object]:
    """JSON patch operations that set one annotation."""
    if meta.get("annotations"):
        return [
            {
                "op": "add",
                "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"),
                "value": value,
            }
        ]
    return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]


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
        self.clique_mode = settings.imex_mode == names.IMEX_MODE_CLIQUE
        # Channels are planned from the cache and written under this lock, each write recorded in the
        # cache before it is released: two domains planning at once from one view could otherwise both
        # take a channel that a third released.
        self._channel_lock = asyncio.Lock()
        if self.clique_mode and not world.clique_mode:
            raise ValueError("clique mode plans channels from a cache built for it (World.use_clique_mode)")

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
            if self.clique_mode and await self._channels_held(uid, body):
                # Its claims' deallocation (they carry the domain label) runs the reconcile again.
                return None
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
        recorded = w.recorded_mode(body)
        if recorded is not None and recorded != self.settings.imex_mode:
            await self._refuse_mode(body, recorded)
            return None
        if self.clique_mode:
            return await self._reconcile_clique(uid, body, domain)
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

    async def _refuse_mode(self, body: Object, recorded: str) -> None:
        """Say that the domain belongs to the other IMEX mode, and touch nothing else of it."""
        message = mode_mismatch_message(recorded, self.settings.imex_mode)
        current = body.get("status") or {}
        generation = int(body["metadata"].get("generation") or 0)
        status = mismatch_status(current, message, generation, _now())
        if not contains(current, status):
            meta = body["metadata"]
            result = await self.kube.patch(
                k.DOMAINS, meta["name"], meta["namespace"], {"status": status}, subresource="status"
            )
            self.world.record_write(result)
        self._count_state(str(body["metadata"]["uid"]), status)
        await self.events.record(body, [(MODE_MISMATCH, message)], False)

    async def _reconcile_clique(self, uid: str, body: Object, domain: ComputeDomain) -> float | None:
        """Clique mode: the domain starts no daemon; it takes an IMEX channel in each clique it uses."""
        refused = domain.spec.channel is not None and domain.spec.channel.allocation_mode == "All"
        plan = ChannelPlan()
        phase = ""
        problems: list[Problem] = []
        try:
            body = await self._ensure_finalizer(body)
            phase = "writing the ResourceClaimTemplate"
            problems += await self._ensure_workload_template(domain)
            phase = "writing ComputeDomainCliques"
            async with self._channel_lock:
                plan = self._plan_channels(uid, refused)
                kept = not await self._apply_channels(domain, plan, refused)
            phase = ""
            state = ChannelState(waiting=plan.waiting, refused=ALL_REFUSED_MESSAGE if refused else "")
            status_wait = await self._write_clique_status(body, plan, problems, state)
        except KubeError as error:
            if error.status == 404 and error.kind == names.DOMAIN_PLURAL:
                await self._vanished(uid, domain)
                return None
            if phase and not is_transient(error):
                state = ChannelState(waiting=plan.waiting, refused=ALL_REFUSED_MESSAGE if refused else "")
                try:
                    await self._write_clique_status(body, plan, [*problems, _failure(phase, error)], state)
                except KubeError as status_error:
                    logger.warning("could not report %s in the status: %s", error, status_error)
            raise
        metrics.RECONCILES.labels(result="ok").inc()
        recheck = kept or any(p.reason == "NameConflict" for p in problems)
        delays = [d for d in (RECHECK_SECONDS if recheck else None, status_wait or None) if d is not None]
        return min(delays, default=None)

    async def _channels_held(self, uid: str, body: Object) -> bool:
        """Clique mode, a deleted domain: free the channels none of its claims needs any more; True
        (and said in its status) while some are still held.

        Its pods may outlive the domain, and their processes hold its channel until their claims are
        unprepared: giving it to another domain before would put both on one channel.
        """
        async with self._channel_lock:
            plan = self._plan_channels(uid, False)
            await self._release_channels(uid, plan.release)
            held = sorted({h.clique for h in self.world.holdings() if h.domain == uid})
        if not held:
            return False
        message = releasing_message(held)
        current = body.get("status") or {}
        status = releasing_status(current, message, int(body["metadata"].get("generation") or 0), _now())
        if not contains(current, status):
            meta = body["metadata"]
            try:
                result = await self.kube.patch(
                    k.DOMAINS, meta["name"], meta["namespace"], {"status": status}, subresource="status"
                )
            except KubeError as error:
                if error.status == 404:
                    return True
                raise
            self.world.record_write(result)
        return True

    def _plan_channels(self, uid: str, refused: bool) -> ChannelPlan:
        world = self.world
        plan = plan_channels(
            uid,
            world.channel_claims(),
            world.node_cliques(),
            world.holdings(),
            world.eligible(),
            self.settings.imex_channels,
            world.former_cliques(),
        )
        if refused:
            # No channel for a domain that would see them all; what it holds goes back to the pool.
            held = {h.clique for h in world.holdings() if h.domain == uid}
            return ChannelPlan(release=tuple(sorted(held)), nodes=plan.nodes)
        return plan

    async def _apply_channels(self, domain: ComputeDomain, plan: ChannelPlan, refused: bool) -> bool:
        """Write the domain's clique objects (with the channel, once given), then delete released ones;
        False when one that was to go stays (see `_release_channels`)."""
        wanted: dict[str, int | None] = {clique: None for clique in plan.waiting}
        wanted.update(plan.channels)
        for clique, channel in sorted(wanted.items()):
            manifest = clique_object(domain, self.settings, clique, ())
            if channel is not None:
                manifest["channel"] = channel
            if plan.queued.get(clique):
                manifest["queuedAt"] = plan.queued[clique]
            manifest["nodes"] = list(plan.clique_nodes.get(clique, ()))
            await children.CLIQUES.ensure(self.kube, self.world, manifest)
        return await self._release_channels(domain.uid, plan.release)

    async def _release_channels(self, uid: str, cliques: tuple[str, ...]) -> bool:
        """Delete the domain's clique objects of `cliques`, which give their channels back to the pool;
        False when one stays, to be planned again.

        The plan comes from the cache, which may not have seen a claim that a plugin prepares right
        now (a restarted pod of the domain). Two things keep that prepare and a release from both
        succeeding: the claims are listed from the API server first, and a claim allocated there that
        the cache lacks keeps every channel; and the delete holds the object's UID and resourceVersion
        as planned from as preconditions, while a prepare writes to the object before it succeeds
        (`plugin.channels`). A claim allocated after the list is prepared only after the list, so
        either its write comes first and the delete fails (409), or the delete comes first and its
        write fails.
        """
        going = [
            obj
            for obj in self.world.related(w.CLIQUES, uid)
            if (obj["metadata"].get("labels") or {}).get(names.CLIQUE_LABEL) in cliques
        ]
        if not going:
            return True
        unseen = await self._claims_unseen(uid)
        if unseen:
            logger.info(
                "ComputeDomain %s keeps its channels: claim %s is allocated and not yet in the cache",
                uid,
                unseen,
            )
            return False
        released = True
        kind = self.world.kind(w.CLIQUES)
        for obj in going:
            meta = obj["metadata"]
            preconditions = {"uid": str(meta["uid"]), "resourceVersion": str(meta["resourceVersion"])}
            try:
                await self.kube.delete(kind, meta["name"], meta.get("namespace"), preconditions=preconditions)
            except KubeError as error:
                if error.status != 409:
                    raise
                # A plugin wrote to it since the cache saw it: a prepare of the domain holds the channel.
                logger.info("ComputeDomainClique %s was written since it was planned; kept", meta["name"])
                released = False
                continue
            self.world.forget(w.CLIQUES, obj)
        return released

    async def _claims_unseen(self, uid: str) -> str | None:
        """The name of a claim of the domain that the API server has allocated and the cache has not
        (or not on that node), or None."""
        if self.resource_version is None:
            return None
        items, _ = await self.kube.list(
            k.claims(self.resource_version), label_selector=f"{names.DOMAIN_LABEL}={uid}"
        )
        cached = {(c.uid, c.node) for c in self.world.channel_claims() if c.domain == uid}
        for item in items:
            node = allocated_node(item)
            meta = item.get("metadata") or {}
            if node is not None and (str(meta.get("uid", "")), node) not in cached:
                return f"{meta.get('namespace')}/{meta.get('name')}"
        return None

    async def _ensure_workload_template(self, domain: ComputeDomain) -> list[Problem]:
        version = self.resource_version
        if version is None:
            return [_NO_RESOURCE_API]
        problem = await children.ensure_workload_template(
            self.kube,
            self.world,
            k.claim_templates(version),
            domain,
            workload_claim_template(domain, version),
        )
        return [problem] if problem else []

    async def _write_clique_status(
        self, body: Object, plan: ChannelPlan, problems: list[Problem], state: ChannelState
    ) -> float:
        """Clique mode's status: a node is ready once its clique gave the domain a channel."""
        domain = ComputeDomain.model_validate(body)
        cliques: dict[str, list[CliqueDaemon]] = {}
        non_fabric: list[CliqueDaemon] = []
        for node, clique in sorted(plan.nodes.items()):
            if not clique:
                # No NVLink fabric: no IMEX peer and no channel to wait for.
                non_fabric.append(
                    CliqueDaemon(
                        node_name=node, ip_address="", clique_id="", index=NON_FABRIC_INDEX, status="Ready"
                    )
                )
                continue
            cliques.setdefault(clique, []).append(
                CliqueDaemon(
                    node_name=node,
                    ip_address="",
                    clique_id=clique,
                    status="Ready" if clique in plan.channels else "NotReady",
                )
            )
        layout = CliquePlan(
            cliques={c: tuple(d) for c, d in cliques.items()},
            non_fabric=tuple(non_fabric),
            max_nodes=self.settings.max_nodes_per_clique,
        )
        status = render_status(domain, layout, problems, domain.metadata.generation, _now(), channels=state)
        current = body.get("status") or {}
        wait = 0.0
        if not contains(current, status):
            wait = self.pacer.wait(str(body["metadata"]["uid"]), current, status)
            if wait <= 0:
                meta = body["metadata"]
                result = await self.kube.patch(
                    k.DOMAINS, meta["name"], meta["namespace"], {"status": status}, subresource="status"
                )
                self.world.record_write(result)
                self.pacer.written(str(meta["uid"]))
        self._count_state(str(body["metadata"]["uid"]), status)
        ready = status.get("status") == "Ready" and bool(status.get("joinedNodes"))
        _formation(body, current, status)
        said: list[tuple[str, str]] = [(p.reason, p.message) for p in problems]
        if state.refused:
            said.append((ALL_REFUSED, state.refused))
        elif state.waiting:
            said.append((POOL_EXHAUSTED, pool_exhausted(state.waiting)))
        await self.events.record(body, said, ready)
        return wait

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

    def _count_state(self, uid: str, status: Object | None) -> None:
        """Keep the `computedomain_domains{status}` gauge equal to the domains' current states, and
        `metrics.NOT_READY` told (None: the domain is gone, and so is what `metrics.FORMATION`
        remembers of it)."""
        previous = self._states.pop(uid, None)
        if previous is not None:
            metrics.DOMAINS.labels(status=previous).dec()
        metrics.NOT_READY.see(uid, status, time.time())
        if status is None:
            metrics.FORMATION.forget(uid)
        else:
            state = str(status.get("status", "NotReady"))
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
        if self.clique_mode:
            # Recorded with the finalizer, so that no domain this mode reconciled lacks it.
            patch += _annotate(meta, names.IMEX_MODE_ANNOTATION, names.IMEX_MODE_CLIQUE)
        result = await self.kube.patch(
            k.DOMAINS, meta["name"], meta["namespace"], patch, content_type=k.JSON_PATCH
        )
        return self.world.record_write(result)

    async def _ensure_children(self, domain: ComputeDomain) -> list[Problem]:
        version = self.resource_version
        if version is None:
            return [_NO_RESOURCE_API]
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
        self._count_state(str(body["metadata"]["uid"]), status)
        # An idle domain (no node joined yet) is "Ready" by the reference's rule; that is no news.
        ready = status.get("status") == "Ready" and bool(status.get("joinedNodes"))
        _formation(body, current, status)
        # A full clique is found while planning rather than while writing, but is as much a problem.
        full = clique_full(plan) if plan is not None else None
        warnings = [*problems, full] if full is not None else problems
        await self.events.record(body, [(p.reason, p.message) for p in warnings], ready)
        return 0.0
