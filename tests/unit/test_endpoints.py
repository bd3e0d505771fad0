"""The HTTP endpoints every program serves, on a real socket: statuses, bodies, content types, HEAD,
unknown paths and methods, kept-alive and closed connections, bad requests, and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from computedomain import endpoints

State = dict[str, tuple[bool, str]]


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, State]]:
    state: State = {"ready": (False, "caches loading")}
    runner = await endpoints.serve(endpoints.make_app(lambda: state["ready"]), 0, "127.0.0.1")
    assert runner.server is not None
    port = runner.server.sockets[0].getsockname()[1]
    try:
        yield port, state
    finally:
        await runner.cleanup()


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw`, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


async def test_healthz_answers_ok(served: tuple[int, State]) -> None:
    port, _ = served
    status, headers, body = parse(await exchange(port, get("/healthz")))
    assert (status, body) == (200, b"ok\n")
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["connection"] == "close"


async def test_readyz_follows_the_readiness_callable(served: tuple[int, State]) -> None:
    port, state = served
    assert parse(await exchange(port, get("/readyz")))[::2] == (503, b"caches loading\n")
    state["ready"] = (True, "registered")
    assert parse(await exchange(port, get("/readyz?verbose")))[::2] == (200, b"registered\n")


async def test_metrics_in_prometheus_text(served: tuple[int, State]) -> None:
    port, _ = served
    status, headers, body = parse(await exchange(port, get("/metrics")))
    assert status == 200
    assert headers["content-type"] == CONTENT_TYPE_LATEST
    assert b"# TYPE python_info gauge" in body
    assert int(headers["content-length"]) == len(body)


async def test_head_has_the_length_but_no_body(served: tuple[int, State]) -> None:
    port, _ = served
    status, headers, body = parse(await exchange(port, get("/healthz", "HEAD")))
    assert (status, headers["content-length"], body) == (200, "3", b"")


async def test_unknown_path_and_method(served: tuple[int, State]) -> None:
    port, _ = served
    assert parse(await exchange(port, get("/nope")))[0] == 404
    status, headers, _ = parse(await exchange(port, get("/healthz", "POST")))
    assert (status, headers["allow"]) == (405, "GET,HEAD")


async def test_http11_connection_stays_open_for_the_next_request(served: tuple[int, State]) -> None:
    port, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Connection: close" not in head
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"ok\n"
    finally:
        writer.close()


async def test_http10_connection_closes_after_the_answer(served: tuple[int, State]) -> None:
    port, _ = served
    status, _, body = parse(await exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n"))
    assert (status, body) == (200, b"ok\n")


async def test_a_small_body_is_read_past(served: tuple[int, State]) -> None:
    port, _ = served
    raw = (
        b"GET /healthz HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd"
        b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    answer = await exchange(port, raw)
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ")
    assert second.startswith(b"404 ")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET /healthz SPDY/3\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ],
)
async def test_bad_requests_are_refused_and_closed(
    served: tuple[int, State], raw: bytes, status: int
) -> None:
    port, _ = served
    answer = await exchange(port, raw)
    assert parse(answer)[0] == status
    assert b"Connection: close" in answer


async def test_a_failing_readiness_callable_answers_500(served: tuple[int, State]) -> None:
    port, state = served
    state.clear()  # the callable now raises KeyError
    assert parse(await exchange(port, get("/readyz")))[0] == 500
    assert parse(await exchange(port, get("/healthz")))[0] == 200


async def test_cleanup_closes_the_listener_and_open_connections() -> None:
    runner = await endpoints.serve(endpoints.make_app(lambda: (True, "ok")), 0, "127.0.0.1")
    assert runner.server is not None
    port = runner.server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)
    await asyncio.wait_for(runner.cleanup(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the kept-alive connection was closed
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
