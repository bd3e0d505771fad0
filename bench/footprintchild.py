"""The interpreter that `bench/footprint.py` measures: it runs the steps it is given and stops after
each until told to go on, while the parent reads its memory from /proc.

    python bench/footprintchild.py import:asyncio import:grpc,grpc.aio serve:grpc ...

It loads nothing at the top but `sys` (already loaded when any interpreter starts), so what a step
adds is the step's own cost. `import:M,N` imports modules (a missing one is reported and skipped);
the `serve:` steps, which must come last, start what the kubelet plugin starts: `tls`, `http`, `grpc`,
`thread` and `gc` (see `SERVE_STEPS` in footprint.py).
"""

from __future__ import annotations

import sys


def main(steps: list[str]) -> int:
    """Run `steps`, pausing after each one."""
    for index, step in enumerate(steps):
        kind, _, argument = step.partition(":")
        if kind == "serve":
            import asyncio
            import tempfile

            with tempfile.TemporaryDirectory(prefix="footprint-") as folder:
                return asyncio.run(serve([s.partition(":")[2] for s in steps[index:]], folder))
        try:
            for module in argument.split(","):
                __import__(module)
        except ImportError as error:
            pause(f"missing {error.name}")
            continue
        pause("ok")
    return 0


def pause(outcome: str) -> None:
    """Say how the step went and wait for the parent's go-ahead (a line on stdin)."""
    sys.stdout.write(outcome + "\n")
    sys.stdout.flush()
    sys.stdin.readline()


class Unanswered:
    """Stands in for every servicer: registering a service needs its methods, not their answers."""

    def __getattr__(self, name: str) -> object:
        async def method(request: object, context: object) -> object:
            raise NotImplementedError(name)

        return method


async def serve(names: list[str], folder: str) -> int:
    """Start the parts named, in order, and keep them until the end; sockets go in `folder`."""
    import asyncio
    import gc
    import ssl
    from typing import Any

    from computedomain import endpoints

    contexts: list[ssl.SSLContext] = []
    runners: list[Any] = []
    servers: list[Any] = []
    for name in names:
        if name == "tls":
            # What a kubeconfig connection builds (kube/config.py): the system CAs, then the cluster's.
            contexts.append(ssl.create_default_context())
        elif name == "http":
            runners.append(await endpoints.serve(endpoints.make_app(lambda: (True, "ready")), 0, "127.0.0.1"))
        elif name == "grpc":
            servers.extend(await grpc_servers(folder))
        elif name == "thread":
            await asyncio.to_thread(int)
        elif name == "gc":
            gc.collect()
        elif name == "trim":
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)
        pause("ok")
    for server in servers:
        await server.stop(None)
    for runner in runners:
        await runner.cleanup()
    return 0


async def grpc_servers(folder: str) -> list[object]:
    """The DRA server (every service but registration) and the registration server, as the plugin
    runs them, filled by the generated stubs' own `add_*_to_server` functions."""
    import grpc

    stubs = [module for name, module in list(sys.modules.items()) if name.endswith("_pb2_grpc")]
    servers: list[object] = []
    for registration in (False, True):
        server = grpc.aio.server()
        for module in stubs:
            if ("registration" in module.__name__) != registration:
                continue
            for attribute in dir(module):
                if attribute.startswith("add_") and attribute.endswith("_to_server"):
                    getattr(module, attribute)(Unanswered(), server)
        server.add_insecure_port(f"unix://{folder}/{'registration' if registration else 'dra'}.sock")
        await server.start()
        servers.append(server)
    return servers


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
