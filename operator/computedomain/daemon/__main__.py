"""Command line of `compute-domain-daemon`: `compute-domain-daemon [-v N] [--log-level LEVEL] run|check`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from computedomain.daemon.check import check_command
from computedomain.daemon.settings import DaemonSettings
from computedomain.program import Program

# Libraries' debug lines from this verbosity on (klog shows HTTP bodies at 8). The API client logs every
# response body at debug level, whole objects with their managedFields, on every list and watch.
LIBRARY_DEBUG_VERBOSITY = 8
LIBRARY_LOGGERS = ("kubernetes_asyncio", "aiohttp", "asyncio", "urllib3")


def _options(parser: argparse.ArgumentParser) -> None:
    # `-v N` as NVIDIA's DaemonSets (and ours) pass it: `compute-domain-daemon -v $(LOG_VERBOSITY) run`.
    parser.add_argument(
        "-v", "--verbosity", type=int, default=None, metavar="N", help="log verbosity (env LOG_VERBOSITY)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="run|check")
    commands.add_parser("run", help="configure and supervise nvidia-imex until terminated")
    commands.add_parser("check", help="probe: succeed when the local IMEX daemon is ready")


def _overrides(args: argparse.Namespace) -> Mapping[str, Any]:
    return {} if args.verbosity is None else {"log_verbosity": args.verbosity}


def quiet_libraries(verbosity: int) -> None:
    """Keep the libraries' debug lines out of the log below verbosity LIBRARY_DEBUG_VERBOSITY."""
    if verbosity < LIBRARY_DEBUG_VERBOSITY:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


async def _main(args: argparse.Namespace, settings: DaemonSettings) -> int:
    quiet_libraries(settings.log_verbosity)
    if args.command == "run":
        # Imported here: the API client takes about a CPU-second to import, and `check` runs as the
        # pod's exec probe (every second until started, every 10 s after) without needing it.
        from computedomain.daemon.run import run_command

        return await run_command(settings)
    return await check_command(settings)


PROGRAM = Program(
    name="compute-domain-daemon",
    description="Run and probe the IMEX daemon of one ComputeDomain node.",
    read=DaemonSettings.from_env,
    run=_main,
    options=_options,
    overrides=_overrides,
    verbose_flag=False,
    level_field="level",
    # The `check` probe never talks to the API server.
    uses_api=lambda args, settings: args.command == "run",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `compute-domain-daemon` console script; returns the exit code."""
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
