"""What a ResourceClaim asks of this driver: its allocated devices and the config that applies to each.

Pure functions over the claim as the API server returns it, on `computedomain.dra`'s decoding of the
allocation and of our opaque configs; this module adds what only the plugin checks: that each device
is one this driver publishes, and that its config is of the device's kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from computedomain.api import names
from computedomain.dra.allocation import allocation_of, device_results
from computedomain.dra.configs import ConfigError, DriverConfig, request_configs
from computedomain.plugin.claimdevice import DEVICE_TYPES, ClaimDevice, DeviceType

_KIND_OF_TYPE: dict[DeviceType, str] = {
    "channel": names.CHANNEL_CONFIG_KIND,
    "daemon": names.DAEMON_CONFIG_KIND,
}
_KIND_OF_DEVICE = {device: _KIND_OF_TYPE[device_type] for device, device_type in DEVICE_TYPES.items()}


class ClaimError(ValueError):
    """The claim cannot be prepared as it stands; the message says why, for the pod's events."""


class Allocated(NamedTuple):
    """One device allocated to the claim from this driver, and the config that applies to it."""

    device: ClaimDevice
    config: DriverConfig


def allocated_devices(claim: Mapping[str, Any]) -> list[Allocated]:
    """This driver's devices of an allocated claim, each with its validated config.

    Raises ClaimError naming the problem: no allocation, a device this driver does not publish, an
    unknown or malformed config (unknown fields included), a config of the wrong kind for its device,
    or a config without a domain.
    """
    if allocation_of(claim) is None:
        raise ClaimError("the claim is not allocated")
    try:
        configs = request_configs(claim, kind_of_device=_KIND_OF_DEVICE)
    except ConfigError as error:
        raise ClaimError(str(error)) from None
    devices = []
    for result in device_results(claim):
        device_type = DEVICE_TYPES.get(result.device)
        if device_type is None:
            raise ClaimError(f"device {result.device!r} is not one that driver {names.DRIVER} publishes")
        config = configs[result.request]
        if config.kind != _KIND_OF_TYPE[device_type]:
            raise ClaimError(
                f"cannot apply {config.kind} to request {result.request!r} of a {device_type} device"
            )
        device = ClaimDevice(
            request=result.request,
            pool=result.pool,
            device=result.device,
            type=device_type,
            domain_id=config.domain_id,
        )
        devices.append(Allocated(device, config))
    return devices


def reserved_pods(claim: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(namespace, name, uid) of the pods the claim is reserved for (they consume it)."""
    namespace = str((claim.get("metadata") or {}).get("namespace", ""))
    return [
        (namespace, str(ref.get("name", "")), str(ref.get("uid", "")))
        for ref in (claim.get("status") or {}).get("reservedFor") or []
        if ref.get("resource") == "pods" and not ref.get("apiGroup")
    ]
