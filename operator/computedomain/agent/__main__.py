"""`computedomain-agent`: the node agent that finds this node's NVLink clique and labels the Node with it.

Exit codes: 0 fine; 1 (`--once`) a fault was found or the Node could not be updated; 2 NVML is
required but not usable, bad arguments, or no Kubernetes credentials.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from computedomain.agent.clique import CliqueResult
from computedomain.agent.gpus import NodeGpus
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
from computedomain.agent.nvml import PynvmlSource
from computedomain.agent.report import render_report, render_text
from computedomain.logs import configure_logging

# Same status as argparse's usage errors: the agent cannot start as configured.
EXIT_USAGE = 2
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# "text" is the chart's name (values.yaml `logFormat`) for what the agent calls "plain".
LOG_FORMATS = ("plain", "text", "json")


@dataclass(frozen=True)
class Options:
    """Parsed command line and environment."""

    settings: AgentSettings
    once: bool
    kube: bool
    json: bool
    log_format: str
    log_level: str


def parse_bool(text: str) -> bool:
    """`true`/`false` and the usual spellings; ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="computedomain-agent",
        description="Find this node's NVLink clique with NVML and keep the nvidia.com/gpu.clique label true.",
    )
    parser.add_argument("--node-name", default=env.get("NODE_NAME", ""), help="this node (env NODE_NAME)")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checks (default 60)")
    parser.add_argument(
        "--retry-interval",
        type=float,
        default=5.0,
        help="seconds to the next check after an NVML error or while registration is in progress (default 5)",
    )
    parser.add_argument("--once", action="store_true", help="check once, print a report, exit")
    parser.add_argument("--no-kube", action="store_true", help="do not touch the cluster; print reports")
    parser.add_argument("--json", action="store_true", help="print reports as JSON (one object per line)")
    parser.add_argument(
        "--require-nvml",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="exit 2 when NVML cannot be used (default: env REQUIRE_NVML, else true)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=env.get("LOG_FORMAT", "plain"),
        help="plain (or text, as the chart's logFormat says) or json (default: env LOG_FORMAT, else plain)",
    )
    parser.add_argument("--log-level", default=env.get("LOG_LEVEL", "INFO"))
    return parser


def parse_options(argv: Sequence[str], env: Mapping[str, str]) -> Options:
    """Options from `argv` and `env`; exits with status 2 and a usage message when they are invalid."""
    parser = _parser(env)
    args = parser.parse_args(argv)
    require = args.require_nvml
    if require is None:
        try:
            require = parse_bool(env.get("REQUIRE_NVML", "true"))
        except ValueError as err:
            parser.error(f"REQUIRE_NVML: {err}")
    if args.log_format not in LOG_FORMATS:
        # argparse checks choices only for values given on the command line, not for env defaults.
        parser.error(f"LOG_FORMAT: {args.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if not args.no_kube and not args.node_name:
        parser.error("the node name is required: set NODE_NAME or --node-name (or use --no-kube)")
    if args.interval <= 0 or args.retry_interval < 0:
        parser.error("--interval must be positive and --retry-interval not negative")
    settings = AgentSettings(
        node_name=args.node_name,
        interval=args.interval,
        retry_interval=args.retry_interval,
        require_nvml=require,
    )
    return Options(settings, args.once, not args.no_kube, args.json, args.log_format, args.log_level)


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
    from kubernetes_asyncio.config import ConfigException

    from computedomain.agent.labeler import NodeLabeler
    from computedomain.kube.config import load_api_client

    try:
        api_client = await load_api_client()
    except ConfigException as err:
        print(f"computedomain-agent: no Kubernetes credentials: {err}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    async with api_client as api:
        return await _run(options, NodeLabeler(api, options.settings.node_name))


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
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_loop(options.settings, source, sink, stop, report if not options.kube else None)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `computedomain-agent` console script; returns the exit code."""
    options = parse_options(sys.argv[1:] if argv is None else argv, os.environ)
    configure_logging(options.log_format, options.log_level)
    try:
        return asyncio.run(_with_sink(options))
    except NvmlRequiredError as err:
        print(err, file=sys.stderr, flush=True)
        return EXIT_NVML_REQUIRED


if __name__ == "__main__":
    sys.exit(main())
