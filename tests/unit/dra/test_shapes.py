"""Requests, configs and devices take the shape of the served resource.k8s.io version."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.dra.shapes import device, device_attributes, device_request, opaque_config

ATTRIBUTES: dict[str, dict[str, Any]] = {"type": {"string": "channel"}, "id": {"int": 3}}


@pytest.mark.parametrize("version", ["v1", "v1beta2", "resource.k8s.io/v1"])
def test_nested_request(version: str) -> None:
    assert device_request("channel", "cls", version) == {
        "name": "channel",
        "exactly": {"deviceClassName": "cls"},
    }


@pytest.mark.parametrize("version", ["v1beta1", "resource.k8s.io/v1beta1"])
def test_flat_request(version: str) -> None:
    assert device_request("channel", "cls", version) == {"name": "channel", "deviceClassName": "cls"}


def test_opaque_config_names_its_request_and_driver() -> None:
    parameters = {"kind": "K", "domainID": "d"}
    entry = opaque_config("channel", "drv", parameters)
    assert entry == {"requests": ["channel"], "opaque": {"driver": "drv", "parameters": parameters}}
    assert entry["opaque"]["parameters"] is not parameters  # a copy: the caller's map stays its own


@pytest.mark.parametrize("version", ["v1", "v1beta2"])
def test_devices_carry_attributes_directly(version: str) -> None:
    assert device("channel-3", ATTRIBUTES, version) == {"name": "channel-3", "attributes": ATTRIBUTES}


def test_v1beta1_devices_wrap_attributes_in_basic() -> None:
    assert device("channel-3", ATTRIBUTES, "v1beta1") == {
        "name": "channel-3",
        "basic": {"attributes": ATTRIBUTES},
    }


@pytest.mark.parametrize("version", ["v1", "v1beta2", "v1beta1"])
def test_attributes_read_back_in_every_version(version: str) -> None:
    assert device_attributes(device("d", ATTRIBUTES, version)) == ATTRIBUTES


@pytest.mark.parametrize("version", ["v1alpha3", "apps/v1"])
def test_unknown_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="unsupported resource API version"):
        device_request("channel", "cls", version)
    with pytest.raises(ValueError, match="unsupported resource API version"):
        device("d", ATTRIBUTES, version)
