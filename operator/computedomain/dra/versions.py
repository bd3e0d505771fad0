"""Which `resource.k8s.io` version to speak: the preference order and what the server serves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

RESOURCE_GROUP = "resource.k8s.io"
# Preference order: v1 (Kubernetes 1.34+), v1beta2 (1.33), v1beta1 (1.32).
RESOURCE_VERSIONS = ("v1", "v1beta2", "v1beta1")


def pick_resource_version(served: Iterable[str]) -> str | None:
    """The most preferred version among those the server serves, or None if it serves none we know.

    Accepts plain versions ("v1") or group versions ("resource.k8s.io/v1").
    """
    available = {version.rpartition("/")[2] for version in served}
    return next((version for version in RESOURCE_VERSIONS if version in available), None)


def served_versions(body: Mapping[str, Any]) -> list[str]:
    """The `resource.k8s.io` versions named in a discovery body, in the server's order.

    `body` is what GET /apis (an APIGroupList) or GET /apis/resource.k8s.io (an APIGroup) returns.
    A body that does not mention the group yields no versions.
    """
    if body.get("kind") == "APIGroupList" or "groups" in body:
        group = next((g for g in body.get("groups") or [] if g.get("name") == RESOURCE_GROUP), None)
    else:
        group = body if body.get("name", RESOURCE_GROUP) == RESOURCE_GROUP else None
    if group is None:
        return []
    versions = (
        entry.get("version") or str(entry.get("groupVersion", "")).rpartition("/")[2]
        for entry in group.get("versions") or []
    )
    return [str(version) for version in versions if version]


def version_of(api_version: str) -> str:
    """The plain version ("v1") of "v1" or "resource.k8s.io/v1"; ValueError for any other API."""
    group, _, version = api_version.rpartition("/")
    if group not in ("", RESOURCE_GROUP) or version not in RESOURCE_VERSIONS:
        raise ValueError(
            f"unsupported resource API version {api_version!r}; expected one of {RESOURCE_VERSIONS}"
        )
    return version


def resource_api_version(api_version: str) -> str:
    """`resource.k8s.io/<version>` for a version such as "v1" (a group version is passed through)."""
    return f"{RESOURCE_GROUP}/{version_of(api_version)}"
