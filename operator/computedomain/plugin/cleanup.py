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
import shutil
import time
from collections.abc import Callable

from computedomain.plugin.checkpoint import ClaimRecord
from computedomain.plugin.core import Core
from computedomain.plugin.view import NodeView

log = logging.getLogger(__name__)


class Sweeper:
    """Finds and releases stale claims; removes config folders no claim uses.

    An unfinished prepare older than `stale_after` seconds whose claim still exists is only reported.
    """

    def __init__(
        self,
        core: Core,
        view: NodeView,
        *,
        interval: float,
        stale_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
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
        for uid in list(self.core.checkpoint.claims):
            try:
                why = await self.core.release_if(uid, self._stale)
            except Exception as error:  # the API may be away; try again next time
                log.warning("cannot sweep claim %s: %s", uid, error)
                continue
            if why is not None:
                log.info("unprepared stale claim %s: %s", uid, why)
                released.append(uid)
        for uid in list(self.core.checkpoint.dropped):
            # Specs of a previous boot's claims: the runtime of this boot must never use them.
            if await asyncio.to_thread(self.core.specs.remove, uid):
                log.info("removed the CDI spec of claim %s of a previous boot", uid)
            self.core.checkpoint.dropped.pop(uid, None)
        async with self.core.domains_in_use() as used:
            await asyncio.to_thread(self._remove_unused_domain_dirs, used)
        return released

    def _remove_unused_domain_dirs(self, used: set[str]) -> None:
        root = self.core.paths.domains_dir
        if not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.is_dir() and entry.name not in used:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("removed the IMEX config folder of ComputeDomain %s: no claim uses it", entry.name)

    async def run(self) -> None:
        """Sweep now and then every `interval` seconds (forever)."""
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("stale claim sweep failed")
            await asyncio.sleep(self.interval)
