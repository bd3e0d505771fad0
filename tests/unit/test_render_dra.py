"""The DRA API version is picked from what the server serves, and requests take that version's shape."""

from __future__ import annotations

import pytest

from computedomain.controller.render.dra import (
    RESOURCE_VERSIONS,
    device_request,
    pick_resource_version,
    resource_api_version,
)


@pytest.mark.parametrize(
    ("served", "picked"),
    [
        (["v1beta1", "v1beta2", "v1"], "v1"),
        (["v1beta1", "v1beta2"], "v1beta2"),
        (["v1beta1"], "v1beta1"),
        (["resource.k8s.io/v1beta2", "resource.k8s.io/v1alpha3"], "v1beta2"),
        (["v1alpha3"], None),
        ([], None),
    ],
)
def test_pick_resource_version(served: list[str], picked: str | None) -> None:
    assert pick_resource_version(served) == picked


def test_preference_order() -> None:
    assert RESOURCE_VERSIONS == ("v1", "v1beta2", "v1beta1")


@pytest.mark.parametrize("version", ["v1", "v1beta2", "resource.k8s.io/v1"])
def test_nested_request(version: str) -> None:
    assert device_request("channel", "cls", version) == {
        "name": "channel",
        "exactly": {"deviceClassName": "cls"},
    }


@pytest.mark.parametrize("version", ["v1beta1", "resource.k8s.io/v1beta1"])
def test_flat_request(version: str) -> None:
    assert device_request("channel", "cls", version) == {"name": "channel", "deviceClassName": "cls"}


def test_resource_api_version() -> None:
    assert resource_api_version("v1beta2") == "resource.k8s.io/v1beta2"
    assert resource_api_version("resource.k8s.io/v1") == "resource.k8s.io/v1"


@pytest.mark.parametrize("version", ["v1alpha3", "apps/v1", "v2"])
def test_unknown_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="unsupported resource API version"):
        device_request("channel", "cls", version)
