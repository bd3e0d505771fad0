"""The object toolkit: `contains` (the live object already holds every rendered field, so no write is
needed), pod readiness, object keys and the Kubernetes name rules."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.objects import contains, is_dns_label, is_dns_subdomain, object_key, pod_ready

LIVE: dict[str, Any] = {
    "metadata": {"name": "ds", "labels": {"a": "1", "b": "2"}, "resourceVersion": "7"},
    "spec": {
        "containers": [
            {"name": "c", "image": "img:1", "env": [{"name": "X", "value": "1"}], "imagePullPolicy": "Always"}
        ],
        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
    },
    "status": {"numberReady": 3},
}


def test_fields_the_server_adds_are_ignored() -> None:
    desired = {
        "metadata": {"name": "ds", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "img:1", "env": [{"name": "X", "value": "1"}]}]},
    }
    assert contains(LIVE, desired)


@pytest.mark.parametrize(
    "desired",
    [
        {"metadata": {"labels": {"a": "2"}}},  # changed value
        {"metadata": {"labels": {"c": "3"}}},  # missing key
        {"spec": {"containers": [{"name": "c", "image": "img:2"}]}},  # changed deep inside a list
        {"spec": {"containers": [{"name": "c"}, {"name": "d"}]}},  # list of another length
        {"spec": {"tolerations": {"operator": "Exists"}}},  # a map where the live object has a list
        {"spec": {"containers": "c"}},  # a scalar where the live object has a list
        {"status": {"numberReady": "3"}},  # same digits, other type
    ],
)
def test_any_difference_in_a_rendered_field_is_seen(desired: dict[str, Any]) -> None:
    assert not contains(LIVE, desired)


def test_list_order_matters() -> None:
    live = {"env": [{"name": "A"}, {"name": "B"}]}
    assert contains(live, {"env": [{"name": "A"}, {"name": "B"}]})
    assert not contains(live, {"env": [{"name": "B"}, {"name": "A"}]})


def test_a_field_removed_by_hand_is_seen() -> None:
    live = {"spec": {"env": [{"name": "A", "value": "1"}]}}
    assert not contains(live, {"spec": {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}})


def test_an_empty_rendered_list_or_map_matches_an_absent_field() -> None:
    # The API server drops empty lists and maps (e.g. a domain's status.nodes once every node left).
    assert contains({"status": {"ready": 0}}, {"status": {"ready": 0, "nodes": [], "extra": {}}})
    assert contains({"status": {"nodes": []}}, {"status": {"nodes": []}})
    assert not contains({"status": {"nodes": [{"name": "n"}]}}, {"status": {"nodes": []}})


def test_scalars_and_none() -> None:
    assert contains(1, 1)
    assert not contains(1, 2)
    assert contains(None, None)
    assert not contains({}, {"a": None})


def pod(conditions: list[dict[str, Any]] | None, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "p", **metadata}}
    if conditions is not None:
        body["status"] = {"conditions": conditions}
    return body


def test_a_pod_is_ready_only_while_its_ready_condition_is_true() -> None:
    assert pod_ready(pod([{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]))
    assert not pod_ready(
        pod([{"type": "Ready", "status": "False"}, {"type": "ContainersReady", "status": "True"}])
    )
    assert not pod_ready(pod([{"type": "Ready", "status": "Unknown"}]))
    assert not pod_ready(pod([]))
    assert not pod_ready(pod(None))
    assert not pod_ready({"metadata": {"name": "p"}, "status": None})
    # Being deleted does not make a pod unready: callers that care look at deletionTimestamp.
    assert pod_ready(pod([{"type": "Ready", "status": "True"}], deletionTimestamp="2025-01-01T00:00:00Z"))


def test_object_keys_name_the_namespace_when_there_is_one() -> None:
    assert object_key({"metadata": {"name": "p", "namespace": "team"}}) == "team/p"
    assert object_key({"metadata": {"name": "node-1"}}) == "node-1"
    assert object_key({"metadata": {"name": "node-1", "namespace": ""}}) == "node-1"


@pytest.mark.parametrize(
    ("name", "label", "subdomain"),
    [
        ("a", True, True),
        ("cd-0", True, True),
        ("0cd", True, True),
        ("a" * 63, True, True),
        ("a" * 64, False, True),  # a subdomain's label is not held to 63, as in the API server
        ("node-1.example.com", False, True),
        ("a" * 253, False, True),
        ("a" * 254, False, False),
        ("", False, False),
        ("-a", False, False),
        ("a-", False, False),
        ("A", False, False),
        ("a_b", False, False),
        ("a..b", False, False),
        (".a", False, False),
        ("a.", False, False),
        ("a.-b", False, False),
        ("a-.b", False, False),
        ("a\n", False, False),
    ],
)
def test_dns_names_follow_rfc_1123_as_kubernetes_checks_them(name: str, label: bool, subdomain: bool) -> None:
    assert is_dns_label(name) is label
    assert is_dns_subdomain(name) is subdomain
