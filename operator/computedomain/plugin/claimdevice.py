"""The one model of this driver's devices: a channel or daemon device of a claim.

The slice publishes the device names below; a claim's allocation names one of them, the checkpoint
records it per claim with the domain its config names, and the kubelet receives it with the CDI
devices its spec file holds. A plain dataclass, encoded by hand (the checkpoint's field names, e.g.
`domainID` and `cdiDeviceIds`, are those of the files earlier versions wrote).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from computedomain.dra.slices import CHANNEL, DAEMON, SHARED_CHANNEL

DeviceType = Literal["channel", "daemon"]

CHANNEL_DEVICE = f"{CHANNEL}-0"
DAEMON_DEVICE = f"{DAEMON}-0"
# Clique mode's channel device, which any number of claims share (the channel is the domain's).
SHARED_CHANNEL_DEVICE = SHARED_CHANNEL
# Every device of a node's pool, by name (the slice has channel 0, or in clique mode the shared
# channel device, and the daemon device).
DEVICE_TYPES: dict[str, DeviceType] = {
    CHANNEL_DEVICE: "channel",
    SHARED_CHANNEL_DEVICE: "channel",
    DAEMON_DEVICE: "daemon",
}
DEVICE_TYPE_NAMES: tuple[DeviceType, ...] = ("channel", "daemon")


@dataclass(frozen=True)
class ClaimDevice:
    """One device allocated to a claim: where it comes from, its domain, and once prepared its CDI
    devices. It satisfies the framework's `PreparedDevice`."""

    request: str
    pool: str
    device: str
    type: DeviceType
    domain_id: str
    cdi_device_ids: tuple[str, ...] = ()
    # Clique mode: the IMEX channel prepared for the device (the domain's in the node's clique).
    channel: int | None = None

    def prepared(self, cdi_device_ids: tuple[str, ...]) -> ClaimDevice:
        """The same device with the CDI devices of its claim's spec."""
        return dataclasses.replace(self, cdi_device_ids=cdi_device_ids)

    def with_channel(self, channel: int) -> ClaimDevice:
        """The same device, holding IMEX channel `channel`."""
        return dataclasses.replace(self, channel=channel)

    def to_json(self) -> dict[str, Any]:
        """The device as the checkpoint file holds it."""
        data: dict[str, Any] = {
            "request": self.request,
            "pool": self.pool,
            "device": self.device,
            "type": self.type,
            "domainID": self.domain_id,
            "cdiDeviceIds": list(self.cdi_device_ids),
        }
        # Left out without one, so that a domain mode file is what earlier versions wrote.
        if self.channel is not None:
            data["channel"] = self.channel
        return data

    @classmethod
    def from_json(cls, data: Any) -> ClaimDevice:
        """The device of `to_json`'s object (unknown fields ignored); ValueError when it is not one."""
        fields = json_object(data, "device")
        device_type = text(fields, "type")
        if device_type not in DEVICE_TYPE_NAMES:
            raise ValueError(
                f"device type must be one of {', '.join(DEVICE_TYPE_NAMES)}, not {device_type!r}"
            )
        ids = fields.get("cdiDeviceIds", [])
        if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
            raise ValueError("cdiDeviceIds must be a list of strings")
        channel = fields.get("channel")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
            raise ValueError("channel must be an integer")
        return cls(
            request=text(fields, "request"),
            pool=text(fields, "pool"),
            device=text(fields, "device"),
            type=device_type,
            domain_id=text(fields, "domainID"),
            cdi_device_ids=tuple(ids),
            channel=channel,
        )


def json_object(data: Any, what: str) -> Mapping[str, Any]:
    """`data` if it is a JSON object; ValueError naming `what` otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object, not {type(data).__name__}")
    return data


def text(fields: Mapping[str, Any], name: str) -> str:
    """The string field `name`; ValueError when it is missing or not a string."""
    value = fields.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    return value
