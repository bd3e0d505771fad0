"""Parts of `resource.k8s.io` objects whose shape depends on the served version."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from computedomain.dra.versions import version_of

# Versions whose device requests nest the class under `exactly`.
_NESTED_REQUEST_VERSIONS = ("v1", "v1beta2")
# The version whose devices wrap their attributes in `basic`.
_BASIC_DEVICE_VERSION = "v1beta1"


def device_request(name: str, device_class: str, api_version: str) -> dict[str, Any]:
    """A request for exactly one device of `device_class`, shaped for `api_version`."""
    if version_of(api_version) in _NESTED_REQUEST_VERSIONS:
        return {"name": name, "exactly": {"deviceClassName": device_class}}
    return {"name": name, "deviceClassName": device_class}


def opaque_config(request: str, driver: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A claim config entry that hands `parameters` to `driver` for one request (same in all versions)."""
    return {"requests": [request], "opaque": {"driver": driver, "parameters": dict(parameters)}}


def device(
    name: str,
    attributes: Mapping[str, Mapping[str, Any]],
    api_version: str,
    *,
    allow_multiple_allocations: bool = False,
) -> dict[str, Any]:
    """A ResourceSlice device with typed `attributes` (e.g. {"id": {"int": 0}}), shaped for `api_version`.

    `allow_multiple_allocations` lets any number of claims be allocated the device at once
    (`allowMultipleAllocations`, feature DRAConsumableCapacity: beta and on by default in 1.36).
    """
    body: dict[str, Any] = {"attributes": {key: dict(value) for key, value in attributes.items()}}
    if allow_multiple_allocations:
        body["allowMultipleAllocations"] = True
    if version_of(api_version) == _BASIC_DEVICE_VERSION:
        return {"name": name, "basic": body}
    return {"name": name, **body}


def device_attributes(device_body: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a ResourceSlice device in any served version."""
    holder = device_body.get("basic") if "basic" in device_body else device_body
    return dict((holder or {}).get("attributes") or {})
