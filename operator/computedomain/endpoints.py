"""Health, readiness and Prometheus metrics over HTTP, served the same way by every program.

Three GET routes on asyncio's own streams rather than aiohttp's web framework: the kubelet plugin
runs on every GPU node and otherwise needs only aiohttp's client, and the framework would add about
2 MiB to its resident memory on each of them (see bench/footprint.py). The answers are those the
framework gave: the same statuses, bodies and content types, HEAD beside GET, 404 and 405 (with
`Allow`), and HTTP/1.1 connections kept open for the next scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

TEXT = "text/plain; charset=utf-8"
ALLOWED = "GET,HEAD"
# An idle client connection is closed after this long, as aiohttp's server did by default.
KEEPALIVE_SECONDS = 75.0
# A request's head (request line and headers) must arrive within this long once it has started.
HEAD_SECONDS = 10.0
MAX_HEADERS = 100
# Probes and scrapes send no body; a bigger one than this is refused rather than read.
MAX_BODY = 64 * 1024

Ready = Callable[[], tuple[bool, str]]


@dataclass(frozen=True)
class Response:
    """One answer: status, body and its content type, and headers beyond those."""

    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: int, text: str) -> Response:
    return Response(status, text.encode())


class App:
    """The routes: `/healthz` (the event loop answers), `/readyz` (`ready()` says so) and `/metrics`."""

    def __init__(self, ready: Ready) -> None:
        self.ready = ready
        self.routes: dict[str, Callable[[], Response]] = {
            "/healthz": lambda: _text(200, "ok\n"),
            "/readyz": self._readyz,
            "/metrics": lambda: Response(200, generate_latest(), CONTENT_TYPE_LATEST),
        }

    def _readyz(self) -> Response:
        ok, detail = self.ready()
        return _text(200 if ok else 503, detail + "\n")

    def respond(self, method: str, path: str) -> Response:
        """The answer to `method` on `path` (its query string dropped)."""
        route = self.routes.get(path.partition("?")[0])
        if route is None:
            return _text(404, "404: Not Found")
        if method not in ("GET", "HEAD"):
            return Response(405, b"405: Method Not Allowed", headers=(("Allow", ALLOWED),))
        try:
            return route()
        except Exception:
            log.exception("%s %s failed", method, path)
            return _text(500, "500 Internal Server Error\n\nServer got itself in trouble")


def make_app(ready: Ready) -> App:
    """`/healthz` (the event loop answers), `/readyz` (`ready()` says so) and `/metrics`."""
    return App(ready)


class _BadRequest(Exception):
    """The client sent something that is not an HTTP/1.x request we answer; the connection closes."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    keep_alive: bool


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """The next request on a connection; None once the client closed it or stayed idle too long."""
    try:
        line = await asyncio.wait_for(reader.readline(), KEEPALIVE_SECONDS)
    except (TimeoutError, ConnectionError):
        return None
    except ValueError:  # longer than the stream's line limit
        raise _BadRequest(400) from None
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400)
    method, path, version = parts
    headers = await asyncio.wait_for(_read_headers(reader), HEAD_SECONDS)
    connection = headers.get("connection", "").lower()
    keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
    if "transfer-encoding" in headers:
        raise _BadRequest(501)
    length = headers.get("content-length", "0")
    if not length.isdigit():
        raise _BadRequest(400)
    if int(length) > MAX_BODY:
        raise _BadRequest(413)
    if int(length):
        await asyncio.wait_for(reader.readexactly(int(length)), HEAD_SECONDS)
    return _Request(method, path, keep_alive)


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            line = await reader.readline()
        except ValueError:
            raise _BadRequest(400) from None
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise _BadRequest(400)
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise _BadRequest(400)
        headers[name.strip().lower()] = value.strip()
    raise _BadRequest(431)


def _encode(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class Runner:
    """A listening server; `cleanup()` stops it and closes the connections it holds."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the requests of one connection until either side closes it."""
        self._connections.add(writer)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except _BadRequest as error:
                    writer.write(_encode(_text(error.status, HTTPStatus(error.status).phrase), False, False))
                    break
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                if request is None:
                    break
                response = self.app.respond(request.method, request.path)
                writer.write(_encode(response, request.method == "HEAD", request.keep_alive))
                await writer.drain()
                if not request.keep_alive:
                    break
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def cleanup(self) -> None:
        """Stop listening and close every connection."""
        if self.server is not None:
            self.server.close()
        for writer in list(self._connections):
            writer.close()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


async def serve(app: App, port: int, host: str = "0.0.0.0") -> Runner:
    """Start serving `app`; the caller cleans up the returned runner."""
    runner = Runner(app)
    runner.server = await asyncio.start_server(runner.handle, host, port)
    return runner


async def serve_optional(app: App, port: int, what: str) -> Runner | None:
    """`serve` for a program whose endpoints only report on it (no probe reads them): None when `port`
    is 0, and None with an error logged when the port cannot be bound, as the program's own work
    (IMEX, the node's clique label) matters more than being scraped. `what` names the program."""
    if not port:
        return None
    try:
        return await serve(app, port)
    except OSError as error:
        log.error("%s serves no metrics: cannot listen on port %d: %s", what, port, error)
        return None
