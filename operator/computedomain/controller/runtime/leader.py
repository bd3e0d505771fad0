"""Leader election on a coordination.k8s.io Lease: at most one replica acts at a time.

The rules, each of which closes a way to a split brain:

- A replica acts only while its `LeaseFence` is valid: until `renew_deadline` seconds after it *sent*
  its last successful acquire or renewal. Every write of the controller passes the fence first.
- Any error while acquiring means "not leader"; any error while renewing leaves the fence to run
  out. A renewal the API server refuses as a conflict means another process wrote the lease: the
  fence is revoked at once.
- A standby takes a lease held by another identity only when it has expired by the holder's
  `renewTime` *and* the standby has itself watched the same record, unchanged, for `renew_deadline`
  seconds. The second condition makes the hand-over safe whatever the clocks say: the holder's
  fence, measured on its own monotonic clock from before the record existed, has run out by then.
  The write that takes the lease carries the resourceVersion that was observed, so a renewal that
  lands in between wins and the take-over fails.
- The identity is the pod name alone. A restarted container (same pod) finds its own name on the
  lease and takes it back at once instead of waiting for its previous life's lease to expire.
- A clean stop releases the lease so that a standby takes over on its next attempt.

Every reading of time goes through a `Clock` (the real one unless given another), so that the rules
can be checked against a clock that moves only when told to.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from computedomain.controller import metrics
from computedomain.kube import LEASES, Kube, KubeError, Object

logger = logging.getLogger(__name__)

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# The shortest wait between two attempts, so that a lease about to expire is polled closely.
_MIN_WAIT = 0.05


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _wall() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Clock:
    """Where leader election reads time: monotonic seconds for the fence and for how long a standby
    has watched a lease, wall time for the lease's own timestamps, and the sleep between attempts."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = _wall
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


REAL_CLOCK = Clock()


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts, how long the leader may take to renew, how often to try."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class NotLeading(RuntimeError):
    """A write was attempted without a valid lease; nothing was sent."""


class LeaseFence:
    """Until when this replica may act, on the monotonic clock (never, until extended)."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._until = -math.inf

    def extend(self, until: float) -> None:
        """Allow acting until `until` (seconds of the fence's monotonic clock)."""
        self._until = until

    def revoke(self) -> None:
        """Stop acting at once."""
        self._until = -math.inf

    def remaining(self) -> float:
        """Seconds left (negative once run out)."""
        return self._until - self._monotonic()

    @property
    def valid(self) -> bool:
        """Whether acting is allowed now."""
        return self.remaining() > 0

    def check(self) -> None:
        """Raise `NotLeading` unless acting is allowed now."""
        if not self.valid:
            raise NotLeading("no valid leader lease: refusing to write")


@dataclass
class _Observation:
    """The lease record a standby last saw, and when (monotonic) it first saw that version."""

    version: str
    since: float


class LeaderElector:
    """Acquire, hold and release one Lease in one namespace under the pod's name."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self.fence = LeaseFence(clock.monotonic)
        # The lease as we last wrote it, while we hold it.
        self._held: Object | None = None
        # renewTimes of renewals whose answer was lost: finding one on the lease means it was ours.
        self._unconfirmed: set[str] = set()
        self._observed: _Observation | None = None

    # --- one attempt each ----------------------------------------------------------------------------

    def _spec(self, now: datetime.datetime, previous: Object | None) -> Object:
        spec = dict((previous or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.identity:
            transitions += 1 if previous else 0
            spec["acquireTime"] = _format(now)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, math.ceil(self.timing.duration)),
            renewTime=_format(now),
            leaseTransitions=transitions,
        )
        return spec

    async def _write(self, lease: Object, sent: float) -> None:
        path = LEASES.path(self.namespace, self.name)
        self._held = await self.kube.call("PUT", path, body=lease)
        self._unconfirmed.clear()
        self.fence.extend(sent + self.timing.renew_deadline)

    def _wait_to_take(self, lease: Object) -> float:
        """Seconds until a standby may take `lease` (0: now)."""
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self.identity:
            return 0.0
        version = str(lease.get("metadata", {}).get("resourceVersion", ""))
        now = self.clock.monotonic()
        if self._observed is None or self._observed.version != version:
            self._observed = _Observation(version, now)
        renewed = _parse(spec.get("renewTime")) or _EPOCH
        duration = float(spec.get("leaseDurationSeconds") or self.timing.duration)
        by_holder = (renewed - self.clock.wall()).total_seconds() + duration
        by_us = self._observed.since + self.timing.renew_deadline - now
        return max(0.0, by_holder, by_us)

    async def try_acquire(self) -> float:
        """One attempt to take the lease: 0.0 when we hold it afterwards, else how long to wait
        before the lease may be taken (errors propagate; the caller treats them as "not leader")."""
        sent = self.clock.monotonic()
        lease = await self.kube.get(LEASES, self.name, self.namespace)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(self.clock.wall(), None),
            }
            try:
                self._held = await self.kube.create(LEASES, body)
            except KubeError as error:
                if error.status == 409:
                    return self.timing.retry_period
                raise
            self.fence.extend(sent + self.timing.renew_deadline)
            return 0.0
        wait = self._wait_to_take(lease)
        if wait > 0:
            return wait
        lease["spec"] = self._spec(self.clock.wall(), lease)
        try:
            await self._write(lease, sent)
        except KubeError as error:
            if error.status == 409:  # someone else wrote it first
                return self.timing.retry_period
            raise
        self._observed = None
        return 0.0

    async def renew(self) -> bool:
        """One renewal of the lease we hold; False when another process wrote it (we lost it)."""
        if self._held is None:
            return False
        sent = self.clock.monotonic()
        held = dict(self._held)
        held["spec"] = self._spec(self.clock.wall(), held)
        stamp = str(held["spec"]["renewTime"])
        self._unconfirmed.add(stamp)
        try:
            await self._write(held, sent)
            return True
        except KubeError as error:
            if error.status not in (404, 409):
                raise
        # A conflict: either our own earlier renewal landed without us hearing the answer, or
        # someone else wrote the lease. Only the former lets us go on.
        live = await self.kube.get(LEASES, self.name, self.namespace)
        spec: dict[str, Any] = (live or {}).get("spec") or {}
        if live is None or spec.get("holderIdentity") != self.identity:
            return False
        if spec.get("renewTime") not in self._unconfirmed:
            logger.error("lease %s was renewed by another process named %s", self.name, self.identity)
            return False
        self._held = live
        return await self.renew()

    # --- the loops -----------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until this replica holds the lease. Never raises (but for cancellation): any error
        is logged and means "not leader yet"."""
        logger.info("waiting to lead as %s (lease %s/%s)", self.identity, self.namespace, self.name)
        while True:
            try:
                wait = await asyncio.wait_for(self.try_acquire(), self.timing.renew_deadline)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a cut connection takes many shapes; each means "not leader"
                self.fence.revoke()
                self._held = None
                logger.warning("lease attempt failed: %s", str(error) or type(error).__name__)
                wait = self.timing.retry_period
            if wait <= 0 and self.fence.valid:
                logger.info("leading as %s", self.identity)
                metrics.LEADER.set(1)
                return
            await self.clock.sleep(min(self.timing.retry_period, max(_MIN_WAIT, wait)))

    async def hold(self) -> None:
        """Renew every `retry_period` until leadership is lost; then revoke the fence and return.

        Leadership is lost when a renewal is refused (someone else wrote the lease) or when no
        renewal succeeded within `renew_deadline` of the last good one.
        """
        while True:
            await self.clock.sleep(self.timing.retry_period)
            remaining = self.fence.remaining()
            if remaining <= 0:
                logger.error("could not renew lease %s within %.0fs", self.name, self.timing.renew_deadline)
                break
            try:
                async with asyncio.timeout(min(remaining, self.timing.renew_deadline / 2)):
                    if await self.renew():
                        continue
                logger.error("lease %s taken by another replica", self.name)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:  # transient or not: the fence decides when to give up
                logger.warning("lease renewal failed: %s", str(error) or type(error).__name__)
        self.fence.revoke()
        self._held = None
        metrics.LEADER.set(0)

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so that a standby takes over at once."""
        held, holding = self._held, self.fence.valid
        self.fence.revoke()
        self._held = None
        metrics.LEADER.set(0)
        if held is None or not holding:
            return
        held = dict(held)
        held["spec"] = {**(held.get("spec") or {}), "holderIdentity": "", "renewTime": _format(_EPOCH)}
        try:
            async with asyncio.timeout(self.timing.renew_deadline / 2):
                await self.kube.call("PUT", LEASES.path(self.namespace, self.name), body=held)
        except Exception as error:  # shutting down: a lease left behind just expires
            logger.warning("could not release the lease: %s", str(error) or type(error).__name__)
