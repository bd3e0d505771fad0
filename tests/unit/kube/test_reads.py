"""`Kube`'s metadata-only reads and its count of received bytes, against a small HTTP server that
answers as the API server does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from cdtestbed.connection import connection_of
from computedomain.kube import DOMAINS, Kube, KubeError

COLLECTION = DOMAINS.path("team")
ONE = DOMAINS.path("team", "cd")
ABSENT = DOMAINS.path("team", "gone")


@dataclass
class Served:
    kube: Kube
    accepts: list[str] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    received: list[tuple[str, int, bool]] = field(default_factory=list)
    watch_lines: list[bytes] = field(default_factory=list)


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    state: dict[str, Served] = {}

    async def collection(request: web.Request) -> web.StreamResponse:
        seen = state["served"]
        accept = request.headers.get("Accept", "")
        seen.accepts.append(accept)
        seen.queries.append(dict(request.query))
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request)
            for line in seen.watch_lines:
                await response.write(line)
            await response.write_eof()
            return response
        # An empty list of metadata, as the API server sends it.
        return web.json_response(
            {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "items": None}
        )

    async def one(request: web.Request) -> web.Response:
        seen = state["served"]
        accept = request.headers.get("Accept", "")
        seen.accepts.append(accept)
        return web.json_response(
            {"kind": "PartialObjectMetadata", "metadata": {"name": "cd", "uid": "uid-1"}}
        )

    async def absent(request: web.Request) -> web.Response:
        state["served"].accepts.append(request.headers.get("Accept", ""))
        return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)

    app = web.Application()
    app.router.add_get(COLLECTION, collection)
    app.router.add_get(ONE, one)
    app.router.add_get(ABSENT, absent)
    server = TestServer(app)
    await server.start_server()
    api = client.ApiClient(configuration=client.Configuration(host=str(server.make_url("")).rstrip("/")))
    received: list[tuple[str, int, bool]] = []
    kube = Kube(connection_of(api), on_receive=lambda path, size, event: received.append((path, size, event)))
    state["served"] = Served(kube, received=received)
    yield state["served"]
    await kube.close()
    await api.close()
    await server.close()


async def test_metadata_only_reads_ask_for_partial_object_metadata(served: Served) -> None:
    obj = await served.kube.get(DOMAINS, "cd", "team", metadata_only=True)
    items, _ = await served.kube.list(DOMAINS, "team", metadata_only=True)

    assert obj is not None
    assert obj["metadata"]["uid"] == "uid-1"
    assert items == []  # `"items": null` is an empty list
    assert served.accepts == [
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
    ]


async def test_every_body_and_watch_event_is_counted_by_path(served: Served) -> None:
    events = [{"type": "ADDED", "object": {"metadata": {"name": f"cd-{i}"}}} for i in range(3)]
    served.watch_lines = [(json.dumps(e) + "\n").encode() for e in events]
    served.watch_lines.insert(1, b"\n")  # a keep-alive blank line is no event

    await served.kube.get(DOMAINS, "cd", "team")
    seen = [event async for event in served.kube.watch(DOMAINS, "1", "team")]
    with pytest.raises(KubeError) as raised:
        await served.kube.call("GET", ABSENT)
    assert raised.value.status == 404

    assert len(seen) == 3
    body = served.received[0]
    assert body[0] == ONE
    assert body[1] > 0
    assert body[2] is False
    assert served.received[1:4] == [
        (COLLECTION, len(line), True) for line in served.watch_lines if line.strip()
    ]
    assert served.received[4][0] == ABSENT
    assert served.received[4][2] is False
    assert len(served.received) == 5


async def test_without_a_hook_nothing_is_counted(served: Served) -> None:
    quiet = Kube(served.kube.connection)
    try:
        assert await quiet.get(DOMAINS, "cd", "team") is not None
    finally:
        await quiet.close()
    assert served.received == []
