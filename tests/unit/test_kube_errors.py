"""`KubeError` carries what the API server said: status, message, reason and the causes' types."""

from __future__ import annotations

import json

from kubernetes_asyncio.client.exceptions import ApiException

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


def api_error(status: int, body: object) -> ApiException:
    error = ApiException(status=status, reason="Forbidden")
    error.body = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else None
    if error.body is None:
        error.body = json.dumps(body).encode()
    return error


def test_a_terminating_namespace_is_recognised() -> None:
    error = KubeError.from_api(api_error(403, TERMINATING))
    assert error.status == 403
    assert error.reason == "Forbidden"
    assert str(error) == TERMINATING["message"]
    assert error.causes == ("NamespaceTerminating",)
    assert error.namespace_terminating


def test_other_refusals_are_not_taken_for_a_terminating_namespace() -> None:
    body = {**TERMINATING, "message": "no", "details": {"causes": [{"reason": "FieldValueInvalid"}]}}
    error = KubeError.from_api(api_error(403, body))
    assert not error.namespace_terminating
    assert not KubeError.from_api(api_error(409, {"message": "exists", "reason": "AlreadyExists"})).causes


def test_a_body_that_is_not_a_status_is_kept_as_the_message() -> None:
    error = KubeError.from_api(api_error(502, "bad gateway"))
    assert (error.status, str(error), error.causes) == (502, "bad gateway", ())
    assert str(KubeError.from_api(api_error(500, b"[1, 2]"))) == "[1, 2]"
