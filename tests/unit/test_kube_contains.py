"""`contains`: the live object already holds every rendered field (so no write is needed)."""

from __future__ import annotations

from typing import Any

import pytest

from computedomain.kube.contains import contains

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
