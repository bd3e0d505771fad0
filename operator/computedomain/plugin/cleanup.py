"""Periodic cleanup of claims the kubelet will never unprepare, and of unused IMEX config folders.

A claim is stale when it no longer exists on the API server, or a claim of the same name with another
UID took its place (deleted while the plugin was down, or its pod force-deleted), whether its prepare
finished or not. Age alone never makes a claim stale: a prepare the kubelet retries may complete at
any time, and its container needs the CDI spec. Each claim is judged under its own lock, so no
prepare or unprepare of it runs meanwhile. Stale claims lose their CDI spec and their checkpoint
entry, as an unprepare would do.

A domain's IMEX config folder is used only by this node's IMEX daemon, through the daemon's claim,
which stays in the checkpoint while it is prepared. A folder no claim of the checkpoint names is
therefore unused, whether its domain still exists or not; a daemon that comes back gets it anew at
its prepare. So the sweep needs no knowledge of which domains exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from computedomain.plugin.checkpoint import ClaimRecord
from computedomain.plugin.view import NodeView

log = logging.getLogger(__name__)


class Claims(Protocol):
    """What the sweep needs of the driver (`core.Core` has it)."""

    def claim_uids(self) -> list[str]:
        """The UIDs of the claims prepared or being prepared."""
        ...

    async def release_if(self, uid: str, stale: Callable[[ClaimRecord], Awaitable[str | None]]) -> str | None:
        """Under the claim's lock, release it if `stale` gives a reason for its record; that reason."""
        ...

    async def forget_previous_boot(self) -> list[str]:
        """Remove the CDI specs of a previous boot's claims; their UIDs."""
        ...

    async def remove_unused_domain_dirs(self) -> list[str]:
        """Remove the config folders of domains no claim uses; their UIDs."""
        ...


class Sweeper:
    """Finds and releases stale claims; removes config folders no claim uses.

    An unfinished prepare older than `stale_after` seconds whose claim still exists is only reported.
    """

    def __init__(
        self,
        claims: Claims,
        view: NodeView,
        *,
        interval: float,
        stale_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.claims = claims
        self.view = view
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock

    async def _stale(self, record: ClaimRecord) -> str | None:
        # Only the claim's absence decides: a prepare that waited long in the gate may have just
        # completed, and an unfinished one may still be retried by the kubelet.
        claim = await self.view.read_claim(record.namespace, record.name)
        if claim is None:
            return "the claim no longer exists"
        if claim.get("metadata", {}).get("uid") != record.uid:
            return "the claim was replaced by another of the same name"
        age = self.clock() - record.started_at
        if record.state == "PrepareStarted" and age > self.stale_after:
            log.warning(
                "the prepare of claim %s/%s (%s) began %.0fs ago and has not finished; its claim "
                "still exists, so it is kept",
                record.namespace,
                record.name,
                record.uid,
                age,
            )
        return None

    async def sweep_once(self) -> list[str]:
        """One pass; returns the UIDs of the claims it released."""
        released = []
        for uid in self.claims.claim_uids():
            try:
                why = await self.claims.release_if(uid, self._stale)
            except Exception as error:  # the API may be away; try again next time
                log.warning("cannot sweep claim %s: %s", uid, error)
                continue
            if why is not None:
                log.info("unprepared stale claim %s: %s", uid, why)
                released.append(uid)
        for uid in await self.claims.forget_previous_boot():
            log.info("removed the CDI spec of claim %s of a previous boot", uid)
        for domain_uid in await self.claims.remove_unused_domain_dirs():
            log.info("removed the IMEX config folder of ComputeDomain %s: no claim uses it", domain_uid)
        return released

    async def run(self) -> None:
        """Sweep now and then every `interval` seconds (forever)."""
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("stale claim sweep failed")
            await asyncio.sleep(self.interval)
