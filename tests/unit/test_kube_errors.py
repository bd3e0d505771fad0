"""`KubeError` carries what the API server said: status, message, reason and the causes' types."""

from __future__ import annotations

import json

from computedomain.kube import KubeError

# What the API server answers when a namespace being deleted refuses a new object.
TERMINATING = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'configmaps "b" is forbidden: unable to create new content in namespace x because it is '
    "being terminated",
    "reason": "Forbidden",
    "details": {
        "name": "b",
        "kind": "configmaps",
        "causes": [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace x is being terminated",
                "field": "metadata.namespace",
            }
        ],
    },
    "code": 403,
}


def api_error(status: int, body: object) -> KubeError:
    """The error a response with this status and body turns into."""
    raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else None
    return KubeError.from_response(status, "Forbidden", raw if raw is not None else json.dumps(body).encode())


def test_a_terminating_namespace_is_recognised() -> None:
    error = api_error(403, TERMINATING)
    assert error.status == 403
    assert error.reason == "Forbidden"
    assert str(error) == TERMINATING["message"]
    assert error.causes == ("NamespaceTerminating",)
    assert error.namespace_terminating


def test_other_refusals_are_not_taken_for_a_terminating_namespace() -> None:
    body = {**TERMINATING, "message": "no", "details": {"causes": [{"reason": "FieldValueInvalid"}]}}
    error = api_error(403, body)
    assert not error.namespace_terminating
    assert not (api_error(409, {"message": "exists", "reason": "AlreadyExists"})).causes


def test_a_body_that_is_not_a_status_is_kept_as_the_message() -> None:
    error = api_error(502, "bad gateway")
    assert (error.status, str(error), error.causes) == (502, "bad gateway", ())
    assert str(api_error(500, b"[1, 2]")) == "[1, 2]"
