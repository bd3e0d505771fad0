"""`computedomain-agent`: the node agent that finds this node's NVLink clique and labels the Node with it.

Exit codes: 0 fine; 1 (`--once`) a fault was found or the Node could not be updated; 2 NVML is
required but not usable, bad arguments, or no Kubernetes credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computedomain import endpoints
from computedomain.agent.loop import (
    EXIT_NVML_REQUIRED,
    EXIT_OK,
    EXIT_PROBLEM,
    AgentSettings,
    CliqueSink,
    NvmlRequiredError,
    observe,
    run_loop,
)
from computedomain.agent.metrics import LAST_CHECK
from computedomain.agent.report import render_report, render_text
from computedomain.nvml.clique import CliqueResult
from computedomain.nvml.gpus import NodeGpus
from computedomain.nvml.reading import PynvmlSource
from computedomain.program import EXIT_USAGE, Program
from computedomain.shutdown import ignore_further_signals, stop_on_signals


@dataclass(frozen=True)
class Options:
    """Settings (environment, overridden by options) and what this run does with its reports."""

    settings: AgentSettings
    once: bool
    json: bool

    @property
    def kube(self) -> bool:
        """True when the agent labels its Node (no `--no-kube`)."""
        return self.settings.kube


def _options(parser: argparse.ArgumentParser) -> None:
    # Defaults of None: an option not given leaves the environment's value (or the built-in default).
    parser.add_argument("--node-name", help="this node (env NODE_NAME)")
    parser.add_argument(
        "--interval", type=float, help="seconds between checks (env CHECK_INTERVAL_SECONDS, else 60)"
    )
    parser.add_argument(
        "--retry-interval",
        type=float,
        help="seconds to the next check after an NVML error or while registration is in progress "
        "(env RETRY_INTERVAL_SECONDS, else 5)",
    )
    parser.add_argument("--once", action="store_true", help="check once, print a report, exit")
    parser.add_argument("--no-kube", action="store_true", help="do not touch the cluster; print reports")
    parser.add_argument("--json", action="store_true", help="print reports as JSON (one object per line)")
    parser.add_argument(
        "--require-nvml",
        action=argparse.BooleanOptionalAction,
        help="exit 2 when NVML cannot be used (env REQUIRE_NVML, else true)",
    )
    parser.add_argument("--log-format", help="text (or plain) or json (env LOG_FORMAT, else text)")


def _overrides(args: argparse.Namespace) -> Mapping[str, Any]:
    given = {
        "node_name": args.node_name,
        "interval": args.interval,
        "retry_interval": args.retry_interval,
        "require_nvml": args.require_nvml,
        "log_format": args.log_format,
    }
    overrides: dict[str, Any] = {field: value for field, value in given.items() if value is not None}
    if args.no_kube:
        overrides["kube"] = False
    return overrides


async def _main(args: argparse.Namespace, settings: AgentSettings) -> int:
    try:
        return await _with_sink(Options(settings, args.once, args.json))
    except NvmlRequiredError as err:
        print(err, file=sys.stderr, flush=True)
        return EXIT_NVML_REQUIRED


PROGRAM = Program(
    name="computedomain-agent",
    description="Find this node's NVLink clique with NVML and keep the nvidia.com/gpu.clique label true. "
    "Configured by environment variables (NODE_NAME, POD_NAMESPACE, CHECK_INTERVAL_SECONDS, "
    "RETRY_INTERVAL_SECONDS, REQUIRE_NVML, HTTP_PORT, LOG_FORMAT, LOG_LEVEL); the options below override "
    "them.",
    read=AgentSettings.from_env,
    run=_main,
    options=_options,
    overrides=_overrides,
    # `--no-kube` (gpu-check on a bare GPU host) never loads the client.
    uses_api=lambda args, settings: settings.kube,
)


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """Options from `argv` and `env`; exits with status 2 and a message naming every bad value when
    they are invalid."""
    args, settings = PROGRAM.parse(argv, env)
    return Options(settings, args.once, args.json)


def _printer(options: Options) -> Callable[[NodeGpus, CliqueResult], None]:
    node = options.settings.node_name

    def report(gpus: NodeGpus, result: CliqueResult) -> None:
        if options.json:
            print(json.dumps(render_report(node, gpus, result)), flush=True)
        else:
            print(render_text(node, gpus, result) + "\n", flush=True)

    return report


async def _with_sink(options: Options) -> int:
    if not options.kube:
        return await _run(options, None)
    # Imported only when needed: `--no-kube` (gpu-check on a bare GPU host) never loads the client.
    from computedomain.agent.labeler import NodeLabeler
    from computedomain.api import names
    from computedomain.kube import Kube
    from computedomain.kube.config import ConfigError, load_connection

    try:
        connection = load_connection()
    except ConfigError as err:
        print(f"computedomain-agent: no Kubernetes credentials: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    kube = Kube(connection, field_manager=names.AGENT_FIELD_MANAGER)
    try:
        settings = options.settings
        return await _run(options, NodeLabeler(kube, settings.node_name, settings.namespace))
    finally:
        await kube.close()


async def _run(options: Options, sink: CliqueSink | None) -> int:
    source = PynvmlSource()
    report = _printer(options)
    if options.once:
        gpus, result = await observe(source, options.settings)
        synced = True if sink is None else await sink.sync(result)
        report(gpus, result)
        return EXIT_PROBLEM if result.is_problem or not synced else EXIT_OK
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop)
    app = endpoints.make_app(_readiness)
    runner = await endpoints.serve_optional(app, options.settings.http_port, "computedomain-agent")
    try:
        await run_loop(options.settings, source, sink, stop, report if not options.kube else None)
    finally:
        ignore_further_signals(loop)
        if runner is not None:
            await runner.cleanup()
    return EXIT_OK


def _readiness() -> tuple[bool, str]:
    # Ready once a check has run: from then on /metrics tells what the node's GPUs report.
    if LAST_CHECK.last is None:
        return False, "first check running"
    return True, "checking"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `computedomain-agent` console script; returns the exit code."""
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
