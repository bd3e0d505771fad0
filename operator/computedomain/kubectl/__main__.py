"""`kubectl-computedomain`, found by kubectl on PATH as `kubectl computedomain`.

    kubectl computedomain status NAME [-n NAMESPACE] [-o json]
    kubectl computedomain why NAME [-n NAMESPACE]

Exit codes: 0 fine (`why`: the domain is Ready); 1 `why`: the domain is not Ready (the paragraph says
why); 2 bad usage, no such domain, or no way to reach the API server.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from computedomain.envvalues import EnvReader
from computedomain.kube import Kube, KubeError
from computedomain.kube.config import ConfigError, load_connection
from computedomain.kube.retry import Stopped
from computedomain.kubectl.explain import explain
from computedomain.kubectl.gather import gather
from computedomain.kubectl.table import render_json, render_table
from computedomain.logs import parse_log_format, parse_log_level
from computedomain.objects import is_dns_label
from computedomain.program import EXIT_USAGE, Program

NAME = "kubectl-computedomain"
DEFAULT_OPERATOR_NAMESPACE = "computedomain-system"
EXIT_OK = 0
EXIT_NOT_READY = 1


@dataclass(frozen=True)
class Settings:
    """Where the operator runs, and how this tool logs (quietly: its output is the report)."""

    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    log_format: str = "text"
    log_level: str = "WARNING"


def _namespace(text: str) -> str:
    if not is_dns_label(text):
        raise ValueError("must be a namespace name (a DNS label)")
    return text


def read_settings(env: Mapping[str, str], overrides: Mapping[str, Any]) -> Settings:
    """Settings from CD_OPERATOR_NAMESPACE, LOG_FORMAT and LOG_LEVEL, overridden by the options."""
    reader = EnvReader(
        "kubectl-computedomain settings", env, overrides, {"operator_namespace": "--operator-namespace"}
    )
    settings = Settings(
        operator_namespace=reader.read(
            "operator_namespace", "CD_OPERATOR_NAMESPACE", _namespace, DEFAULT_OPERATOR_NAMESPACE
        ),
        log_format=reader.read("log_format", "LOG_FORMAT", parse_log_format, "text"),
        log_level=reader.read("log_level", "LOG_LEVEL", parse_log_level, "WARNING"),
    )
    reader.finish()
    return settings


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--operator-namespace",
        metavar="NAMESPACE",
        help=f"where the operator runs (env CD_OPERATOR_NAMESPACE, else {DEFAULT_OPERATOR_NAMESPACE})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="per node: clique, index, IMEX daemon pod and state, claims")
    why = commands.add_parser("why", help="one paragraph: why the domain is not Ready, and what to do")
    for command in (status, why):
        command.add_argument("name", metavar="NAME", help="the ComputeDomain")
        command.add_argument("-n", "--namespace", default="default", help="its namespace (default: default)")
    status.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")


def _overrides(args: argparse.Namespace) -> Mapping[str, Any]:
    return {} if args.operator_namespace is None else {"operator_namespace": args.operator_namespace}


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        connection = load_connection()
    except ConfigError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    kube = Kube(connection)
    try:
        snapshot = await gather(kube, args.namespace, args.name, settings.operator_namespace)
    except (KubeError, OSError, Stopped) as error:
        print(f"{NAME}: error: cannot read from the API server: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await kube.close()
    if snapshot is None:
        print(f"{NAME}: error: ComputeDomain {args.namespace}/{args.name} not found", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "status":
        if args.output == "json":
            print(json.dumps(render_json(snapshot), indent=2))
        else:
            print(render_table(snapshot), end="")
        return EXIT_OK
    ready, paragraph = explain(snapshot)
    print(paragraph)
    return EXIT_OK if ready else EXIT_NOT_READY


PROGRAM = Program(
    name=NAME,
    description="Show a ComputeDomain per node, and say why it is not Ready. Read-only.",
    read=read_settings,
    run=_run,
    options=_options,
    overrides=_overrides,
    epilog="Exit codes: 0 fine (why: Ready), 1 why: not Ready, 2 bad usage, no such domain or no API server.",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kubectl-computedomain` console script; returns the exit code."""
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
