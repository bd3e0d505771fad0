"""`serve_optional`, which the node agent and the IMEX daemon use: no port, no server; a port that
cannot be bound is said in the log and the program goes on without its endpoints."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from computedomain import endpoints


def app() -> endpoints.App:
    return endpoints.make_app(lambda: (True, "ok"))


async def test_port_zero_serves_nothing() -> None:
    assert await endpoints.serve_optional(app(), 0, "a program") is None


async def test_a_free_port_is_served() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = await endpoints.serve_optional(app(), port, "a program")
    assert runner is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b"ok\n")
    finally:
        await runner.cleanup()


async def test_a_taken_port_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="computedomain.endpoints"):
            assert await endpoints.serve_optional(app(), port, "compute-domain-daemon") is None
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"compute-domain-daemon serves no metrics: cannot listen on port {port}"
    )
