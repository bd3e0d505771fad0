"""Decoding a ResourceClaim's allocation (the same shape in v1beta1, v1beta2 and v1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from computedomain.api import names


@dataclass(frozen=True)
class DeviceResult:
    """One allocated device: the claim's request it serves, and the pool and device it came from."""

    request: str
    pool: str
    device: str


def allocation_of(claim: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The claim's `status.allocation`, or None while it is unallocated."""
    allocation = (claim.get("status") or {}).get("allocation")
    return allocation or None


def device_results(claim: Mapping[str, Any], driver: str = names.DRIVER) -> list[DeviceResult]:
    """The allocated devices of `driver` (ours by default), in the allocation's order."""
    allocation = allocation_of(claim) or {}
    return [
        DeviceResult(
            request=str(r.get("request", "")), pool=str(r.get("pool", "")), device=str(r.get("device", ""))
        )
        for r in (allocation.get("devices") or {}).get("results") or []
        if r.get("driver") == driver
    ]


def allocated_node(claim: Mapping[str, Any]) -> str | None:
    """The node a claim is allocated to, or None while it is unallocated or not bound to a node.

    The allocation's node selector names the node; without one, our driver's pool does, since every
    node publishes its devices in a pool named after itself (see `slices`).
    """
    allocation = allocation_of(claim)
    if allocation is None:
        return None
    node = node_named_by(allocation.get("nodeSelector"))
    if node is not None:
        return node
    return next((result.pool for result in device_results(claim) if result.pool), None)


def node_named_by(selector: Mapping[str, Any] | None) -> str | None:
    """The node a NodeSelector names by `metadata.name` (as the scheduler writes an allocation's and
    the DaemonSet controller a daemon pod's required affinity), or None."""
    for term in (selector or {}).get("nodeSelectorTerms") or []:
        for match in term.get("matchFields") or []:
            if match.get("key") == "metadata.name" and match.get("values"):
                return str(match["values"][0])
    return None
