"""The one shape of every program's `__main__`: options, settings, logging, then the program's coroutine.

Every program takes `--log-level` (default LOG_LEVEL, else INFO) and, except the IMEX daemon whose `-v N`
is the klog-style verbosity NVIDIA's DaemonSets pass, `-v` for DEBUG. Its settings come from the
environment, overridden by its options; a settings error prints the program's name and every problem
to stderr and exits 2, as argparse does for a bad option. Logs go through `computedomain.logs`, and a
program that talks to the API server names itself in its `User-Agent`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from computedomain.envvalues import SettingsError
from computedomain.logs import configure_logging

__all__ = ["EXIT_USAGE", "Configured", "Program"]

# Bad options or settings: the program cannot start as configured (argparse's own status).
EXIT_USAGE = 2


class Configured(Protocol):
    """What `Program` needs of a program's settings: how to log."""

    @property
    def log_format(self) -> str:
        """`text` or `json`."""
        ...

    @property
    def log_level(self) -> str:
        """A level name of the `logging` module."""
        ...


S = TypeVar("S", bound=Configured)


def _no_options(parser: argparse.ArgumentParser) -> None:
    """A program without options of its own."""


def _no_overrides(args: argparse.Namespace) -> Mapping[str, Any]:
    return {}


def _always(args: argparse.Namespace, settings: object) -> bool:
    return True


@dataclass(frozen=True)
class Program(Generic[S]):
    """One program's entry point: its name, how it reads its settings, and what it runs."""

    # The console script's name, first word of every error and of the User-Agent.
    name: str
    description: str
    # Reads the settings from the environment and the options' overrides (field -> value);
    # raises SettingsError naming every problem (`EnvSettings.from_env`, `EnvReader`).
    read: Callable[[Mapping[str, str], Mapping[str, Any]], S]
    # The program itself, given its options and settings; returns the exit code.
    run: Callable[[argparse.Namespace, S], Coroutine[Any, Any, int]]
    # Adds the program's own options and subcommands to the parser.
    options: Callable[[argparse.ArgumentParser], None] = _no_options
    # The settings the options override (field -> value), beside the log level.
    overrides: Callable[[argparse.Namespace], Mapping[str, Any]] = _no_overrides
    # False where the program's own `-v` means something else (the daemon's verbosity).
    verbose_flag: bool = True
    # The settings field `--log-level` (or `-v`) overrides.
    level_field: str = "log_level"
    # Whether this run talks to the API server (and so names itself in its User-Agent); the
    # client costs a quarter of a second to import, which a probe or `--no-kube` need not pay.
    uses_api: Callable[[argparse.Namespace, S], bool] = _always
    epilog: str | None = None

    def parser(self) -> argparse.ArgumentParser:
        """The argument parser: `--log-level`, `-v` where the program has it, then its own options."""
        parser = argparse.ArgumentParser(prog=self.name, description=self.description, epilog=self.epilog)
        parser.add_argument(
            "--log-level",
            metavar="LEVEL",
            help="DEBUG, INFO, WARNING, ERROR or CRITICAL (env LOG_LEVEL, else INFO)",
        )
        if self.verbose_flag:
            parser.add_argument(
                "-v", "--verbose", action="store_true", help="log at DEBUG (as --log-level DEBUG)"
            )
        self.options(parser)
        return parser

    def parse(self, argv: Sequence[str], env: Mapping[str, str]) -> tuple[argparse.Namespace, S]:
        """Options from `argv`, settings from `env` and the options; exits with status 2 and a message
        naming every problem when they are invalid."""
        parser = self.parser()
        args = parser.parse_args(argv)
        overrides = dict(self.overrides(args))
        level = args.log_level or ("DEBUG" if getattr(args, "verbose", False) else None)
        if level is not None:
            overrides[self.level_field] = level
        try:
            settings = self.read(env, overrides)
        except SettingsError as error:
            parser.exit(EXIT_USAGE, f"{self.name}: error: {error}\n")
        return args, settings

    def main(self, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
        """Parse, read the settings, configure logging, name the program to the API server and run
        it; returns the exit code (also for `--help` and for bad options or settings)."""
        try:
            args, settings = self.parse(
                sys.argv[1:] if argv is None else argv, os.environ if env is None else env
            )
        except SystemExit as stop:
            return _status(stop)
        configure_logging(settings.log_format, settings.log_level)
        if self.uses_api(args, settings):
            # Imported here: see `uses_api`.
            from computedomain.kube.client import identify

            identify(self.name)
        return asyncio.run(self.run(args, settings))


def _status(stop: SystemExit) -> int:
    if stop.code is None:
        return 0
    return stop.code if isinstance(stop.code, int) else EXIT_USAGE
