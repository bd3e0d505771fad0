"""A TCP forwarder from the root network namespace into the test bed's own.

The control plane of a real-container bed runs inside the bed's network namespace (pods and the API
server must reach each other), yet the tests, `kubectl` and `helm` run in the machine's own namespace.
This forwarder listens on a loopback port of the root namespace and opens each upstream connection
from a thread that has entered the bed's namespace, so one process bridges the two without any
address of the bed appearing outside it.

    python -m cdtestbed.forward --listen 127.0.0.1:PORT --netns /proc/PID/ns/net --to 127.0.0.1:443
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import signal
import socket

from cdtestbed.netns import enter

_CHUNK = 1 << 16


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setblocking(False)
    return sock


async def serve(listen: tuple[str, int], netns: str, upstream: tuple[str, int]) -> None:
    """Forward every connection to `listen` to `upstream` inside `netns`, until cancelled."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, initializer=enter, initargs=(netns,))
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = await loop.run_in_executor(pool, _connect, *upstream)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for each in (writer, up_writer):
            each.close()

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--to", required=True, type=_address)
    args = parser.parse_args()

    async def run() -> None:
        task = asyncio.ensure_future(serve(args.listen, args.netns, args.to))
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
