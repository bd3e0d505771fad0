"""Fields our apply owns but the rendering no longer sets, read from managedFields."""

from __future__ import annotations

import json
from typing import Any

from computedomain.kube.ownership import (
    applied_fields,
    keep_applied,
    stale_fields,
    taken_over,
    updated_by,
)

OWNED: Any = {
    "f:metadata": {"f:labels": {"f:a": {}}},
    "f:spec": {
        "f:template": {
            "f:spec": {
                "f:priorityClassName": {},
                "f:containers": {
                    'k:{"name":"imex"}': {
                        ".": {},
                        "f:image": {},
                        "f:ports": {'k:{"containerPort":50000,"protocol":"TCP"}': {}},
                    }
                },
                "f:finalizers": {'v:"x"': {}},
            }
        }
    },
}


def desired(**pod: object) -> Any:
    container = {"name": "imex", "image": "i", "ports": [{"containerPort": 50000}]}
    spec = {"containers": [container], "finalizers": ["x"], **pod}
    return {"metadata": {"labels": {"a": "1"}}, "spec": {"template": {"spec": spec}}}


def test_nothing_is_stale_while_everything_owned_is_rendered() -> None:
    assert stale_fields(OWNED, desired(priorityClassName="p")) == []


def test_a_dropped_field_is_stale() -> None:
    assert stale_fields(OWNED, desired()) == ["spec.template.spec.priorityClassName"]


def test_a_dropped_list_item_or_set_value_is_stale() -> None:
    manifest = desired(priorityClassName="p")
    manifest["spec"]["template"]["spec"]["containers"] = [{"name": "other"}]
    manifest["spec"]["template"]["spec"]["finalizers"] = []
    assert stale_fields(OWNED, manifest) == [
        'spec.template.spec.containers[{"name":"imex"}]',
        'spec.template.spec.finalizers["x"]',
    ]


def managed(*entries: Any) -> Any:
    return {"metadata": {"name": "n", "managedFields": list(entries)}}


KUBELET: Any = {"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}
OUR_STATUS: Any = {
    "manager": "us",
    "operation": "Update",
    "subresource": "status",
    "fieldsV1": {"f:status": {}},
}
OUR_UPDATE: Any = {"manager": "us", "operation": "Update", "fieldsV1": {"f:spec": {}}}
OUR_APPLY: Any = {"manager": "us", "operation": "Apply", "time": "t", "fieldsV1": OWNED}


def test_a_cache_keeps_only_our_entries() -> None:
    obj = managed(KUBELET, OUR_UPDATE, OUR_APPLY)
    keep_applied(obj, "us")
    assert obj["metadata"]["managedFields"] == [
        {"manager": "us", "operation": "Apply", "fieldsV1": json.dumps(OWNED, separators=(",", ":"))},
        {"manager": "us", "operation": "Update", "fieldsV1": '{"f:spec":{}}'},
    ]
    assert applied_fields(obj, "us") == OWNED
    assert updated_by(obj, "us")
    assert applied_fields(obj, "kubelet") is None
    assert "managedFields" not in keep_applied(managed(KUBELET), "us")["metadata"]


def test_our_update_entry_is_folded_into_our_apply_entry_less_metadata() -> None:
    update = {
        "manager": "us",
        "operation": "Update",
        "fieldsV1": {
            "f:metadata": {"f:annotations": {"f:server": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:priorityClassName": {}, "f:dnsPolicy": {}}}},
        },
    }
    obj = managed(KUBELET, OUR_STATUS, update, OUR_APPLY)
    obj["apiVersion"] = "apps/v1"
    assert updated_by(obj, "us")
    *kept, applied = taken_over(obj, "us")
    assert kept == [KUBELET, OUR_STATUS]
    assert (applied["manager"], applied["operation"], applied["apiVersion"]) == ("us", "Apply", "apps/v1")
    fields = applied["fieldsV1"]
    assert fields["f:metadata"] == OWNED["f:metadata"]
    assert set(fields["f:spec"]["f:template"]["f:spec"]) == {
        *OWNED["f:spec"]["f:template"]["f:spec"],
        "f:dnsPolicy",
    }
    assert not updated_by(managed(KUBELET, OUR_STATUS, OUR_APPLY), "us")
    assert not updated_by(managed({"manager": "us", "operation": "Update", "fieldsV1": {}}), "us")
