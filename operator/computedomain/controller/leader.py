"""Leader election on a coordination.k8s.io Lease: exactly one replica reconciles at a time.

A replica that cannot renew within the renew deadline stops leading; the process then exits so that
it restarts with a clean memory instead of acting on a stale view (as client-go users do).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from dataclasses import dataclass

from computedomain.controller import metrics
from computedomain.kube import LEASES, Kube, KubeError, Object

logger = logging.getLogger(__name__)


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts, how long the leader may take to renew, how often to try."""

    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    """Acquire and hold one Lease in one namespace under a unique identity."""

    def __init__(self, kube: Kube, namespace: str, name: str, pod_name: str, timing: LeaseTiming) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = f"{pod_name}-{uuid.uuid4().hex[:8]}"
        self.timing = timing
        # The lease as we last wrote it, while we hold it.
        self._held: Object | None = None

    def _spec(self, now: datetime.datetime, previous: Object | None) -> Object:
        spec = dict((previous or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.identity:
            transitions += 1 if previous else 0
            spec["acquireTime"] = _format(now)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(1, round(self.timing.duration)),
            renewTime=_format(now),
            leaseTransitions=transitions,
        )
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards."""
        now = datetime.datetime.now(datetime.UTC)
        if self._held is not None:
            # Renewing what we wrote last: one PUT, no GET (a conflict means someone else wrote it).
            held, self._held = self._held, None
            held["spec"] = self._spec(now, held)
            try:
                self._held = await self.kube.call("PUT", LEASES.path(self.namespace, self.name), body=held)
                return True
            except KubeError as error:
                if error.status not in (404, 409):
                    raise
        lease = await self.kube.get(LEASES, self.name, self.namespace)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, None),
            }
            try:
                self._held = await self.kube.create(LEASES, body)
            except KubeError as error:
                if error.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.timing.duration)
        expired = renewed is None or renewed + datetime.timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        lease["spec"] = self._spec(now, lease)
        try:
            self._held = await self.kube.call("PUT", LEASES.path(self.namespace, self.name), body=lease)
        except KubeError as error:
            if error.status == 409:  # someone else updated it first
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        logger.info("waiting to lead as %s (lease %s/%s)", self.identity, self.namespace, self.name)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    logger.info("leading as %s", self.identity)
                    metrics.LEADER.set(1)
                    return
            except (KubeError, OSError, TimeoutError) as error:
                logger.warning("lease attempt failed: %s", error)
            await asyncio.sleep(self.timing.retry_period)

    async def hold(self) -> None:
        """Renew until a renewal cannot be made within the deadline; then return (leadership lost)."""
        last = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            try:
                if await asyncio.wait_for(self.try_acquire_or_renew(), self.timing.renew_deadline):
                    last = asyncio.get_running_loop().time()
                    continue
                logger.error("lease %s taken by another replica", self.name)
            except (KubeError, OSError, TimeoutError) as error:
                logger.warning("lease renewal failed: %s", error)
                if asyncio.get_running_loop().time() - last < self.timing.renew_deadline:
                    continue
            metrics.LEADER.set(0)
            return

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so that a standby takes over at once."""
        metrics.LEADER.set(0)
        self._held = None
        try:
            lease = await self.kube.get(LEASES, self.name, self.namespace)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["renewTime"] = _format(datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC))
            await self.kube.call("PUT", LEASES.path(self.namespace, self.name), body=lease)
        except (KubeError, OSError, TimeoutError) as error:
            logger.warning("could not release the lease: %s", error)
