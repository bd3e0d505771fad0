"""The ResourceSlices a node publishes: pool per node, NVIDIA's device names, split to fit the server."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from computedomain.api import names
from computedomain.dra.shapes import device_attributes
from computedomain.dra.slices import (
    MAX_CHANNELS,
    MAX_DEVICES_PER_SLICE,
    NodeOwner,
    channel_device,
    daemon_device,
    node_devices,
    resource_slices,
    shared_channel_device,
    slice_differs,
    slice_name,
)

VERSIONS = ["v1", "v1beta2", "v1beta1"]
NODE = "gb200-n07"


@pytest.mark.parametrize("version", VERSIONS)
def test_default_slice_is_the_reference_plugins(version: str) -> None:
    (body,) = resource_slices(NODE, version)
    assert body["apiVersion"] == f"resource.k8s.io/{version}"
    assert body["kind"] == "ResourceSlice"
    assert body["metadata"] == {"name": slice_name(NODE)}
    spec = body["spec"]
    assert spec["driver"] == names.DRIVER == "compute-domain.nvidia.com"
    assert spec["nodeName"] == NODE
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in spec["devices"]] == ["channel-0", "daemon-0"]
    assert [device_attributes(d) for d in spec["devices"]] == [
        {"type": {"string": "channel"}, "id": {"int": 0}},
        {"type": {"string": "daemon"}, "id": {"int": 0}},
    ]


def test_v1beta1_devices_are_basic_and_later_ones_are_not() -> None:
    assert daemon_device("v1beta1") == {
        "name": "daemon-0",
        "basic": {"attributes": {"type": {"string": "daemon"}, "id": {"int": 0}}},
    }
    for version in ("v1", "v1beta2"):
        assert channel_device(5, version) == {
            "name": "channel-5",
            "attributes": {"type": {"string": "channel"}, "id": {"int": 5}},
        }


@pytest.mark.parametrize("version", VERSIONS)
def test_clique_mode_publishes_one_shared_channel_device(version: str) -> None:
    (body,) = resource_slices(NODE, version, shared_channel=True)
    devices = body["spec"]["devices"]
    assert [d["name"] for d in devices] == ["channel", "daemon-0"]
    # The default channel DeviceClass selects type channel and id 0: the shared device matches it.
    assert [device_attributes(d) for d in devices] == [
        {"type": {"string": "channel"}, "id": {"int": 0}},
        {"type": {"string": "daemon"}, "id": {"int": 0}},
    ]
    holder = devices[0]["basic"] if version == "v1beta1" else devices[0]
    assert holder["allowMultipleAllocations"] is True
    daemon = devices[1]["basic"] if version == "v1beta1" else devices[1]
    assert "allowMultipleAllocations" not in daemon


def test_the_shared_channel_device_is_shaped_per_version() -> None:
    attributes = {"type": {"string": "channel"}, "id": {"int": 0}}
    assert shared_channel_device("v1") == {
        "name": "channel",
        "attributes": attributes,
        "allowMultipleAllocations": True,
    }
    assert shared_channel_device("v1beta1") == {
        "name": "channel",
        "basic": {"attributes": attributes, "allowMultipleAllocations": True},
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_many_channels_are_numbered_and_split_across_slices(version: str) -> None:
    bodies = resource_slices(NODE, version, channels=MAX_CHANNELS, generation=4)
    devices = [d for body in bodies for d in body["spec"]["devices"]]
    assert [d["name"] for d in devices] == [*(f"channel-{n}" for n in range(MAX_CHANNELS)), "daemon-0"]
    assert [device_attributes(d)["id"] for d in devices[:3]] == [{"int": 0}, {"int": 1}, {"int": 2}]
    assert all(len(body["spec"]["devices"]) <= MAX_DEVICES_PER_SLICE for body in bodies)
    count = -(-(MAX_CHANNELS + 1) // MAX_DEVICES_PER_SLICE)
    assert len(bodies) == count == 17
    assert {(b["spec"]["pool"]["name"], b["spec"]["pool"]["generation"]) for b in bodies} == {(NODE, 4)}
    assert {b["spec"]["pool"]["resourceSliceCount"] for b in bodies} == {count}
    assert [b["metadata"]["name"] for b in bodies] == [slice_name(NODE, i) for i in range(count)]


def test_channel_counts_out_of_range_are_refused() -> None:
    for channels in (0, -1, MAX_CHANNELS + 1):
        with pytest.raises(ValueError, match="channels must be between 1 and 2048"):
            node_devices("v1", channels)
    assert len(node_devices("v1", 127)) == MAX_DEVICES_PER_SLICE
    assert len(resource_slices(NODE, channels=127)) == 1
    assert len(resource_slices(NODE, channels=128)) == 2


def test_owner_reference_ties_each_slice_to_its_node() -> None:
    owner = NodeOwner(name=NODE, uid="5f1c2a9e-0000-4000-8000-000000000007")
    for body in resource_slices(NODE, "v1beta1", channels=300, owner=owner):
        assert body["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": owner.uid, "controller": True}
        ]


def test_slice_names_are_deterministic_distinct_and_valid() -> None:
    assert slice_name(NODE) == slice_name(NODE, 0) == f"compute-domain.nvidia.com-{NODE}-0"
    # A node whose name ends like another's index must not share a slice name with it.
    assert slice_name("a", 1) != slice_name("a-1", 0)
    long_a, long_b = "n" * 250 + "a", "n" * 250 + "b"
    assert len(slice_name(long_a, 16)) <= 253
    assert slice_name(long_a, 0) != slice_name(long_b, 0)
    assert slice_name(long_a, 3) == slice_name(long_a, 3)


def _live(desired: dict[str, Any]) -> dict[str, Any]:
    """`desired` as the server returns it: with its own metadata and defaulted fields."""
    live = copy.deepcopy(desired)
    live["metadata"].update({"uid": "u", "resourceVersion": "7", "managedFields": []})
    live["spec"]["devices"][0]["attributes"]["extra"] = {"bool": True}
    return live


def test_a_live_slice_with_server_fields_does_not_differ() -> None:
    (desired,) = resource_slices(NODE, owner=NodeOwner(NODE, "uid-1"))
    assert not slice_differs(_live(desired), desired)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s["spec"]["devices"].pop(),
        lambda s: s["spec"]["pool"].update(generation=2),
        lambda s: s["spec"].update(nodeName="other"),
        lambda s: s["spec"]["devices"][0]["attributes"]["id"].update(int=9),
        lambda s: s["metadata"].pop("ownerReferences"),
        lambda s: s["metadata"]["ownerReferences"][0].update(uid="uid-2"),
    ],
)
def test_a_live_slice_missing_desired_content_differs(change: Any) -> None:
    (desired,) = resource_slices(NODE, owner=NodeOwner(NODE, "uid-1"))
    live = _live(desired)
    change(live)
    assert slice_differs(live, desired)
