"""The controller process: HTTP endpoints, and one Kopf operator run per leadership term.

Kopf owns each run: its startup handler campaigns for the lease and starts the term's caches, work
queue and sweep (`controller.term`), its cleanup handler stops them and releases the lease, and it
handles SIGTERM/SIGINT. A replica that loses its lease (it could not renew in time, or another
process wrote the lease) stops acting at once and raises the run's stop flag; Kopf stops, dropping
everything the term knew, and the next run campaigns again in the same process and leads with fresh
caches if it wins. A long outage of the API server therefore costs no restart: the leader's own lease
is still its own when the server comes back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import kopf

from computedomain import endpoints
from computedomain.controller import metrics
from computedomain.controller.runtime.crdcheck import CrdCheck
from computedomain.controller.runtime.handlers import build_registry, kopf_settings
from computedomain.controller.runtime.leader import LeaseFence
from computedomain.controller.runtime.term import Term
from computedomain.controller.settings import Settings
from computedomain.kube import Kube
from computedomain.kube.backoff import Backoff
from computedomain.kube.config import Connection
from computedomain.kube.events import Recorder

logger = logging.getLogger(__name__)

# A run that lasted this long counts as working: the delay after its failure starts short again.
_HEALTHY_RUN = 60.0


class Controller:
    """One controller replica; `run()` returns the process exit code."""

    def __init__(self, settings: Settings, connection: Connection) -> None:
        self.settings = settings
        self.connection = connection
        # One recorder for every term: an Event said again in a later term counts on the same object.
        self.events = Recorder()
        self.crd_check = CrdCheck(self.events)
        self.term: Term | None = None

    def client(self, fence: LeaseFence | None) -> Kube:
        """A client whose every write first passes `fence` (None: no leader election), so that no
        task of a term that has ended can write, even once a later term holds the lease again."""

        def before_write(verb: str) -> None:
            if fence is not None:
                fence.check()
            metrics.count_write(verb)

        return Kube(self.connection, on_write=before_write, connections=self.settings.api_connections)

    def lease_client(self) -> Kube:
        """The lease's own client, shared by every term: its renewals never wait behind the
        reconciles'."""
        return Kube(self.connection, on_write=metrics.count_write, connections=2)

    def readiness(self) -> tuple[bool, str]:
        """Ready while waiting as a standby, or while leading with every cache loaded."""
        term = self.term
        return (True, "standby") if term is None else term.readiness()

    async def run(self) -> int:
        """Serve HTTP and run one term after another until Kopf is stopped: 0 on a signal, 1 when a
        task of a term ended that never should."""
        runner = await endpoints.serve(endpoints.make_app(self.readiness), self.settings.http_port)
        lease_kube = self.lease_client() if self.settings.leader_election else None
        try:
            return await self._terms(lease_kube)
        finally:
            await runner.cleanup()
            if lease_kube is not None:
                await lease_kube.close()

    async def _terms(self, lease_kube: Kube | None) -> int:
        loop = asyncio.get_running_loop()
        backoff = Backoff(initial=1.0, maximum=30.0)
        delay = 0.0
        while True:
            term = Term(self.settings, self.client, lease_kube, self.crd_check, delay, events=self.events)
            self.term = term
            began = loop.time()
            failure: Exception | None = None
            try:
                await self.operate(term)
            except Exception as error:
                failure = error
            finally:
                await term.stop()
                self.term = None
            if term.failed:
                return 1
            if failure is not None:
                # Kopf ends its run when a watch fails in a way it does not retry (an ERROR event
                # other than 410 in a stream, a 404), which no setting of Kopf's changes: the term
                # ends as if its lease were lost, and the next campaign waits a little, growing while
                # runs keep failing.
                if loop.time() - began > _HEALTHY_RUN:
                    backoff.reset()
                delay = backoff.next()
                detail = str(failure) or type(failure).__name__
                logger.error("Kopf stopped: %s; campaigning again in %.1fs", detail, delay, exc_info=failure)
                continue
            if not term.lost:
                return 0  # Kopf was stopped from outside: SIGTERM or SIGINT
            delay = 0.0
            logger.warning("lost the leader lease; stopped acting, campaigning again with a fresh view")

    async def operate(self, term: Term) -> None:
        """One Kopf operator run: cluster-wide, without Kopf's peering, until the term ends on its
        own (`term.over`) or Kopf is stopped by a signal."""
        await kopf.operator(
            registry=build_registry(term, self.connection),
            settings=kopf_settings(),
            clusterwide=True,
            standalone=True,
            # Given, not detected: Kopf's own guess asks the password database for the user's name,
            # and the image's user 65532 has no entry there (KeyError: getpwuid(): uid not found).
            identity=cast(Any, self.settings.pod_name),  # Kopf's `Identity` is a NewType of str
            stop_flag=term.over,
        )
