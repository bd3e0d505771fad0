"""The ResourceSlices a node's kubelet plugin publishes for the ComputeDomain driver.

One pool per node, named after the node: the allocation of a claim therefore names the node in each
result's `pool` (see `allocation.allocated_node`). Devices are named as NVIDIA's plugin names them:
`channel-<N>` (type channel, id N) and `daemon-0` (type daemon, id 0).

In clique mode a node publishes one shared device `channel` instead of its channels: it allows any
number of allocations at once, so that claims of several domains, and several claims of one domain,
land on one node. Which channel a claim receives is not the device's business: the plugin prepares
the channel the controller gave the claim's domain in the node's clique. The shared device keeps the
attributes of channel 0 (type channel, id 0), so the default channel DeviceClass selects it as well.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from computedomain.api import names
from computedomain.dra.shapes import device
from computedomain.dra.versions import resource_api_version
from computedomain.objects import contains

CHANNEL = "channel"
DAEMON = "daemon"
# Clique mode's one channel device per node (see the module docstring).
SHARED_CHANNEL = CHANNEL
# NVIDIA's driver knows IMEX channels 0..2047; its reference plugin publishes only channel 0.
MAX_CHANNELS = 2048
DEFAULT_CHANNELS = 1
# The API server refuses a ResourceSlice with more devices than this.
MAX_DEVICES_PER_SLICE = 128
_MAX_NAME = 253


@dataclass(frozen=True)
class NodeOwner:
    """The Node a slice belongs to: with it as owner, the garbage collector removes the slice with it."""

    name: str
    uid: str


def channel_device(channel: int, api_version: str) -> dict[str, Any]:
    """The device of IMEX channel `channel`."""
    return device(f"{CHANNEL}-{channel}", _attributes(CHANNEL, channel), api_version)


def daemon_device(api_version: str) -> dict[str, Any]:
    """The device an IMEX daemon pod claims (one per node)."""
    return device(f"{DAEMON}-0", _attributes(DAEMON, 0), api_version)


def shared_channel_device(api_version: str) -> dict[str, Any]:
    """Clique mode's channel device: allocatable to any number of claims at once."""
    return device(SHARED_CHANNEL, _attributes(CHANNEL, 0), api_version, allow_multiple_allocations=True)


def node_devices(
    api_version: str, channels: int = DEFAULT_CHANNELS, *, shared_channel: bool = False
) -> list[dict[str, Any]]:
    """Every device of one node: channels 0..channels-1 (or, with `shared_channel`, the shared
    channel device), then the daemon device."""
    if shared_channel:
        return [shared_channel_device(api_version), daemon_device(api_version)]
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must be between 1 and {MAX_CHANNELS}, not {channels}")
    return [*(channel_device(n, api_version) for n in range(channels)), daemon_device(api_version)]


def slice_name(node: str, index: int = 0) -> str:
    """The name of the `index`-th slice of `node`'s pool; distinct for every (node, index) pair."""
    name = f"{names.DRIVER}-{node}-{index}"
    if len(name) <= _MAX_NAME:
        return name
    # A node name near the limit: a digest keeps the name unique and within bounds.
    digest = hashlib.sha256(node.encode()).hexdigest()[:16]
    return f"{names.DRIVER}-{node[: _MAX_NAME - len(names.DRIVER) - 40]}-{digest}-{index}"


def resource_slices(
    node: str,
    api_version: str = "v1",
    *,
    channels: int = DEFAULT_CHANNELS,
    shared_channel: bool = False,
    owner: NodeOwner | None = None,
    generation: int = 1,
) -> list[dict[str, Any]]:
    """The slices of `node`'s pool, in `api_version`: its devices split in slices the server accepts.

    `shared_channel` publishes clique mode's shared channel device instead of `channels` channels.
    With `owner` (the Node's name and UID) each slice is owned by the Node, so it goes away with it.
    `generation` must grow whenever the pool's content changes, so the scheduler drops older slices.
    """
    devices = node_devices(api_version, channels, shared_channel=shared_channel)
    chunks = [devices[i : i + MAX_DEVICES_PER_SLICE] for i in range(0, len(devices), MAX_DEVICES_PER_SLICE)]
    return [
        {
            "apiVersion": resource_api_version(api_version),
            "kind": "ResourceSlice",
            "metadata": _metadata(slice_name(node, index), owner),
            "spec": {
                "driver": names.DRIVER,
                "nodeName": node,
                "pool": {"name": node, "generation": generation, "resourceSliceCount": len(chunks)},
                "devices": chunk,
            },
        }
        for index, chunk in enumerate(chunks)
    ]


def slice_differs(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when `live` lacks something of `desired`'s spec or owners (server-added fields are ignored)."""
    live_owners = (live.get("metadata") or {}).get("ownerReferences") or []
    desired_owners = (desired.get("metadata") or {}).get("ownerReferences") or []
    return not (contains(live.get("spec"), desired.get("spec")) and contains(live_owners, desired_owners))


def _metadata(name: str, owner: NodeOwner | None) -> dict[str, Any]:
    if owner is None:
        return {"name": name}
    reference = {"apiVersion": "v1", "kind": "Node", "name": owner.name, "uid": owner.uid, "controller": True}
    return {"name": name, "ownerReferences": [reference]}


def _attributes(kind: str, ident: int) -> dict[str, dict[str, Any]]:
    return {"type": {"string": kind}, "id": {"int": ident}}
