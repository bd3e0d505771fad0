"""The plugin's gRPC services on unix sockets: registration, DRA v1 and v1beta1, resource health.

The kubelet finds the registration socket in `<root>/plugins_registry`, asks GetInfo (it allows 1 s),
then dials the DRA endpoint for prepare, unprepare and the health stream. Every kubelet API version is
translated here to and from the one `Driver`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from computedomain.plugin.kubelet.driver import ClaimRef, Driver, answer_deadline
from computedomain.plugin.kubelet.gen import (
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_v1_pb2,
    pluginregistration_v1_pb2_grpc,
)
from computedomain.plugin.kubelet.health import HealthMonitor

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
PLUGIN_TYPE = "DRAPlugin"


class RegistrationService:
    """pluginregistration.Registration: who we are and where the DRA service listens."""

    def __init__(self, driver_name: str, endpoint: Path, on_status: Callable[[bool, str], None]) -> None:
        self.driver_name = driver_name
        self.endpoint = endpoint
        self.on_status = on_status

    async def GetInfo(self, request: Any, context: Any) -> Any:
        """The plugin's identity; answered from memory, well within the kubelet's 1 s."""
        return pluginregistration_v1_pb2.PluginInfo(
            type=PLUGIN_TYPE,
            name=self.driver_name,
            endpoint=str(self.endpoint),
            supported_versions=list(SUPPORTED_VERSIONS),
        )

    async def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:
        """The kubelet's verdict on our registration."""
        if request.plugin_registered:
            log.info("registered with the kubelet")
        else:
            log.error("the kubelet refused the registration: %s", request.error)
        self.on_status(bool(request.plugin_registered), str(request.error))
        return pluginregistration_v1_pb2.RegistrationStatusResponse()


class DRAService:
    """DRAPlugin of one API version (v1 or v1beta1), translating to and from the driver."""

    def __init__(self, driver: Driver, messages: ModuleType) -> None:
        self.driver = driver
        self.messages = messages

    async def NodePrepareResources(self, request: Any, context: Any) -> Any:
        """Prepare every claim of the request; each claim gets its devices or its error, before the
        call's deadline."""
        deadline = answer_deadline(_time_remaining(context))
        claims = [ClaimRef(c.namespace, c.name, c.uid) for c in request.claims]
        outcomes = await self.driver.prepare(claims, deadline)
        response = self.messages.NodePrepareResourcesResponse()
        for uid, outcome in outcomes.items():
            entry = response.claims[uid]
            if outcome.error:
                entry.error = outcome.error
                continue
            for device in outcome.devices:
                entry.devices.add(
                    request_names=[device.request],
                    pool_name=device.pool,
                    device_name=device.device,
                    cdi_device_ids=list(device.cdi_device_ids),
                )
        return response

    async def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
        """Unprepare every claim of the request."""
        errors = await self.driver.unprepare([ClaimRef(c.namespace, c.name, c.uid) for c in request.claims])
        response = self.messages.NodeUnprepareResourcesResponse()
        for uid, error in errors.items():
            response.claims[uid].error = error
        return response


class HealthService:
    """v1alpha1.DRAResourceHealth: the health of our devices, sent at once and on every change."""

    def __init__(self, monitor: HealthMonitor, pool: str, devices: Sequence[str], resend: float) -> None:
        self.monitor = monitor
        self.devices = tuple(devices)
        self.pool = pool
        self.resend = resend

    def snapshot(self) -> Any:
        """The current reading for every device of this node's pool."""
        reading = self.monitor.current
        return dra_health_v1alpha1_pb2.NodeWatchResourcesResponse(
            devices=[
                dra_health_v1alpha1_pb2.DeviceHealth(
                    device=dra_health_v1alpha1_pb2.DeviceIdentifier(pool_name=self.pool, device_name=name),
                    health=reading.status,
                    last_updated_time=int(reading.checked_at),
                    health_check_timeout_seconds=int(self.resend * 3),
                    message=reading.message,
                )
                for name in self.devices
            ]
        )

    async def NodeWatchResources(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """Stream readings until the kubelet hangs up."""
        while True:
            version = self.monitor.changes.version
            yield self.snapshot()
            await self.monitor.changes.wait(version, self.resend)


def _time_remaining(context: Any) -> float | None:
    # Seconds left of the call's deadline; None when the caller set none (or a test passes no context).
    remaining = getattr(context, "time_remaining", None)
    value = remaining() if callable(remaining) else None
    return float(value) if value is not None else None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def _serve(path: Path, register: Callable[[Any], None]) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    _unlink(path)  # a socket left by an earlier run would make the bind fail
    server = grpc.aio.server()
    register(server)
    server.add_insecure_port(f"unix://{path}")
    await server.start()
    return server


class PluginServers:
    """Both gRPC servers: DRA (with health) first, registration last, so the kubelet never waits."""

    def __init__(
        self,
        driver_name: str,
        driver: Driver,
        monitor: HealthMonitor,
        pool: str,
        dra_socket: Path,
        registration_socket: Path,
        on_status: Callable[[bool, str], None],
        health_resend: float = 30.0,
    ) -> None:
        self.dra_socket = dra_socket
        self.registration_socket = registration_socket
        self.services = {
            "v1": DRAService(driver, dra_v1_pb2),
            "v1beta1": DRAService(driver, dra_v1beta1_pb2),
        }
        self.health = HealthService(monitor, pool, driver.devices(), health_resend)
        self.registration = RegistrationService(driver_name, dra_socket, on_status)
        self._servers: list[Any] = []

    def _register_dra(self, server: Any) -> None:
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(self.services["v1"], server)  # type: ignore[no-untyped-call]
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(self.services["v1beta1"], server)  # type: ignore[no-untyped-call]
        dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(self.health, server)  # type: ignore[no-untyped-call]

    def _register_registration(self, server: Any) -> None:
        pluginregistration_v1_pb2_grpc.add_RegistrationServicer_to_server(self.registration, server)  # type: ignore[no-untyped-call]

    async def start(self) -> None:
        """Listen on both sockets."""
        self._servers.append(await _serve(self.dra_socket, self._register_dra))
        self._servers.append(await _serve(self.registration_socket, self._register_registration))
        log.info("serving DRA on %s, registration on %s", self.dra_socket, self.registration_socket)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop listening (registration first, so the kubelet stops calling) and remove the sockets."""
        for server, path in zip(
            reversed(self._servers), (self.registration_socket, self.dra_socket), strict=False
        ):
            await server.stop(grace)
            _unlink(path)
        self._servers.clear()
