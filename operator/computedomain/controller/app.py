"""The controller process: leader election, the caches, the work queue, Kopf, sweep and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import kopf
from kubernetes_asyncio.client import ApiClient

from computedomain import endpoints
from computedomain.controller import metrics
from computedomain.controller.events import EventRecorder
from computedomain.controller.handlers import build_registry, kopf_settings
from computedomain.controller.leader import LeaderElector, LeaseTiming
from computedomain.controller.reconcile import Reconciler
from computedomain.controller.settings import Settings
from computedomain.controller.sweep import sweep_forever
from computedomain.controller.workqueue import WorkQueue
from computedomain.controller.world import World
from computedomain.dra.versions import RESOURCE_GROUP, pick_resource_version, served_versions
from computedomain.kube import Kube, KubeError

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

    def __init__(self, settings: Settings, api: ApiClient) -> None:
        self.settings = settings
        self.kube = Kube(api, on_write=metrics.count_write)
        self.stop = asyncio.Event()
        self.leading = False
        self.world: World | None = None
        self.queue: WorkQueue | None = None

    def readiness(self) -> tuple[bool, str]:
        """Ready while waiting as a standby, or while leading with every cache loaded."""
        if not self.leading:
            return True, "standby"
        synced = self.world is not None and self.world.synced()
        return synced, "leading" if synced else "leading, caches loading"

    async def run(self) -> int:
        """Serve HTTP, wait for the lease, then reconcile until stopped or the lease is lost."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        runner = await endpoints.serve(endpoints.make_app(self.readiness), self.settings.http_port)
        elector = None
        try:
            if self.settings.leader_election:
                timing = LeaseTiming(
                    self.settings.lease_duration, self.settings.renew_deadline, self.settings.retry_period
                )
                elector = LeaderElector(
                    self.kube,
                    self.settings.namespace,
                    self.settings.lease_name,
                    self.settings.pod_name,
                    timing,
                )
                if not await self._until_stopped(elector.acquire()):
                    return 0
            return await self._lead(elector)
        finally:
            if elector is not None and self.leading:
                await elector.release()
            await runner.cleanup()
            await self.kube.close()

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        task = asyncio.create_task(work)
        stopper = asyncio.create_task(self.stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            return False
        return True

    async def _lead(self, elector: LeaderElector | None) -> int:
        self.leading = True
        metrics.LEADER.set(1)
        version = await discover_resource_version(self.kube)
        logger.info("leading; resource.k8s.io version %s", version or "none served")
        reconciler: Reconciler | None = None

        async def work(uid: str) -> float | None:
            assert reconciler is not None
            return await reconciler(uid)

        self.queue = WorkQueue(work, batch_window=self.settings.status_batch_window)
        self.world = World(self.kube, self.settings.namespace, version, self.queue.add)
        reconciler = Reconciler(self.kube, self.world, self.settings, version, EventRecorder(self.kube))
        kopf_stop = asyncio.Event()
        # Our tasks start before Kopf: on exit Kopf cancels tasks created after it started.
        tasks = {
            asyncio.create_task(self.world.run(), name="informers"),
            asyncio.create_task(self.queue.run(), name="workqueue"),
            asyncio.create_task(
                sweep_forever(self.kube, self.world, self.settings.sweep_interval), name="sweep"
            ),
            asyncio.create_task(self.stop.wait(), name="stop"),
        }
        if elector is not None:
            tasks.add(asyncio.create_task(elector.hold(), name="lease"))
        registry = build_registry(self.world, self.queue.add, self.queue.forget)
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                settings=kopf_settings(),
                clusterwide=True,
                standalone=True,
                stop_flag=kopf_stop,
            ),
            name="kopf",
        )
        done, _ = await asyncio.wait({*tasks, operator}, return_when=asyncio.FIRST_COMPLETED)
        finished = next(iter(done))
        code = 0 if finished.get_name() in ("stop", "kopf") else 1
        if finished.get_name() == "lease":
            logger.error("lost the leader lease; exiting so that a fresh process campaigns again")
            self.leading = False
        elif finished.get_name() not in ("stop", "kopf") and finished.exception() is not None:
            logger.error("%s failed", finished.get_name(), exc_info=finished.exception())
        kopf_stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(operator, 10)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return code
