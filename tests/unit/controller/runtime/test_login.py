"""Kopf's login: the session Kopf gets reaches the server our own client reaches, and every request
carries the token our token source holds at that moment (tokens rotate), with no second loader."""

from __future__ import annotations

import ssl

import aiohttp
import kopf
from aiohttp import web

from cdtestbed.cluster import free_port
from computedomain.controller.runtime.handlers import api_session
from computedomain.kube.config import Connection, StaticToken


async def test_every_request_of_kopf_carries_the_token_of_that_moment() -> None:
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    app = web.Application()
    app.router.add_get("/api", record)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    tokens = StaticToken("tok-1")
    connection = Connection(f"http://127.0.0.1:{port}", ssl.create_default_context(), tokens)
    info = api_session(connection)
    try:
        assert isinstance(info, kopf.AiohttpSession)
        assert info.server == connection.host
        session = info.aiohttp_session
        async with session.get(f"{info.server}/api") as response:
            assert response.status == 200
        tokens.value = "tok-2"  # what a rotation does to the source
        async with session.get(f"{info.server}/api") as response:
            assert response.status == 200
    finally:
        await info.aiohttp_session.close()
        await runner.cleanup()
    assert seen == ["Bearer tok-1", "Bearer tok-2"]


async def test_kopf_gets_our_tls_context_and_no_settings_from_the_environment() -> None:
    context = ssl.create_default_context()
    info = api_session(Connection("https://10.0.0.1:443", context, None))
    try:
        session = info.aiohttp_session
        assert isinstance(session.connector, aiohttp.TCPConnector)
        # The same context object: the CA, client certificate and verification our client uses.
        assert session.connector._ssl is context
        assert session.trust_env is False
    finally:
        await info.aiohttp_session.close()
