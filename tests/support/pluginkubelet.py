# The generated registration and health stubs have no annotations (mypy --strict checks this module
# where a benchmark imports it).
# mypy: disable-error-code="no-untyped-call"
"""The kubelet's side of the plugin protocol, over the plugin's unix sockets (for tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

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

VERSIONS = {"v1": (dra_v1_pb2, dra_v1_pb2_grpc), "v1beta1": (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc)}


class FakeKubelet:
    """Registers the plugin and calls it, as the kubelet's plugin manager and DRA manager do."""

    def __init__(self, registration: grpc.aio.Channel, dra: grpc.aio.Channel) -> None:
        self.registration = pluginregistration_v1_pb2_grpc.RegistrationStub(registration)
        self.dra_channel = dra

    async def get_info(self) -> Any:
        return await self.registration.GetInfo(pluginregistration_v1_pb2.InfoRequest(), timeout=1.0)

    async def notify(self, registered: bool, error: str = "") -> None:
        await self.registration.NotifyRegistrationStatus(
            pluginregistration_v1_pb2.RegistrationStatus(plugin_registered=registered, error=error),
            timeout=1.0,
        )

    async def prepare(
        self, claims: list[tuple[str, str, str]], version: str = "v1", timeout: float = 45.0
    ) -> dict[str, Any]:
        messages, services = VERSIONS[version]
        stub = services.DRAPluginStub(self.dra_channel)
        request = messages.NodePrepareResourcesRequest(
            claims=[messages.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims]
        )
        response = await stub.NodePrepareResources(request, timeout=timeout)
        return dict(response.claims)

    async def unprepare(self, claims: list[tuple[str, str, str]], version: str = "v1") -> dict[str, Any]:
        messages, services = VERSIONS[version]
        stub = services.DRAPluginStub(self.dra_channel)
        request = messages.NodeUnprepareResourcesRequest(
            claims=[messages.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in claims]
        )
        response = await stub.NodeUnprepareResources(request, timeout=45.0)
        return dict(response.claims)

    def watch_health(self) -> Any:
        stub = dra_health_v1alpha1_pb2_grpc.DRAResourceHealthStub(self.dra_channel)
        return stub.NodeWatchResources(dra_health_v1alpha1_pb2.NodeWatchResourcesRequest())


@asynccontextmanager
async def kubelet(registration_socket: Path) -> AsyncIterator[FakeKubelet]:
    """Dial the registration socket, ask for the DRA endpoint, and dial that too."""
    async with grpc.aio.insecure_channel(f"unix://{registration_socket}") as registration:
        info = await pluginregistration_v1_pb2_grpc.RegistrationStub(registration).GetInfo(
            pluginregistration_v1_pb2.InfoRequest(), timeout=1.0
        )
        async with grpc.aio.insecure_channel(f"unix://{info.endpoint}") as dra:
            yield FakeKubelet(registration, dra)


async def register(registration_socket: Path) -> Any:
    """Register the plugin as the kubelet's plugin manager does (GetInfo, then its verdict); the info.

    The real kubelet always registers a plugin before it calls it, and the plugin publishes its
    ResourceSlice only then.
    """
    async with kubelet(registration_socket) as kl:
        info = await kl.get_info()
        await kl.notify(True)
    return info
