"""Shapes of `resource.k8s.io` objects that differ between the served versions of the DRA API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RESOURCE_GROUP = "resource.k8s.io"
# Preference order: v1 (Kubernetes 1.34+), v1beta2 (1.33), v1beta1 (1.32).
RESOURCE_VERSIONS = ("v1", "v1beta2", "v1beta1")
# Versions whose device requests nest the class under `exactly`.
_NESTED_REQUEST_VERSIONS = ("v1", "v1beta2")


def pick_resource_version(served: Iterable[str]) -> str | None:
    """The most preferred version among those the server serves, or None if it serves none we know.

    Accepts plain versions ("v1") or group versions ("resource.k8s.io/v1").
    """
    available = {version.rpartition("/")[2] for version in served}
    return next((version for version in RESOURCE_VERSIONS if version in available), None)


def resource_api_version(api_version: str) -> str:
    """`resource.k8s.io/<version>` for a version such as "v1" (a group version is passed through)."""
    version = _version(api_version)
    return f"{RESOURCE_GROUP}/{version}"


def device_request(name: str, device_class: str, api_version: str) -> dict[str, Any]:
    """A request for exactly one device of `device_class`, shaped for `api_version`."""
    if _version(api_version) in _NESTED_REQUEST_VERSIONS:
        return {"name": name, "exactly": {"deviceClassName": device_class}}
    return {"name": name, "deviceClassName": device_class}


def opaque_config(request: str, driver: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A claim config entry that hands `parameters` to `driver` for one request (same in all versions)."""
    return {"requests": [request], "opaque": {"driver": driver, "parameters": dict(parameters)}}


def _version(api_version: str) -> str:
    group, _, version = api_version.rpartition("/")
    if group not in ("", RESOURCE_GROUP) or version not in RESOURCE_VERSIONS:
        raise ValueError(
            f"unsupported resource API version {api_version!r}; expected one of {RESOURCE_VERSIONS}"
        )
    return version
