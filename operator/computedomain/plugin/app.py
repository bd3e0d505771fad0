"""The plugin process: the ComputeDomain driver (caches, core, stale-claim sweep) served by the kubelet
plugin framework (slice publisher, health, gRPC), and HTTP.

The node's ResourceSlice is published only once the kubelet has confirmed the registration: a claim
the scheduler allocates on this node's devices earlier would reach a kubelet that answers "driver not
registered" and retries the pod only about a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from computedomain import endpoints
from computedomain.api import names
from computedomain.kube import Kube
from computedomain.kube.config import Connection
from computedomain.plugin import metrics
from computedomain.plugin.cdi import SpecStore
from computedomain.plugin.checkpoint import Checkpoint, read_boot_id
from computedomain.plugin.cleanup import Sweeper
from computedomain.plugin.core import Core
from computedomain.plugin.edits import HostPaths
from computedomain.plugin.health import default_source
from computedomain.plugin.kubeio import (
    FIELD_MANAGER,
    CliqueChannels,
    KubeNodeView,
    discover_resource_version,
    slice_publisher,
)
from computedomain.plugin.kubelet.health import HealthMonitor, HealthSource
from computedomain.plugin.kubelet.metrics import REGISTERED
from computedomain.plugin.kubelet.servers import PluginServers
from computedomain.plugin.kubelet.slices import SlicePublisher
from computedomain.plugin.settings import PluginSettings

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
DOMAINS_DIR = "domains"
# How often a plugin the kubelet has not registered yet says so in its log.
REGISTRATION_LOG_INTERVAL = 30.0
WAITING_FOR_REGISTRATION = "waiting for the kubelet's registration"


class Plugin:
    """One node's kubelet plugin; `run()` returns the process exit code."""

    def __init__(
        self, settings: PluginSettings, connection: Connection, health: HealthSource | None = None
    ) -> None:
        self.settings = settings
        self.kube = Kube(connection, field_manager=FIELD_MANAGER)
        self.health = health or default_source(settings.health_source)
        self.stop = asyncio.Event()
        self.view: KubeNodeView | None = None
        # Clique mode only: the domains' channels and the clique daemon pod on this node.
        self.channels: CliqueChannels | None = None
        self.publisher: SlicePublisher | None = None
        self.servers: PluginServers | None = None
        self.core: Core | None = None
        self.registered = False
        self.serving = asyncio.Event()
        # Set by the kubelet's first confirmation and never cleared: a kubelet that restarts registers
        # the plugin again, and the slice it deletes at its start is put back by the publisher.
        self.confirmed = asyncio.Event()

    def readiness(self) -> tuple[bool, str]:
        """Ready once caches are loaded, the sockets listen, the kubelet confirmed the registration and
        the slice is published."""
        if self.view is None or not self.view.synced:
            return False, "caches loading"
        if not self.serving.is_set():
            return False, "sockets not listening yet"
        if not self.confirmed.is_set():
            return False, WAITING_FOR_REGISTRATION
        if self.publisher is None or not self.publisher.published.is_set():
            return False, "ResourceSlice not published"
        return True, "registered" if self.registered else "serving, waiting for the kubelet"

    def _on_registration(self, registered: bool, error: str) -> None:
        self.registered = registered
        REGISTERED.set(1 if registered else 0)
        if registered:
            self.confirmed.set()

    async def _publish_once_registered(self, publisher: SlicePublisher) -> None:
        # A kubelet that never confirms leaves the slice unpublished for good: this node cannot
        # prepare a claim, so no claim may be allocated on its devices.
        waited = 0.0
        while not self.confirmed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.confirmed.wait(), REGISTRATION_LOG_INTERVAL)
            if not self.confirmed.is_set():
                waited += REGISTRATION_LOG_INTERVAL
                log.warning(
                    "the kubelet has not registered the plugin after %.0f s (is %s under the kubelet's "
                    "--root-dir?); the ResourceSlice is published once it does",
                    waited,
                    self.settings.registration_socket,
                )
        await publisher.run()

    async def run(self) -> int:
        """Serve until `stop` is set; 1 when a part of the plugin failed."""
        runner = None
        if self.settings.http_port:
            runner = await endpoints.serve(endpoints.make_app(self.readiness), self.settings.http_port)
        tasks: set[asyncio.Task[Any]] = set()

        def start(name: str, coro: Coroutine[Any, Any, Any]) -> None:
            tasks.add(asyncio.create_task(coro, name=name))

        try:
            start("stop", self.stop.wait())
            discovery = asyncio.create_task(discover_resource_version(self.kube))
            await asyncio.wait({discovery, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if not discovery.done():
                discovery.cancel()
                return 0
            version = discovery.result()
            if version is None:
                log.error("the API server serves no resource.k8s.io version this plugin knows")
                return 1
            log.info(
                "node %s, resource.k8s.io/%s, IMEX mode %s",
                self.settings.node_name,
                version,
                self.settings.imex_mode,
            )
            self.view = KubeNodeView(self.kube, self.settings.node_name, self.settings.namespace, version)
            start("caches", self.view.run())
            waits = [self.view.wait_synced()]
            if self.settings.clique_mode:
                self.channels = CliqueChannels(self.kube, self.settings.node_name, self.settings.namespace)
                start("clique daemon cache", self.channels.run())
                waits.append(self.channels.wait_synced())
            synced = asyncio.create_task(_all(waits))
            await asyncio.wait({synced, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            if not synced.done():
                synced.cancel()
                return self._exit_code(tasks)
            self.core = await asyncio.to_thread(self._build_core, self.view)
            sweeper = Sweeper(
                self.core,
                self.view,
                interval=self.settings.cleanup_interval,
                stale_after=self.settings.stale_after,
            )
            start("sweep", sweeper.run())
            monitor = HealthMonitor(self.health, self.settings.health_interval)
            await monitor.check_once()
            start("health", monitor.run())
            self.servers = PluginServers(
                names.DRIVER,
                self.core,
                monitor,
                self.settings.node_name,
                self.settings.dra_socket,
                self.settings.registration_socket,
                self._on_registration,
                health_resend=self.settings.health_interval,
            )
            await self.servers.start()
            self.serving.set()
            self.publisher = slice_publisher(self.kube, self.view, shared_channel=self.settings.clique_mode)
            start("slice", self._publish_once_registered(self.publisher))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            return self._exit_code(tasks)
        finally:
            if self.servers is not None:
                await self.servers.stop()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if runner is not None:
                await runner.cleanup()
            await self.kube.close()

    def _build_core(self, view: KubeNodeView) -> Core:
        state = self.settings.state
        checkpoint = Checkpoint(state / CHECKPOINT_FILE, read_boot_id(self.settings.boot_id_file))
        checkpoint.load()
        metrics.PREPARED_CLAIMS.set_function(lambda: len(checkpoint.claims))
        paths = HostPaths(
            proc_devices=self.settings.proc_devices,
            driver_root=self.settings.driver_root,
            host_driver_root=self.settings.host_root,
            domains_dir=state / DOMAINS_DIR,
        )
        log.info(
            "checkpoint %s: %d prepared claims; CDI specs in %s",
            checkpoint.path,
            len(checkpoint.claims),
            self.settings.cdi_root,
        )
        return Core(
            view,
            checkpoint,
            SpecStore(self.settings.cdi_root),
            paths,
            self.settings.node_name,
            prepare_wait=self.settings.prepare_wait,
            event_interval=self.settings.event_interval,
            channels=self.channels,
        )

    @staticmethod
    def _exit_code(tasks: set[asyncio.Task[Any]]) -> int:
        for task in tasks:
            if task.done() and task.get_name() != "stop":
                error = None if task.cancelled() else task.exception()
                log.error("%s ended unexpectedly: %s", task.get_name(), error)
                return 1
        return 0


async def _all(waits: list[Coroutine[Any, Any, None]]) -> None:
    await asyncio.gather(*waits)
