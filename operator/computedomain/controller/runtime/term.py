"""One leadership term: the lease, the caches, the work queue and the sweep of one Kopf operator run.

Kopf's startup handler calls `Term.start`: a standby waits there for the lease, so Kopf opens no
watch before this replica leads. Kopf's cleanup handler calls `Term.stop`, which ends every task of
the term and releases the lease. A term that loses its lease raises `over`, the run's stop flag:
Kopf stops, and the process starts the next term (a fresh view, a new campaign) in the same process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from computedomain.api import names
from computedomain.controller import metrics
from computedomain.controller.events import EventRecorder
from computedomain.controller.reconcile import cliquedaemons
from computedomain.controller.reconcile.reconciler import Reconciler
from computedomain.controller.runtime.crdcheck import CrdCheck
from computedomain.controller.runtime.leader import LeaderElector, LeaseFence, LeaseTiming
from computedomain.controller.runtime.sweep import sweep_forever
from computedomain.controller.runtime.workqueue import WorkQueue
from computedomain.controller.settings import Settings
from computedomain.controller.world import World
from computedomain.kube import Kube, KubeError, Object
from computedomain.kube.discovery import discover_resource_version
from computedomain.kube.events import Recorder
from computedomain.kube.retry import RetryPolicy, always, retry

logger = logging.getLogger(__name__)

# Makes the client of a term: every write first passes the fence (None: no leader election).
ClientFactory = Callable[[LeaseFence | None], Kube]

LEASE_TASK = "lease"
# Until the API server answers and serves ComputeDomains, whatever it answers meanwhile.
_DISCOVERY_RETRY = RetryPolicy(initial=0.5, maximum=10.0, retry_on=always)


class CrdMissing(Exception):
    """The API server does not serve ComputeDomains (yet): the CRD is not installed or established."""


async def domains_served(kube: Kube) -> bool:
    """Whether the API server serves ComputeDomains (their CRD is installed and established)."""
    try:
        listing = await kube.call("GET", f"/apis/{names.GROUP}/{names.VERSION}")
    except KubeError as error:
        if error.status == 404:
            return False
        raise
    return any(r.get("name") == names.DOMAIN_PLURAL for r in listing.get("resources") or [])


class Term:
    """One leadership term of one replica; `start` and `stop` are Kopf's startup and cleanup."""

    def __init__(
        self,
        settings: Settings,
        client: ClientFactory,
        lease_kube: Kube | None,
        crd_check: CrdCheck,
        delay: float = 0.0,
        *,
        events: Recorder | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        # None without leader election; otherwise the lease's own client, shared by every term so
        # that its renewals never wait behind the reconciles'.
        self._lease_kube = lease_kube
        self._crd_check = crd_check
        # The process's Event recorder (a fresh one when None).
        self._events = events or Recorder()
        # How long to wait before campaigning (after a run that failed).
        self._delay = delay
        # Kopf's stop flag for this run: raised whenever the term ends (on its own, or in Kopf's
        # cleanup: Kopf leaves its waiter of this flag to its 5 s wait for stray tasks otherwise).
        self.over = asyncio.Event()
        # Why the term ended on its own: the lease was lost, or a task that must run as long as
        # the term ended (the process exits 1).
        self.lost = False
        self.failed = False
        self.leading = False
        self.elector: LeaderElector | None = None
        self.kube: Kube | None = None
        self.world: World | None = None
        # Clique mode only: the caches and reconcile of the long-running IMEX daemons.
        self.clique_daemons: cliquedaemons.CliqueDaemons | None = None
        self.queue: WorkQueue | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False

    async def start(self) -> None:
        """Wait for the lease (with leader election), then start the caches, the work queue, the
        sweep and the CRD check; return once Kopf may start watching ComputeDomains."""
        try:
            await self._start()
        except BaseException:
            # Kopf runs no cleanup handler after a startup that did not finish (a signal while
            # waiting for the lease, the lease lost before the caches started).
            await self.stop()
            raise

    async def _start(self) -> None:
        if self._delay > 0:
            logger.info("campaigning again in %.1fs", self._delay)
            await asyncio.sleep(self._delay)
        if self._lease_kube is not None:
            timing = LeaseTiming(
                self.settings.lease_duration, self.settings.renew_deadline, self.settings.retry_period
            )
            self.elector = LeaderElector(
                self._lease_kube,
                self.settings.namespace,
                self.settings.lease_name,
                self.settings.pod_name,
                timing,
            )
            await self.elector.acquire()
            # Renewed from the first moment of leading, even while the API server is away.
            self._spawn(self.elector.hold(), LEASE_TASK)
        self.kube = kube = self._client(None if self.elector is None else self.elector.fence)
        self.leading = True
        metrics.LEADER.set(1)
        version = await self._discover(kube)
        logger.info("leading; resource.k8s.io version %s", version or "none served")
        # Beside the reconciles, not before them: an outdated CRD costs status fields, not domains.
        self._spawn(self._crd_check.run(kube), "crd-check", essential=False)
        reconciler: Reconciler | None = None
        clique_daemons: cliquedaemons.CliqueDaemons | None = None

        async def work(key: str) -> float | None:
            if key == cliquedaemons.KEY and clique_daemons is not None:
                return await clique_daemons(key)
            assert reconciler is not None
            return await reconciler(key)

        self.queue = WorkQueue(work, batch_window=self.settings.status_batch_window)
        self.world = World(kube, self.settings.namespace, version, self.queue.add)
        if self.settings.imex_mode == names.IMEX_MODE_CLIQUE:
            # Before its informers start: the channel planner reads nodes and claims they add.
            self.world.use_clique_mode()
            metrics.POOL.source = metrics.PoolSource(
                self.world.holdings, self.world.node_cliques, self.settings.imex_channels
            )
        metrics.CACHES.figures = self.world.cache_figures
        reconciler = Reconciler(kube, self.world, self.settings, version, EventRecorder(kube, self._events))
        stray = asyncio.Event()
        self.world.on_stray = lambda _: stray.set()
        self._spawn(self.world.run(), "informers")
        self._spawn(self.queue.run(), "workqueue")
        self._spawn(sweep_forever(kube, self.world, self.settings.sweep_interval, stray), "sweep")
        if self.settings.imex_mode == names.IMEX_MODE_CLIQUE:
            self.clique_daemons = clique_daemons = cliquedaemons.CliqueDaemons(
                kube, self.settings, version, self.queue.add
            )
            self._spawn(clique_daemons.run(), "clique-daemons")
            # Once at the start of the term, whatever the caches bring: the DaemonSet must exist before
            # any of its pods or nodes is seen.
            self.queue.add(cliquedaemons.KEY)

    async def _discover(self, kube: Kube) -> str | None:
        """The served resource.k8s.io version, once the API server answers and serves ComputeDomains.

        Kopf resolves the kinds it watches once per run: a run that began without the CRD would never
        watch ComputeDomains, so the term waits for it here.
        """

        async def ask() -> str | None:
            if not await domains_served(kube):
                raise CrdMissing(f"the API server does not serve {names.DOMAIN_PLURAL}.{names.GROUP}")
            return await discover_resource_version(kube, policy=_DISCOVERY_RETRY, log=logger)

        return await retry(ask, what="reading the served API versions", policy=_DISCOVERY_RETRY, log=logger)

    def domain_event(self, event: Object) -> None:
        """Feed one ComputeDomain watch event to the caches and the work queue."""
        world, queue = self.world, self.queue
        if world is None or queue is None:
            return
        body = event.get("object") or {}
        uid = str(body.get("metadata", {}).get("uid", ""))
        if not uid:
            return
        if event.get("type") == "DELETED":
            world.drop_domain(uid)
            queue.forget(uid)
            return
        # The echo of our own write is known already: nothing new to reconcile. No copy is needed:
        # the world stores its own encoded copy.
        if world.set_domain(dict(body)):
            queue.add(uid)

    def readiness(self) -> tuple[bool, str]:
        """Ready while waiting as a standby, or while leading with every cache loaded."""
        if not self.leading:
            return True, "standby"
        synced = self.world is not None and self.world.synced()
        synced = synced and (self.clique_daemons is None or self.clique_daemons.synced())
        return synced, "leading" if synced else "leading, caches loading"

    def _spawn(self, work: Coroutine[Any, Any, None], name: str, essential: bool = True) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        if essential:
            task.add_done_callback(self._essential_ended)

    def _essential_ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopped or task.cancelled():
            return
        if task.get_name() == LEASE_TASK:
            logger.error("lost the leader lease; stopping every activity of this term")
            self.lost = True
        else:
            logger.error("%s ended", task.get_name(), exc_info=task.exception())
            self.failed = True
        # Acting stops here: the fence is revoked already (lease) and readiness says so at once.
        self.leading = False
        metrics.LEADER.set(0)
        self.over.set()

    async def stop(self) -> None:
        """End every task of the term, drop its caches and release the lease (once)."""
        if self._stopped:
            return
        self._stopped = True
        self.over.set()
        self.leading = False
        metrics.LEADER.set(0)
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.world = None
        self.clique_daemons = None
        self.queue = None
        metrics.CACHES.figures = None
        metrics.POOL.source = None
        metrics.NOT_READY.clear()
        if self.elector is not None:
            await self.elector.release()
        if self.kube is not None:
            await self.kube.close()
