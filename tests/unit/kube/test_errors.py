"""`KubeError` carries what the API server said: status, message, reason and the causes' types; an
answer cut short is worth asking for again, an object our models reject is not."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pydantic
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.api.models import ComputeDomainDaemonConfig
from computedomain.kube import DOMAINS, Kube, KubeError, is_transient
from computedomain.kube.errors import UndecodableResponse

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


def test_an_object_our_models_reject_is_not_transient() -> None:
    with pytest.raises(pydantic.ValidationError) as rejected:
        ComputeDomainDaemonConfig.model_validate({"kind": "ComputeDomainDaemonConfig", "bogus": 1})
    assert isinstance(rejected.value, ValueError)
    assert not is_transient(rejected.value)
    assert not is_transient(ValueError("invalid literal for int() with base 10: 'x'"))


# Bodies cut short, as a dropped connection or a restarting API server leaves them.
CUT_BODY = b'{"kind": "ComputeDomain", "metadata": {"na'
CUT_EVENT = b'{"type": "ADDED", "object": {"kind": "Comp\n'


@pytest_asyncio.fixture
async def cut_short() -> AsyncIterator[Kube]:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.Response(body=CUT_BODY, content_type="application/json")
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(CUT_EVENT)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get(DOMAINS.path("team"), answer)
    server = TestServer(app)
    await server.start_server()
    api = client.ApiClient(configuration=client.Configuration(host=str(server.make_url("")).rstrip("/")))
    kube = Kube(connection_of(api))
    yield kube
    await kube.close()
    await api.close()
    await server.close()


async def test_a_body_cut_short_is_transient(cut_short: Kube) -> None:
    with pytest.raises(UndecodableResponse) as cut:
        await cut_short.call("GET", DOMAINS.path("team"))
    assert is_transient(cut.value)


async def test_a_watch_event_cut_short_is_transient(cut_short: Kube) -> None:
    with pytest.raises(UndecodableResponse) as cut:
        async for _ in cut_short.watch(DOMAINS, "1", "team"):
            pass
    assert is_transient(cut.value)
