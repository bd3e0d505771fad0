"""The controller process: leader election, the caches, the work queue, Kopf, sweep and HTTP.

A replica that loses its lease (it could not renew in time, or another process wrote the lease) stops
acting at once and drops everything it knew; it then campaigns again in the same process, and leads
again with fresh caches if it wins. A long outage of the API server therefore costs no restart: the
leader's own lease is still its own when the server comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from computedomain import endpoints
from computedomain.controller import metrics
from computedomain.controller.crdcheck import CrdCheck
from computedomain.controller.events import EventRecorder
from computedomain.controller.handlers import build_registry, kopf_settings
from computedomain.controller.kopfrun import run_kopf
from computedomain.controller.leader import LeaderElector, LeaseFence, LeaseTiming
from computedomain.controller.reconcile import Reconciler
from computedomain.controller.settings import Settings
from computedomain.controller.sweep import sweep_forever
from computedomain.controller.workqueue import WorkQueue
from computedomain.controller.world import World
from computedomain.dra.versions import RESOURCE_GROUP, pick_resource_version, served_versions
from computedomain.kube import Kube, KubeError
from computedomain.kube.backoff import Backoff
from computedomain.kube.config import Connection

logger = logging.getLogger(__name__)


async def discover_resource_version(kube: Kube) -> str | None:
    """The preferred `resource.k8s.io` version the API server serves, or None."""
    try:
        group = await kube.call("GET", f"/apis/{RESOURCE_GROUP}")
    except KubeError as error:
        if error.status == 404:
            return None
        raise
    return pick_resource_version(served_versions(group))


class Controller:
    """One controller replica; `run()` returns the process exit code."""

    def __init__(self, settings: Settings, connection: Connection) -> None:
        self.settings = settings
        self.connection = connection
        self.stop = asyncio.Event()
        self.leading = False
        self.world: World | None = None
        self.queue: WorkQueue | None = None
        self.crd_check = CrdCheck()
        # Tasks of a term whose end does not end the term.
        self._side_tasks: set[asyncio.Task[Any]] = set()
        # The client of the current term (each term has its own, fenced by that term's lease).
        self.kube = self.client(None)

    def client(self, fence: LeaseFence | None) -> Kube:
        """A client whose every write first passes `fence` (None: no leader election), so that no
        task of a term that has ended can write, even once a later term holds the lease again."""

        def before_write(verb: str) -> None:
            if fence is not None:
                fence.check()
            metrics.count_write(verb)

        return Kube(self.connection, on_write=before_write, connections=self.settings.api_connections)

    def readiness(self) -> tuple[bool, str]:
        """Ready while waiting as a standby, or while leading with every cache loaded."""
        if not self.leading:
            return True, "standby"
        synced = self.world is not None and self.world.synced()
        return synced, "leading" if synced else "leading, caches loading"

    async def run(self) -> int:
        """Serve HTTP, wait for the lease, then reconcile until stopped (campaigning again whenever
        the lease is lost)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        runner = await endpoints.serve(endpoints.make_app(self.readiness), self.settings.http_port)
        try:
            if not self.settings.leader_election:
                code = await self._lead(None)
                return 1 if code is None else code
            # The lease has a client of its own: its renewals never wait behind the reconciles'.
            lease_kube = Kube(self.connection, on_write=metrics.count_write, connections=2)
            try:
                return await self._campaign(lease_kube)
            finally:
                await lease_kube.close()
        finally:
            await runner.cleanup()
            await self.kube.close()

    async def _campaign(self, lease_kube: Kube) -> int:
        timing = LeaseTiming(
            self.settings.lease_duration, self.settings.renew_deadline, self.settings.retry_period
        )
        while True:
            # A new elector, and so a new fence, for every term.
            elector = LeaderElector(
                lease_kube, self.settings.namespace, self.settings.lease_name, self.settings.pod_name, timing
            )
            if not await self._until_stopped(elector.acquire()):
                return 0 if self.stop.is_set() else 1
            try:
                code = await self._lead(elector)
            finally:
                await elector.release()
            if code is not None:
                return code
            if self.stop.is_set():
                return 0
            logger.warning("lost the leader lease; stopped acting, campaigning again with a fresh view")

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` until it ends or the controller is stopped; True only if it ended well."""
        task = asyncio.create_task(work)
        stopper = asyncio.create_task(self.stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return False
        if task.cancelled() or task.exception() is not None:
            # Whatever went wrong, it did not make this replica the leader.
            logger.error(
                "campaign for the lease failed", exc_info=None if task.cancelled() else task.exception()
            )
            return False
        return True

    async def _discover(self, kube: Kube) -> str | None:
        """The served resource.k8s.io version, asked until the API server answers."""
        backoff = Backoff(initial=0.5, maximum=10.0)
        while True:
            try:
                return await discover_resource_version(kube)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the API server may be restarting: ask again
                delay = backoff.next()
                logger.warning("could not read the served API versions (%s); again in %.1fs", error, delay)
                await asyncio.sleep(delay)

    async def _lead(self, elector: LeaderElector | None) -> int | None:
        """One term: reconcile until stopped (0), lost the lease (None) or failed (1)."""
        old, self.kube = self.kube, self.client(None if elector is None else elector.fence)
        await old.close()
        self.leading = True
        metrics.LEADER.set(1)
        # The lease is renewed from the first moment of leading, even while the API server is away.
        tasks: set[asyncio.Task[Any]] = {asyncio.create_task(self.stop.wait(), name="stop")}
        if elector is not None:
            tasks.add(asyncio.create_task(elector.hold(), name="lease"))
        discovery = asyncio.create_task(self._discover(self.kube))
        await asyncio.wait({*tasks, discovery}, return_when=asyncio.FIRST_COMPLETED)
        if not discovery.done():
            discovery.cancel()
            await asyncio.gather(discovery, return_exceptions=True)
            return await self._finish(tasks, None, None)
        version = discovery.result()
        logger.info("leading; resource.k8s.io version %s", version or "none served")
        # Beside the reconciles, not before them: an outdated CRD costs status fields, not domains.
        self._side_tasks.add(asyncio.create_task(self.crd_check.run(self.kube), name="crd-check"))
        reconciler: Reconciler | None = None

        async def work(uid: str) -> float | None:
            assert reconciler is not None
            return await reconciler(uid)

        self.queue = WorkQueue(work, batch_window=self.settings.status_batch_window)
        self.world = World(self.kube, self.settings.namespace, version, self.queue.add)
        metrics.CACHES.figures = self.world.cache_figures
        reconciler = Reconciler(self.kube, self.world, self.settings, version, EventRecorder(self.kube))
        kopf_stop = asyncio.Event()
        stray = asyncio.Event()
        self.world.on_stray = lambda _: stray.set()
        tasks |= {
            asyncio.create_task(self.world.run(), name="informers"),
            asyncio.create_task(self.queue.run(), name="workqueue"),
            asyncio.create_task(
                sweep_forever(self.kube, self.world, self.settings.sweep_interval, stray), name="sweep"
            ),
        }
        registry = build_registry(self.world, self.queue.add, self.queue.forget)
        operator = asyncio.create_task(
            run_kopf(registry, kopf_settings, kopf_stop, self.stop.set, identity=self.settings.pod_name),
            name="kopf",
        )
        await asyncio.wait({*tasks, operator}, return_when=asyncio.FIRST_COMPLETED)
        return await self._finish(tasks, operator, kopf_stop)

    async def _finish(
        self,
        tasks: set[asyncio.Task[Any]],
        kopf_task: asyncio.Task[None] | None,
        kopf_stop: asyncio.Event | None,
    ) -> int | None:
        """End the term: 0 when the stop was asked for, None when the lease was lost, else 1."""
        finished = next(t for t in [*tasks, kopf_task] if t is not None and t.done())
        code: int | None = 0 if finished.get_name() == "stop" else 1
        if finished.get_name() == "lease":
            logger.error("lost the leader lease; stopping every activity of this term")
            code = None
        elif finished.get_name() != "stop" and not finished.cancelled():
            logger.error("%s ended", finished.get_name(), exc_info=finished.exception())
        self.leading = False
        metrics.LEADER.set(0)
        if kopf_stop is not None and kopf_task is not None:
            kopf_stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(kopf_task, 10)
        side, self._side_tasks = self._side_tasks, set()
        for task in tasks | side:
            task.cancel()
        await asyncio.gather(*tasks, *side, return_exceptions=True)
        self.world = None
        metrics.CACHES.figures = None
        self.queue = None
        return code
