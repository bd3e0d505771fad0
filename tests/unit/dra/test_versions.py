"""The DRA API version is picked from what the server serves, in the order v1 > v1beta2 > v1beta1."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.dra.versions import (
    RESOURCE_GROUP,
    RESOURCE_VERSIONS,
    pick_resource_version,
    resource_api_version,
    served_versions,
    version_of,
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


def _group(*versions: str, name: str = RESOURCE_GROUP) -> dict[str, Any]:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{name}/{versions[0]}", "version": versions[0]},
    }


def test_served_versions_of_the_group_body() -> None:
    # GET /apis/resource.k8s.io on a 1.34 server with the betas switched on.
    assert served_versions(_group("v1", "v1beta2", "v1beta1")) == ["v1", "v1beta2", "v1beta1"]


def test_served_versions_of_the_group_list() -> None:
    body = {"kind": "APIGroupList", "groups": [_group("v1", name="apps"), _group("v1beta2", "v1beta1")]}
    assert served_versions(body) == ["v1beta2", "v1beta1"]


def test_served_versions_read_group_versions_when_version_is_missing() -> None:
    body = {"name": RESOURCE_GROUP, "versions": [{"groupVersion": "resource.k8s.io/v1beta1"}]}
    assert served_versions(body) == ["v1beta1"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "APIGroupList", "groups": [_group("v1", name="apps")]},
        {"kind": "APIGroupList", "groups": []},
        _group("v1", name="apps"),
        {},
    ],
)
def test_a_body_without_the_group_serves_nothing(body: dict[str, Any]) -> None:
    assert served_versions(body) == []


def test_served_versions_feed_the_pick() -> None:
    assert pick_resource_version(served_versions(_group("v1beta1", "v1beta2"))) == "v1beta2"


def test_resource_api_version() -> None:
    assert resource_api_version("v1beta2") == "resource.k8s.io/v1beta2"
    assert resource_api_version("resource.k8s.io/v1") == "resource.k8s.io/v1"
    assert version_of("resource.k8s.io/v1beta1") == "v1beta1"


@pytest.mark.parametrize("version", ["v1alpha3", "apps/v1", "v2", ""])
def test_unknown_versions_are_refused(version: str) -> None:
    with pytest.raises(ValueError, match="unsupported resource API version"):
        resource_api_version(version)
