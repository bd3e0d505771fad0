"""Command line of `compute-domain-daemon`: `compute-domain-daemon [-v N] run|check`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from computedomain.daemon.check import check_command
from computedomain.daemon.settings import SettingsError, load_settings
from computedomain.logs import configure_logging

# Verbosity at which debug logs appear (klog-style levels, as the DaemonSet passes LOG_VERBOSITY).
DEBUG_VERBOSITY = 4
# Libraries' debug lines from this verbosity on (klog shows HTTP bodies at 8). The API client logs every
# response body at debug level, whole objects with their managedFields, on every list and watch.
LIBRARY_DEBUG_VERBOSITY = 8
LIBRARY_LOGGERS = ("kubernetes_asyncio", "aiohttp", "asyncio", "urllib3")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: a global verbosity flag and the `run` and `check` subcommands."""
    parser = argparse.ArgumentParser(
        prog="compute-domain-daemon", description="Run and probe the IMEX daemon of one ComputeDomain node."
    )
    parser.add_argument("-v", "--verbosity", type=int, default=None, metavar="N", help="log verbosity")
    commands = parser.add_subparsers(dest="command", required=True, metavar="run|check")
    commands.add_parser("run", help="configure and supervise nvidia-imex until terminated")
    commands.add_parser("check", help="probe: succeed when the local IMEX daemon is ready")
    return parser


def configure_daemon_logging(log_format: str, verbosity: int) -> None:
    """Log to stderr in `log_format` (text or json); the daemon's debug lines from verbosity
    DEBUG_VERBOSITY on, the libraries' from LIBRARY_DEBUG_VERBOSITY on."""
    configure_logging(log_format, logging.DEBUG if verbosity >= DEBUG_VERBOSITY else logging.INFO)
    if verbosity < LIBRARY_DEBUG_VERBOSITY:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `compute-domain-daemon` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"compute-domain-daemon: {err}", file=sys.stderr)
        return 1
    verbosity = settings.log_verbosity if args.verbosity is None else args.verbosity
    configure_daemon_logging(settings.log_format, verbosity)
    if args.command == "run":
        # Imported here: the API client takes about a CPU-second to import, and `check` runs as the
        # pod's exec probe (every second until started, every 10 s after) without needing it.
        from computedomain.daemon.run import run_command

        return asyncio.run(run_command(settings))
    return asyncio.run(check_command(settings))


if __name__ == "__main__":
    sys.exit(main())
