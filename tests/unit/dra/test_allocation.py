"""A claim's allocation names its node and our driver's devices (same shape in every served version)."""

from __future__ import annotations

from typing import Any

from computedomain.api import names
from computedomain.dra.allocation import DeviceResult, allocated_node, allocation_of, device_results


def claim(
    results: list[tuple[str, str, str, str]] | None = None, selector_node: str | None = None
) -> dict[str, Any]:
    """A claim whose allocation holds `results` as (driver, request, pool, device)."""
    allocation: dict[str, Any] = {}
    if results is not None:
        allocation["devices"] = {
            "results": [{"driver": d, "request": r, "pool": p, "device": dev} for d, r, p, dev in results]
        }
    if selector_node is not None:
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [selector_node]}]}
        allocation["nodeSelector"] = {"nodeSelectorTerms": [term]}
    return {
        "metadata": {"name": "c", "namespace": "team-a"},
        "status": {"allocation": allocation} if allocation else {},
    }


def test_an_unallocated_claim_has_no_allocation_node_or_devices() -> None:
    unallocated_claims: list[dict[str, Any]] = [claim(), {"metadata": {}}, {"status": {"allocation": None}}]
    for unallocated in unallocated_claims:
        assert allocation_of(unallocated) is None
        assert allocated_node(unallocated) is None
        assert device_results(unallocated) == []


def test_the_node_selector_names_the_node() -> None:
    assert (
        allocated_node(claim([(names.DRIVER, "channel", "pool-x", "channel-0")], "gb200-n03")) == "gb200-n03"
    )


def test_a_selector_on_labels_alone_does_not_name_a_node() -> None:
    body = claim([(names.DRIVER, "channel", "gb200-n05", "channel-0")])
    term = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    body["status"]["allocation"]["nodeSelector"] = {"nodeSelectorTerms": [term]}
    assert allocated_node(body) == "gb200-n05"


def test_without_a_node_selector_our_drivers_pool_is_the_node() -> None:
    assert allocated_node(claim([(names.DRIVER, "channel", "gb200-n04", "channel-0")])) == "gb200-n04"


def test_another_drivers_pool_is_not_taken_for_a_node() -> None:
    assert allocated_node(claim([("gpu.nvidia.com", "gpu", "shared-pool", "gpu-0")])) is None


def test_device_results_are_our_drivers_in_order() -> None:
    body = claim(
        [
            ("gpu.nvidia.com", "gpu", "n1", "gpu-0"),
            (names.DRIVER, "channel", "n1", "channel-0"),
            (names.DRIVER, "channels/all", "n1", "channel-7"),
        ]
    )
    assert device_results(body) == [
        DeviceResult(request="channel", pool="n1", device="channel-0"),
        DeviceResult(request="channels/all", pool="n1", device="channel-7"),
    ]
    assert device_results(body, "gpu.nvidia.com") == [DeviceResult("gpu", "n1", "gpu-0")]
