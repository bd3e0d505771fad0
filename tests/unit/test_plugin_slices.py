"""This node's ResourceSlice, as the plugin renders it for each served DRA version."""

from __future__ import annotations

import copy

import pytest

from cdtestbed.dra import resource_slice
from computedomain.plugin.slices import matches, pick_resource_version, render_slice


@pytest.mark.parametrize("version", ["v1", "v1beta2", "v1beta1"])
def test_slice_has_the_devices_the_test_bed_double_publishes(version: str) -> None:
    rendered = render_slice("node-a", "uid-1", version)
    double = resource_slice("node-a", version)
    assert rendered["spec"] == double["spec"]
    assert rendered["metadata"]["name"] == double["metadata"]["name"]
    assert rendered["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-1"}
    ]


def test_matches_ignores_server_fields_and_generation_but_not_content() -> None:
    desired = render_slice("node-a", "uid-1", "v1")
    live = copy.deepcopy(desired)
    live["metadata"].update(resourceVersion="7", uid="s")
    live["spec"]["pool"]["generation"] = 4
    assert matches(live, desired)
    live["spec"]["devices"].pop()
    assert not matches(live, desired)
    assert not matches(None, desired)
    deleting = copy.deepcopy(desired)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not matches(deleting, desired)
    assert not matches(render_slice("node-a", "another-node-uid", "v1"), desired)


def test_version_preference() -> None:
    assert pick_resource_version(["v1beta1", "v1"]) == "v1"
    assert pick_resource_version(["resource.k8s.io/v1beta2", "resource.k8s.io/v1beta1"]) == "v1beta2"
    assert pick_resource_version(["v1alpha3"]) is None
