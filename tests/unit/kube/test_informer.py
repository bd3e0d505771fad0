"""Informers and watches when the connection is lost: a cut stream resumes from the last version seen
without a new list, an expired version (410, as an answer or as an ERROR event) costs one list, and
no failure ends the informer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.kube import PODS, Kube, KubeError, Object, WatchExpired
from computedomain.kube import informer as informer_module
from computedomain.kube.informer import Informer
from support.waiting import eventually


def pod(name: str, rv: int) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv)},
    }


class ScriptedKube:
    """`list` and `watch` answer from scripts; a script step that is an exception is raised."""

    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[str] = []

    async def list(self, *_: Any, **__: Any) -> tuple[list[Object], str]:
        self.calls.append("list")
        step = self.lists.pop(0) if self.lists else ([], "999")
        if isinstance(step, BaseException):
            raise step
        return step  # type: ignore[no-any-return]

    async def watch(self, kind: Any, resource_version: str, *_: Any, **__: Any) -> AsyncIterator[Object]:
        self.calls.append(f"watch@{resource_version}")
        script = self.watches.pop(0) if self.watches else []
        if not script:
            await asyncio.Event().wait()  # an idle stream
        for step in script:
            await asyncio.sleep(0)
            if isinstance(step, BaseException):
                raise step
            yield step


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        informer_module, "WATCH_RETRY", replace(informer_module.WATCH_RETRY, initial=0.01, maximum=0.01)
    )


async def run_until(informer: Informer, condition: Any) -> None:
    task = asyncio.create_task(informer.run())
    try:
        await eventually(condition, timeout=5, interval=0.01, what="informer progress")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    "cut",
    [
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
            OSError(111, "refused"),
        ),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_cut_watch_resumes_from_the_last_version_without_listing(cut: BaseException) -> None:
    kube = ScriptedKube(
        lists=[([pod("a", 5)], "10")],
        watches=[
            [{"type": "ADDED", "object": pod("b", 12)}, cut],
            [cut],
            [{"type": "MODIFIED", "object": pod("b", 14)}],
        ],
    )
    events: list[tuple[str, str]] = []
    scripted = cast(Kube, kube)
    informer = Informer(
        scripted, PODS, lambda kind, obj, _: events.append((kind, obj["metadata"]["resourceVersion"]))
    )
    await run_until(informer, lambda: asyncio.sleep(0, ("MODIFIED", "14") in events))
    assert kube.calls[:4] == ["list", "watch@10", "watch@12", "watch@12"]
    assert kube.calls.count("list") == 1
    assert sorted(informer.store) == ["ns/a", "ns/b"]


async def test_an_expired_version_costs_one_list() -> None:
    kube = ScriptedKube(
        lists=[([pod("a", 5)], "10"), KubeError(503, "etcd is restarting"), ([pod("b", 30)], "31")],
        watches=[[WatchExpired()], [{"type": "ADDED", "object": pod("c", 33)}]],
    )
    events: list[tuple[str, str]] = []
    informer = Informer(kube, PODS, lambda kind, obj, _: events.append((kind, obj["metadata"]["name"])))  # type: ignore[arg-type]
    await run_until(informer, lambda: asyncio.sleep(0, ("ADDED", "c") in events))
    # expired: list (fails: retried after backoff), list, then watch from the new list's version
    assert kube.calls[:5] == ["list", "watch@10", "list", "list", "watch@31"]
    assert ("DELETED", "a") in events
    assert sorted(informer.store) == ["ns/b", "ns/c"]


# --- Kube.watch against a scripted server ----------------------------------------------------------


@pytest.fixture
async def served() -> AsyncIterator[tuple[list[Any], Kube]]:
    replies: list[Any] = []

    async def pods(request: web.Request) -> web.StreamResponse:
        reply = replies.pop(0)
        if isinstance(reply, web.Response):
            return reply
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for line in reply:
            await response.write((json.dumps(line) + "\n").encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", pods)
    server = TestServer(app)
    await server.start_server()
    api = client.ApiClient(configuration=client.Configuration(host=str(server.make_url("")).rstrip("/")))
    kube = Kube(connection_of(api))
    yield replies, kube
    await kube.close()
    await api.close()
    await server.close()


async def test_watch_turns_410_answers_and_events_into_watch_expired(served: tuple[list[Any], Kube]) -> None:
    replies, kube = served
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 5 (20)"}
    replies.append(web.json_response(gone, status=410))
    replies.append([{"type": "ADDED", "object": pod("a", 21)}, {"type": "ERROR", "object": gone}])
    replies.append([{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "internal"}}])

    with pytest.raises(WatchExpired, match="too old resource version"):
        async for _ in kube.watch(PODS, "5", "ns"):
            pass
    seen: list[str] = []

    async def drain() -> None:
        async for event in kube.watch(PODS, "20", "ns"):
            seen.append(event["type"])

    with pytest.raises(WatchExpired):
        await drain()
    assert seen == ["ADDED"]
    # Other errors in the stream are the caller's to judge.
    assert [e["type"] async for e in kube.watch(PODS, "21", "ns")] == ["ERROR"]
