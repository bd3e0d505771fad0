"""The ComputeDomain driver: prepare and unprepare of this node's claims (the framework's `Driver`).

Both are idempotent and keyed by claim UID. Claims of one call run in parallel; two calls for the same
claim run one after the other. Every claim gets its own answer: an error names what is wrong with that
claim and leaves the others alone, and comes before the kubelet's deadline, whatever the API server
does meanwhile. The stale-claim sweep uses the narrow interface at the end (`claim_uids`,
`release_if`, `forget_previous_boot`, `remove_unused_domain_dirs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

from computedomain.api import names
from computedomain.plugin import cdi, channels, metrics
from computedomain.plugin.cdi import Edits, SpecStore
from computedomain.plugin.channels import CLIQUE_DAEMON_DOMAIN_ID, ChannelSource
from computedomain.plugin.checkpoint import Checkpoint, ClaimRecord, ClaimState
from computedomain.plugin.claimdevice import (
    CHANNEL_DEVICE,
    DAEMON_DEVICE,
    SHARED_CHANNEL_DEVICE,
    ClaimDevice,
)
from computedomain.plugin.claims import Allocated, ClaimError, allocated_devices, reserved_pods
from computedomain.plugin.devices import DeviceError
from computedomain.plugin.domains import DomainFinder, annotated_domain
from computedomain.plugin.edits import HostPaths, channel_edits, daemon_edits, domain_channel_edits
from computedomain.plugin.events import (
    REASON_NO_CHANNEL,
    REASON_NOT_READY,
    REASON_WAITING,
    REASON_WAITING_CHANNEL,
    RateLimit,
    render_event,
)
from computedomain.plugin.gate import state_says_ready, wait_for_daemon, warn_without_clique
from computedomain.plugin.kubelet.driver import ClaimRef, Prepared, answer_deadline
from computedomain.plugin.view import DomainRef, NodeView

log = logging.getLogger(__name__)

# Kept back from the kubelet's deadline at the end of a gate's wait, to post its Warning Event.
_WARNING_TIME = 0.5


# Why a claim's prepare or unprepare failed, as `computedomain_plugin_claim_errors_total` counts it: a
# short, bounded set, where the message for the kubelet names the claim and its particulars.
ErrorReason = Literal[
    "Busy",
    "Deadline",
    "ClaimNotFound",
    "ClaimReplaced",
    "InvalidClaim",
    "InvalidConfig",
    "DomainNotFound",
    "DomainNamespace",
    "NoClique",
    "NoDevice",
    "DaemonNotReady",
    "NoChannel",
    "ChannelReleased",
    "Taken",
    "Unprepared",
    "Internal",
]


class _Refused(Exception):
    """Ends the prepare of one claim with a message for the kubelet, and why (`ErrorReason`)."""

    def __init__(self, message: str, reason: ErrorReason) -> None:
        super().__init__(message)
        self.reason: ErrorReason = reason


def _count_error(call: Literal["prepare", "unprepare"], reason: ErrorReason) -> None:
    metrics.CLAIM_ERRORS.labels(call=call, reason=reason).inc()


class Core:
    """Prepares and unprepares this node's claims of driver compute-domain.nvidia.com."""

    def __init__(
        self,
        view: NodeView,
        checkpoint: Checkpoint,
        specs: SpecStore,
        paths: HostPaths,
        node: str,
        *,
        prepare_wait: float,
        event_interval: float,
        clock: Callable[[], float] = time.time,
        channels: ChannelSource | None = None,
    ) -> None:
        self.view = view
        # Clique mode when set: a channel claim gets its domain's channel in the node's clique.
        self.channels = channels
        self.checkpoint = checkpoint
        self.specs = specs
        self.paths = paths
        self.node = node
        self.prepare_wait = prepare_wait
        self.events = RateLimit(event_interval)
        self.clock = clock
        self.domains = DomainFinder(view)
        self._claim_locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        # Set by an unprepare to cut short the prepare of the same claim that waits for its daemon.
        self._aborts: dict[str, asyncio.Event] = {}
        self._checkpoint_lock = asyncio.Lock()

    # --- kubelet calls ----------------------------------------------------------------------------

    async def prepare(self, claims: Sequence[ClaimRef], deadline: float | None = None) -> dict[str, Prepared]:
        """Prepare every claim (in parallel); one answer per claim UID, all by `deadline`
        (`time.monotonic`; the kubelet's 45 s from now when None)."""
        until = answer_deadline(None) if deadline is None else deadline

        async def prepare_one(ref: ClaimRef) -> Prepared:
            return await self._prepare_one(ref, until)

        outcomes = await asyncio.gather(*(self._locked(c.uid, prepare_one, c, until) for c in claims))
        return {claim.uid: outcome for claim, outcome in zip(claims, outcomes, strict=True)}

    async def unprepare(self, claims: Sequence[ClaimRef]) -> dict[str, str]:
        """Unprepare every claim (in parallel); an error message per claim UID ('' when done).

        A prepare of the same claim that still waits for its daemon gives up first (the pod is gone).
        """
        for claim in claims:
            if claim.uid in self._aborts:
                self._aborts[claim.uid].set()
        errors = await asyncio.gather(*(self._locked(c.uid, self._unprepare_one, c) for c in claims))
        return {claim.uid: error for claim, error in zip(claims, errors, strict=True)}

    def devices(self) -> tuple[str, ...]:
        """The devices of this node's pool: channel 0 (in clique mode the shared channel device) and
        the daemon device."""
        return (CHANNEL_DEVICE if self.channels is None else SHARED_CHANNEL_DEVICE, DAEMON_DEVICE)

    def lock_users(self, uid: str) -> int:
        """How many calls hold or await the claim's lock (0 when none): what a sweep that waits
        behind a prepare looks like from outside."""
        entry = self._claim_locks.get(uid)
        return entry[1][0] if entry is not None else 0

    async def _locked(
        self,
        uid: str,
        work: Callable[[ClaimRef], Awaitable[Any]],
        claim: ClaimRef,
        deadline: float | None = None,
    ) -> Any:
        # One lock per claim, kept while anyone holds or awaits it (counted), then dropped. A prepare
        # waits for it only until its deadline: a sweep may hold it while the API server is slow.
        entry = self._claim_locks.setdefault(uid, (asyncio.Lock(), [0]))
        lock, users = entry
        users[0] += 1
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await lock.acquire()
            except TimeoutError:
                metrics.PREPARES.labels(result="error").inc()
                _count_error("prepare", "Busy")
                return Prepared(
                    error=f"ResourceClaim {claim}: another call for this claim still runs at the "
                    "kubelet's deadline; the kubelet will try again"
                )
            try:
                return await work(claim)
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._claim_locks[uid]

    # --- prepare ----------------------------------------------------------------------------------

    async def _prepare_one(self, ref: ClaimRef, deadline: float) -> Prepared:
        record = self.checkpoint.claims.get(ref.uid)
        if record is not None and record.state == "PrepareCompleted":
            log.debug("claim %s (%s) already prepared", ref, ref.uid)
            metrics.PREPARES.labels(result="cached").inc()
            return Prepared(record.devices)
        started = time.monotonic()
        self._aborts[ref.uid] = asyncio.Event()
        try:
            devices = await self._prepare_claim(ref, deadline)
        except _Refused as refused:
            log.warning("claim %s (%s) not prepared: %s", ref, ref.uid, refused)
            metrics.PREPARES.labels(result="error").inc()
            _count_error("prepare", refused.reason)
            return Prepared(error=str(refused))
        except Exception as error:  # one broken claim must not fail the whole call
            log.exception("claim %s (%s): prepare failed", ref, ref.uid)
            metrics.PREPARES.labels(result="error").inc()
            _count_error("prepare", "Internal")
            return Prepared(error=f"prepare of claim {ref} failed: {error}")
        finally:
            self._aborts.pop(ref.uid, None)
        metrics.PREPARES.labels(result="prepared").inc()
        metrics.PREPARE_SECONDS.observe(time.monotonic() - started)
        return Prepared(devices)

    @contextlib.asynccontextmanager
    async def _before(self, deadline: float, ref: ClaimRef, doing: str) -> AsyncIterator[None]:
        # Reads retry transient API errors for seconds each: under API trouble they would run past
        # the kubelet's deadline, which then sees DeadlineExceeded instead of what held the claim up.
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                yield
        except TimeoutError:
            if not timeout.expired():
                raise
            raise _Refused(
                f"ResourceClaim {ref}: {doing} did not finish before the kubelet's deadline (is the API "
                "server slow or away?); the kubelet will try again",
                "Deadline",
            ) from None

    async def _prepare_claim(self, ref: ClaimRef, deadline: float) -> tuple[ClaimDevice, ...]:
        async with self._before(deadline, ref, "reading the claim and its ComputeDomain"):
            claim = await self.view.read_claim(ref.namespace, ref.name)
            if claim is None:
                raise _Refused(f"ResourceClaim {ref} does not exist", "ClaimNotFound")
            uid = str(claim.get("metadata", {}).get("uid", ""))
            if uid != ref.uid:
                raise _Refused(
                    f"ResourceClaim {ref} has UID {uid}, not {ref.uid}: it was replaced", "ClaimReplaced"
                )
            try:
                allocated = allocated_devices(claim)
            except ClaimError as error:
                raise _Refused(f"ResourceClaim {ref}: {error}", "InvalidClaim") from None
            domains = {a.device.domain_id: await self._domain_of(ref, claim, a) for a in allocated}
        devices = tuple(a.device for a in allocated)
        if self.channels is not None and any(d.type == "channel" for d in devices):
            return await self._prepare_with_channel(ref, claim, allocated, domains, deadline)
        await self._record(ref, "PrepareStarted", devices, exclusive=True)
        # Gates run side by side, so that a claim never waits longer than one gate's time in all.
        gated = {domains[d.domain_id] for d in devices if d.type == "channel"}
        try:
            async with asyncio.TaskGroup() as group:
                for domain in gated:
                    group.create_task(self._gate(ref, claim, domain, deadline))
        except* _Refused as refused:
            raise refused.exceptions[0] from None
        async with self._before(deadline, ref, "reading the node's NVLink clique"):
            clique = await self.view.clique_id()
            if any(d.type == "channel" for d in devices):
                await warn_without_clique(self.view, self.node, str(ref), reserved_pods(claim), clique)
        try:
            edits = [
                (a.device.device, self._edits(a, domains[a.device.domain_id], clique)) for a in allocated
            ]
        except DeviceError as error:
            raise _Refused(f"ResourceClaim {ref}: {error}", "NoDevice") from None
        return await self._complete(ref, devices, edits)

    async def _complete(
        self, ref: ClaimRef, devices: tuple[ClaimDevice, ...], edits: list[tuple[str, Edits]]
    ) -> tuple[ClaimDevice, ...]:
        # The spec comes before the record that says the claim is prepared: a crash between them
        # leaves a claim the kubelet prepares again, never a prepared claim without its spec.
        spec = cdi.render_spec(ref.uid, edits)
        if spec is None:
            await asyncio.to_thread(self.specs.remove, ref.uid)
        else:
            await asyncio.to_thread(self.specs.write, ref.uid, spec)
        with_ids = {name for name, e in edits if not e.empty}
        prepared = tuple(
            d.prepared((cdi.qualified_name(ref.uid, d.device),) if d.device in with_ids else ())
            for d in devices
        )
        await self._record(ref, "PrepareCompleted", prepared)
        log.info("prepared claim %s (%s): %s", ref, ref.uid, ", ".join(d.device for d in prepared) or "none")
        return prepared

    # --- clique mode --------------------------------------------------------------------------------

    async def _prepare_with_channel(
        self,
        ref: ClaimRef,
        claim: dict[str, Any],
        allocated: list[Allocated],
        domains: dict[str, DomainRef],
        deadline: float,
    ) -> tuple[ClaimDevice, ...]:
        # The domain's own channel in this node's clique, once the controller gave one and the
        # clique's IMEX daemon here is Ready (see `plugin.channels`).
        wanted = [a for a in allocated if a.device.type == "channel"]
        if any(getattr(a.config, "allocation_mode", None) == "All" for a in wanted):
            raise _Refused(f"ResourceClaim {ref}: {channels.ALL_REFUSED}", "InvalidConfig")
        domain_ids = {a.device.domain_id for a in wanted}
        if len(domain_ids) > 1:
            raise _Refused(
                f"ResourceClaim {ref} asks for the channels of several ComputeDomains "
                f"({', '.join(str(domains[d]) for d in sorted(domain_ids))}): a pod's claim has one",
                "InvalidConfig",
            )
        domain = domains[next(iter(domain_ids))]
        async with self._before(deadline, ref, "reading the node's NVLink clique"):
            clique = await self.view.clique_id()
        if not clique:
            raise _Refused(f"ResourceClaim {ref}: {channels.no_clique_message(self.node)}", "NoClique")
        devices = tuple(a.device for a in allocated)
        await self._record(ref, "PrepareStarted", devices, exclusive=True)
        found = await self._wait_for_channel(ref, claim, domain, clique, deadline)
        channel = int(found["channel"])
        held = tuple(d.with_channel(channel) if d.type == "channel" else d for d in devices)
        # Recorded before the spec is written, under the checkpoint's lock: of two domains' claims
        # that race for one channel here, the second is refused.
        await self._record(ref, "PrepareStarted", held, exclusive=True)
        try:
            edits = [
                (
                    a.device.device,
                    domain_channel_edits(self.paths, channel)
                    if a.device.type == "channel"
                    else self._edits(a, domains[a.device.domain_id], clique),
                )
                for a in allocated
            ]
        except DeviceError as error:
            raise _Refused(f"ResourceClaim {ref}: {error}", "NoDevice") from None
        await self._claim_channel(ref, found, devices, deadline)
        return await self._complete(ref, held, edits)

    async def _claim_channel(
        self, ref: ClaimRef, found: dict[str, Any], devices: tuple[ClaimDevice, ...], deadline: float
    ) -> None:
        # The write to the object read, before anything is prepared: the controller releases the
        # channel only by a delete that fails once this write happened, and this write fails once
        # that delete happened (see `plugin.channels`).
        recorder = self.channels
        name = str(found["metadata"]["name"])
        if not isinstance(recorder, channels.PrepareRecorder):
            raise _Refused(
                f"ResourceClaim {ref}: this plugin cannot write ComputeDomainClique {name}", "Internal"
            )
        async with self._before(deadline, ref, f"writing ComputeDomainClique {name}"):
            why = await recorder.record_prepare(found, self.node, ref.uid)
        if why is not None:
            # The channel may be another domain's by now: this node no longer holds it for the claim.
            await self._record(ref, "PrepareStarted", devices)
            message = channels.released_message(name, int(found["channel"]), why)
            raise _Refused(f"ResourceClaim {ref}: {message}", "ChannelReleased")

    async def _wait_for_channel(
        self, ref: ClaimRef, claim: dict[str, Any], domain: DomainRef, clique: str, deadline: float
    ) -> dict[str, Any]:
        assert self.channels is not None
        source = self.channels
        name = names.clique_name(domain.uid, clique)
        what = f"an IMEX channel of clique {clique} for ComputeDomain {domain}"
        pods = reserved_pods(claim)
        # The wait ends in time for its Warning Event and the answer.
        wait = min(self.prepare_wait, deadline - time.monotonic() - _WARNING_TIME)
        abort = self._aborts.get(ref.uid)

        async def waiting(why: str, elapsed: float) -> None:
            if elapsed == 0:
                log.info("claim %s waits for %s: %s", ref, what, why)
            # No time in the message: its repeats are one Event, whose count and times tell how long.
            message = f"waiting for an IMEX channel of clique {clique}: {why}"
            await self._post(pods, "Normal", REASON_WAITING_CHANNEL, message)

        started = time.monotonic()
        async with self._before(deadline, ref, f"waiting for {what}"):
            found, why = await channels.wait_for_channel(source, name, self.node, wait, waiting, abort=abort)
            metrics.GATE_SECONDS.observe(time.monotonic() - started)
            if found is None and abort is not None and abort.is_set():
                raise _Refused(f"ResourceClaim {ref}: unprepared while it waited for {what}", "Unprepared")
            if found is None:
                message = (
                    f"no IMEX channel of clique {clique} after {max(wait, 0):.0f}s: {why}; the kubelet "
                    "will try again"
                )
                await self._post(pods, "Warning", REASON_NO_CHANNEL, message)
                raise _Refused(f"ResourceClaim {ref}: {message}", "NoChannel")
        log.info(
            "claim %s: ComputeDomain %s has channel %d in clique %s", ref, domain, found["channel"], clique
        )
        return found

    async def _post(
        self, pods: Sequence[tuple[str, str, str]], event_type: str, reason: str, message: str
    ) -> None:
        # Normal Events are rate-limited per pod; a Warning ends a wait and always goes out.
        for pod in pods:
            if event_type == "Warning" or self.events.allow(pod[2]):
                event = render_event(
                    pod, node=self.node, event_type=event_type, reason=reason, message=message
                )
                await self.view.post_event(event)

    async def _domain_of(self, ref: ClaimRef, claim: dict[str, Any], allocated: Allocated) -> DomainRef:
        device = allocated.device
        if (
            self.channels is not None
            and device.type == "daemon"
            and device.domain_id == CLIQUE_DAEMON_DOMAIN_ID
        ):
            # A clique daemon's claim: the daemon serves every domain of its clique.
            return DomainRef(device.domain_id, "", "")
        # A channel's domain should be in the claim's namespace; a daemon claim's is found by the
        # claim's annotations (or, for claims of older templates, in every namespace).
        domain = await self.domains.find(
            device.domain_id,
            namespace=ref.namespace if device.type == "channel" else None,
            named=annotated_domain(claim),
        )
        if domain is None:
            raise _Refused(
                f"ResourceClaim {ref}: {allocated.config.kind} names ComputeDomain UID {device.domain_id}, "
                "and no ComputeDomain has that UID",
                "DomainNotFound",
            )
        # A workload's channel must come from a domain of its own namespace; the IMEX daemon's claim
        # lives in the operator's namespace and serves a domain of any namespace.
        if device.type == "channel" and domain.namespace != ref.namespace:
            raise _Refused(
                f"ResourceClaim {ref}: ComputeDomain {domain} is in namespace {domain.namespace}, not in "
                f"the claim's namespace {ref.namespace}",
                "DomainNamespace",
            )
        return domain

    def _edits(self, allocated: Allocated, domain: DomainRef, clique: str) -> Edits:
        if allocated.device.type == "channel":
            return channel_edits(self.paths, clique, getattr(allocated.config, "allocation_mode", None))
        self.paths.domain_dir(domain.uid).mkdir(parents=True, exist_ok=True, mode=0o755)
        clique_daemon = self.channels is not None and domain.uid == CLIQUE_DAEMON_DOMAIN_ID
        return daemon_edits(self.paths, domain, clique, identity=not clique_daemon)

    async def _gate(self, ref: ClaimRef, claim: dict[str, Any], domain: DomainRef, deadline: float) -> None:
        domain_dir = self.paths.domain_dir(domain.uid)

        def state_ready() -> bool:
            return state_says_ready(domain_dir)

        if self.view.daemon_ready(domain.uid) or state_ready():
            return
        # The wait ends in time for its Warning Event and the answer, however long the reads before
        # it took.
        wait = min(self.prepare_wait, deadline - time.monotonic() - _WARNING_TIME)
        what = f"the IMEX daemon of ComputeDomain {domain} on node {self.node}"
        pods = reserved_pods(claim)
        log.info("claim %s waits for %s to be ready", ref, what)

        async def post(event_type: str, reason: str, message: str) -> None:
            for pod in pods:
                if event_type == "Warning" or self.events.allow(pod[2]):
                    event = render_event(
                        pod, node=self.node, event_type=event_type, reason=reason, message=message
                    )
                    await self.view.post_event(event)

        async def waiting(elapsed: float) -> None:
            # No time in the message: its repeats are one Event, whose count and times tell how long.
            await post("Normal", REASON_WAITING, f"Waiting for {what} to be ready")

        started = time.monotonic()
        abort = self._aborts.get(ref.uid)
        async with self._before(deadline, ref, f"waiting for {what}"):
            ready = await wait_for_daemon(
                self.view, domain.uid, wait, waiting, abort=abort, state_ready=state_ready
            )
            metrics.GATE_SECONDS.observe(time.monotonic() - started)
            if abort is not None and abort.is_set() and not ready:
                raise _Refused(f"ResourceClaim {ref}: unprepared while it waited for {what}", "Unprepared")
            if not ready:
                message = f"{what} is not ready after {max(wait, 0):.0f}s; the kubelet will try again"
                await post("Warning", REASON_NOT_READY, message)
                raise _Refused(f"ResourceClaim {ref}: {message}", "DaemonNotReady")
        log.info("claim %s: %s is ready", ref, what)

    async def _record(
        self,
        ref: ClaimRef,
        state: ClaimState,
        devices: tuple[ClaimDevice, ...],
        *,
        exclusive: bool = False,
    ) -> None:
        previous = self.checkpoint.claims.get(ref.uid)
        started_at = previous.started_at if previous is not None else self.clock()
        record = ClaimRecord(
            uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            state=state,
            started_at=started_at,
            devices=devices,
        )
        async with self._checkpoint_lock:
            # Checked under the same lock as the record is written, so that of two claims racing
            # for one device exactly one gets it.
            if exclusive:
                self._refuse_taken(ref, devices)
            await asyncio.to_thread(self.checkpoint.put, record)

    def _refuse_taken(self, ref: ClaimRef, devices: Sequence[ClaimDevice]) -> None:
        # A device held by another claim means a scheduler race or a claim never unprepared (its pod
        # force-deleted): handing it out twice would let two domains share it on this node. A claim
        # whose prepare began holds its devices too, as the kubelet retries it until it completes.
        for device in devices:
            if device.channel is None:
                continue
            holder_record = channels.channel_holder(
                self.checkpoint.claims.values(), ref.uid, device.domain_id, device.channel
            )
            if holder_record is not None:
                raise _Refused(
                    f"ResourceClaim {ref}: IMEX channel {device.channel} is already held on this node by "
                    f"ResourceClaim {_holder(holder_record)} of another ComputeDomain (UID "
                    f"{_domain_of_channel(holder_record, device.channel)}); it is free again once that "
                    "claim is unprepared",
                    "Taken",
                )
        # The shared channel device of clique mode is allocated to many claims at once by design.
        wanted = {(d.pool, d.device) for d in devices if d.device != SHARED_CHANNEL_DEVICE}
        for other in self.checkpoint.claims.values():
            if other.uid == ref.uid:
                continue
            for device in other.devices:
                if (device.pool, device.device) not in wanted:
                    continue
                holder = _holder(other)
                how = "prepared" if other.state == "PrepareCompleted" else "being prepared"
                raise _Refused(
                    f"ResourceClaim {ref}: device {device.device} of pool {device.pool} is already {how} "
                    f"for ResourceClaim {holder}; it is free again once that claim is unprepared",
                    "Taken",
                )

    # --- unprepare --------------------------------------------------------------------------------

    async def _unprepare_one(self, ref: ClaimRef) -> str:
        started = time.monotonic()
        try:
            await self.release(ref.uid)
        except Exception as error:
            log.exception("claim %s (%s): unprepare failed", ref, ref.uid)
            _count_error("unprepare", "Internal")
            return f"unprepare of claim {ref} failed: {error}"
        metrics.UNPREPARE_SECONDS.observe(time.monotonic() - started)
        return ""

    async def release(self, uid: str) -> bool:
        """Remove the claim's CDI spec and its checkpoint entry; False when nothing was there."""
        removed = await asyncio.to_thread(self.specs.remove, uid)
        async with self._checkpoint_lock:
            record = await asyncio.to_thread(self.checkpoint.discard, uid)
        if record is not None or removed:
            log.info("unprepared claim %s", f"{record.namespace}/{record.name} ({uid})" if record else uid)
            metrics.UNPREPARES.inc()
            return True
        log.debug("claim %s was not prepared here: nothing to unprepare", uid)
        return False

    async def release_if(self, uid: str, stale: Callable[[ClaimRecord], Awaitable[str | None]]) -> str | None:
        """Under the claim's lock, release it if `stale` gives a reason for its record; that reason.

        `stale` sees the record as it is once no prepare or unprepare of the claim runs, so a claim
        prepared while the caller waited for the lock is judged by what it became.
        """

        async def judge(_ref: ClaimRef) -> str | None:
            record = self.checkpoint.claims.get(uid)
            if record is None:
                return None
            why = await stale(record)
            if why is not None and not await self.release(uid):
                return None
            return why

        result: str | None = await self._locked(uid, judge, ClaimRef("", "", uid))
        return result

    # --- for the stale-claim sweep -----------------------------------------------------------------

    def claim_uids(self) -> list[str]:
        """The UIDs of the claims this node prepared or began to prepare."""
        return list(self.checkpoint.claims)

    async def forget_previous_boot(self) -> list[str]:
        """Remove the CDI specs of the claims of a previous boot's checkpoint; the UIDs of those removed.

        The runtime of this boot must never use them: the devices they describe are gone.
        """
        removed = []
        for uid in list(self.checkpoint.dropped):
            if await asyncio.to_thread(self.specs.remove, uid):
                removed.append(uid)
            self.checkpoint.dropped.pop(uid, None)
        return removed

    async def remove_unused_domain_dirs(self) -> list[str]:
        """Remove the IMEX config folders of the domains no claim uses; the UIDs of those removed.

        A prepare records its claim before it makes the domain's config folder, and no claim is
        recorded meanwhile, so a folder of a domain outside the checkpoint is not in use and none is
        being made.
        """
        async with self._checkpoint_lock:
            used = {d.domain_id for r in self.checkpoint.claims.values() for d in r.devices}
            return await asyncio.to_thread(self._remove_domain_dirs_except, used)

    def _remove_domain_dirs_except(self, used: set[str]) -> list[str]:
        root = self.paths.domains_dir
        if not root.is_dir():
            return []
        removed = []
        for entry in root.iterdir():
            if entry.is_dir() and entry.name not in used:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def _holder(record: ClaimRecord) -> str:
    return f"{record.namespace}/{record.name} (UID {record.uid})" if record.name else record.uid


def _domain_of_channel(record: ClaimRecord, channel: int) -> str:
    return next((d.domain_id for d in record.devices if d.channel == channel), "?")
