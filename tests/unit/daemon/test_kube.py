"""The daemon's API layer against a scripted stand-in for the API server (aiohttp test server).

Only the clique endpoint and the pod patch are served; the stand-in checks the requests and answers with
lists, watch streams, an expired watch (410) and a server error. The stream folds changes that arrive
while its consumer is busy, so the consumer here reads every list as soon as it comes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.api import names
from computedomain.daemon import kube
from computedomain.daemon.config import DaemonEntry
from computedomain.kube import Kube, KubeError
from computedomain.kube import informer as informer_module

NAMESPACE = "dra-driver"
CLIQUE_NAME = "0c9d7c4e-7b1a-4a63-9a55-1f1f0d6f2a10.7d3b.32766"
CLIQUE_PATH = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/{names.CLIQUE_PLURAL}"


def clique(rv: str, *indices: int) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.CLIQUE_KIND,
        "metadata": {"name": CLIQUE_NAME, "namespace": NAMESPACE, "resourceVersion": rv},
        "daemons": [
            {"nodeName": f"n{i}", "ipAddress": f"10.0.0.{i}", "cliqueID": "7d3b.32766", "index": i}
            for i in indices
        ],
    }


def listing(rv: str, *items: dict[str, Any]) -> web.Response:
    return web.json_response({"kind": "List", "metadata": {"resourceVersion": rv}, "items": list(items)})


def event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


class ScriptedApiServer:
    """Answers the n-th clique request with the n-th scripted reply; records every request's query."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.patches: list[tuple[str, str, Any]] = []
        self.field_managers: list[str] = []

    async def cliques(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(query)
        assert query["fieldSelector"] == f"metadata.name={CLIQUE_NAME}"
        step = len(self.requests)
        if step == 1:
            assert "watch" not in query
            return listing("10", clique("10", 0))
        if step == 2:
            assert query["watch"].lower() == "true"
            assert query["resourceVersion"] == "10"
            assert query["allowWatchBookmarks"].lower() == "true"
            return await self.stream(
                request,
                event_line("BOOKMARK", {"kind": names.CLIQUE_KIND, "metadata": {"resourceVersion": "11"}}),
                event_line("MODIFIED", clique("12", 0, 1)),
                event_line(
                    "ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
                ),
            )
        if step == 3:
            return web.json_response({"kind": "Status", "code": 500, "message": "etcd hiccup"}, status=500)
        if step == 4:
            return listing("20", clique("20", 0, 1, 2))
        if step == 5:
            assert query["resourceVersion"] == "20"
            return await self.stream(request, event_line("DELETED", clique("21", 0, 1, 2)))
        if "watch" in query:
            return await self.stream(request)
        return listing("30")

    async def stream(self, request: web.Request, *lines: bytes) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for line in lines:
            await response.write(line)
        await response.write_eof()
        return response

    async def patch_pod(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.patches.append((request.match_info["name"], request.content_type, body))
        self.field_managers.append(request.query.get("fieldManager", ""))
        return web.json_response(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": request.match_info["name"]}}
        )

    async def get_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "gone":
            return web.json_response(
                {"kind": "Status", "code": 404, "reason": "NotFound", "message": 'nodes "gone" not found'},
                status=404,
            )
        labels = {names.GPU_CLIQUE_LABEL: "7d3b.32766"} if name == "labelled" else {}
        return web.json_response(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
        )


@pytest.fixture
async def server() -> AsyncIterator[tuple[ScriptedApiServer, Kube]]:
    scripted = ScriptedApiServer()
    app = web.Application()
    app.router.add_get(CLIQUE_PATH, scripted.cliques)
    app.router.add_patch(f"/api/v1/namespaces/{NAMESPACE}/pods/{{name}}", scripted.patch_pod)
    app.router.add_get("/api/v1/nodes/{name}", scripted.get_node)
    test_server = TestServer(app)
    await test_server.start_server()
    configuration = client.Configuration(host=str(test_server.make_url("")).rstrip("/"))
    api = client.ApiClient(configuration=configuration)
    kube_client = Kube(connection_of(api), field_manager=kube.FIELD_MANAGER)
    yield scripted, kube_client
    await kube_client.close()
    await api.close()
    await test_server.close()


def indices(daemons: tuple[DaemonEntry, ...]) -> list[int | None]:
    return [entry.index for entry in daemons]


async def test_watch_lists_watches_relists_on_410_and_retries_errors(
    server: tuple[ScriptedApiServer, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted, kube_client = server
    monkeypatch.setattr(
        informer_module, "WATCH_RETRY", replace(informer_module.WATCH_RETRY, initial=0.01, maximum=0.01)
    )
    seen: list[list[int | None]] = []
    stream = kube.watch_clique(kube_client, NAMESPACE, CLIQUE_NAME)
    async for daemons in stream:
        if not seen or indices(daemons) != seen[-1]:
            seen.append(indices(daemons))
        if len(seen) == 4:
            break
    await stream.aclose()
    # list, MODIFIED, (410: list again, 500: back off, list), DELETED
    assert seen == [[0], [0, 1], [0, 1, 2], []]
    assert len(scripted.requests) >= 5


async def test_label_own_pod_sends_a_merge_patch(server: tuple[ScriptedApiServer, Kube]) -> None:
    scripted, kube_client = server
    await kube.label_own_pod(kube_client, NAMESPACE, "daemon-x7k2p", "7d3b.32766")
    assert scripted.patches == [
        (
            "daemon-x7k2p",
            "application/merge-patch+json",
            {"metadata": {"labels": {names.CLIQUE_LABEL: "7d3b.32766"}}},
        )
    ]
    assert scripted.field_managers == [kube.FIELD_MANAGER]


async def test_node_clique_is_read_and_a_missing_node_is_an_error(
    server: tuple[ScriptedApiServer, Kube],
) -> None:
    _, kube_client = server
    assert await kube.read_node_clique(kube_client, "labelled") == "7d3b.32766"
    assert await kube.read_node_clique(kube_client, "bare") == ""
    with pytest.raises(KubeError) as missing:
        await kube.read_node_clique(kube_client, "gone")
    assert missing.value.status == 404
