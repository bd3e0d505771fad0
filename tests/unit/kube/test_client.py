"""What every request says about its program (`User-Agent`) and what a refusal says about when to ask
again (`Retry-After`), against a small HTTP server."""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

import computedomain
from computedomain.kube import NODES, PODS, Kube, KubeError, identify
from computedomain.kube import client as client_module
from computedomain.kube.config import Connection
from computedomain.kube.errors import retry_after_seconds

VERSION = computedomain.__version__


def status(code: int, **details: object) -> dict[str, object]:
    return {"kind": "Status", "apiVersion": "v1", "code": code, "message": f"said {code}", "details": details}


@dataclass
class Served:
    connection: Connection
    agents: list[str] = field(default_factory=list)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    agents: list[str] = []

    async def nodes(request: web.Request) -> web.StreamResponse:
        agents.append(request.headers.get("User-Agent", ""))
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write_eof()
            return response
        return web.json_response({"items": [], "metadata": {"resourceVersion": "1"}})

    async def pod(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
        answers = {
            "throttled": (429, {"Retry-After": "3"}, status(429)),
            "dated": (429, {"Retry-After": in_a_minute}, status(429)),
            "busy": (503, {}, status(503, retryAfterSeconds=7)),
            "both": (503, {"Retry-After": "2"}, status(503, retryAfterSeconds=7)),
            "failing": (500, {"Retry-After": "5"}, status(500)),
            "timeout": (504, {}, status(504, retryAfterSeconds=1)),
            "garbled": (429, {"Retry-After": "soon"}, status(429)),
        }
        code, headers, body = answers[name]
        return web.json_response(body, status=code, headers=headers)

    app = web.Application()
    app.router.add_get(NODES.path(), nodes)
    app.router.add_get(PODS.path("x", "{name}"), pod)
    server = TestServer(app)
    await server.start_server()
    yield Served(Connection(str(server.make_url("")).rstrip("/"), ssl.create_default_context()), agents)
    await server.close()


async def use(kube: Kube) -> None:
    try:
        await kube.list(NODES)
        _ = [event async for event in kube.watch(NODES, "1")]
    finally:
        await kube.close()


async def test_every_request_names_its_program(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever identify() sets here is undone after the test.
    monkeypatch.setattr(client_module, "_default_user_agent", client_module.user_agent("computedomain"))
    await use(Kube(served.connection))
    identify("computedomain-controller")
    await use(Kube(served.connection))
    await use(Kube(served.connection, user_agent="computedomain-bench/1 (computedomain)"))
    assert served.agents == [
        f"computedomain/{VERSION} (computedomain)",
        f"computedomain/{VERSION} (computedomain)",
        f"computedomain-controller/{VERSION} (computedomain)",
        f"computedomain-controller/{VERSION} (computedomain)",
        "computedomain-bench/1 (computedomain)",
        "computedomain-bench/1 (computedomain)",
    ]


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("throttled", 3.0, 3.0),  # the header
        ("dated", 55.0, 60.0),  # the header as an HTTP date
        ("busy", 7.0, 7.0),  # the Status body
        ("both", 2.0, 2.0),  # the header first
        ("timeout", 1.0, 1.0),  # the Status body, whatever the status
    ],
)
async def test_a_refusal_says_when_to_ask_again(served: Served, name: str, low: float, high: float) -> None:
    kube = Kube(served.connection)
    try:
        with pytest.raises(KubeError) as raised:
            await kube.get(PODS, name, "x")
    finally:
        await kube.close()
    assert raised.value.retry_after is not None
    assert low <= raised.value.retry_after <= high
    assert str(raised.value).startswith("said ")


@pytest.mark.parametrize("name", ["failing", "garbled"])
async def test_a_retry_after_is_read_only_where_it_means_something(served: Served, name: str) -> None:
    kube = Kube(served.connection)
    try:
        with pytest.raises(KubeError) as raised:
            await kube.get(PODS, name, "x")
    finally:
        await kube.close()
    assert raised.value.retry_after is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("12", 12.0),
        (" 1.5 ", 1.5),
        (4, 4.0),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        (True, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("not a date", None),
    ],
)
def test_retry_after_values(value: object, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


async def test_a_delete_with_preconditions_deletes_only_the_object_as_read() -> None:
    # The server holds one pod at resourceVersion 2 and checks preconditions as the API server does.
    bodies: list[dict[str, object]] = []
    held = {"uid": "u-1", "resourceVersion": "2"}

    async def delete(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        if not held:
            return web.json_response(status(404), status=404)
        wanted = body.get("preconditions") or {}
        if any(held.get(key) != value for key, value in wanted.items()):
            return web.json_response(status(409), status=409)
        held.clear()
        return web.json_response(status(200))

    app = web.Application()
    app.router.add_delete(PODS.path("x", "{name}"), delete)
    server = TestServer(app)
    await server.start_server()
    kube = Kube(Connection(str(server.make_url("")).rstrip("/"), ssl.create_default_context()))
    try:
        with pytest.raises(KubeError) as raised:
            await kube.delete(PODS, "p", "x", preconditions={"uid": "u-1", "resourceVersion": "1"})
        assert raised.value.status == 409
        assert held, "a failed precondition deletes nothing"
        assert await kube.delete(PODS, "p", "x", preconditions={"uid": "u-1", "resourceVersion": "2"})
        assert not await kube.delete(PODS, "p", "x")
    finally:
        await kube.close()
        await server.close()
    assert bodies == [
        {"propagationPolicy": "Background", "preconditions": {"uid": "u-1", "resourceVersion": "1"}},
        {"propagationPolicy": "Background", "preconditions": {"uid": "u-1", "resourceVersion": "2"}},
        {"propagationPolicy": "Background"},
    ]
