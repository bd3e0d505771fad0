"""The one entry-point shape: options, settings, logging, User-Agent, then the program's coroutine."""

from __future__ import annotations

import argparse
import logging
import ssl
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import pytest
from pydantic import Field

from computedomain.envsettings import EnvSettings, LogFormat, LogLevel
from computedomain.kube.client import Kube, identify
from computedomain.kube.config import Connection
from computedomain.logs import TEXT
from computedomain.program import EXIT_USAGE, Program

NAME = "computedomain-example"


class ExampleSettings(EnvSettings):
    title: ClassVar[str] = "example settings"

    node_name: str = Field(min_length=1, validation_alias="NODE_NAME")
    interval: float = Field(default=60.0, gt=0, validation_alias="CHECK_INTERVAL_SECONDS")
    log_format: LogFormat = Field(default=TEXT, validation_alias="LOG_FORMAT")
    log_level: LogLevel = Field(default="INFO", validation_alias="LOG_LEVEL")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float)
    parser.add_argument("--offline", action="store_true")


def _overrides(args: argparse.Namespace) -> Mapping[str, Any]:
    return {} if args.interval is None else {"interval": args.interval}


ran: list[tuple[argparse.Namespace, ExampleSettings]] = []


async def _run(args: argparse.Namespace, settings: ExampleSettings) -> int:
    ran.append((args, settings))
    logging.getLogger("computedomain.example").debug("running")
    return 7


PROGRAM = Program(
    name=NAME,
    description="An example program.",
    read=ExampleSettings.from_env,
    run=_run,
    options=_options,
    overrides=_overrides,
    uses_api=lambda args, settings: not args.offline,
)


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    """Each test starts with no runs and leaves the root logger and the User-Agent as it found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ran.clear()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    identify("computedomain")


def user_agent() -> str:
    """What a client made now sends."""
    return Kube(Connection("https://127.0.0.1:6443", ssl.create_default_context())).user_agent


def test_runs_the_program_with_its_options_and_settings() -> None:
    assert PROGRAM.main(["--interval", "5"], {"NODE_NAME": "n1", "CHECK_INTERVAL_SECONDS": "30"}) == 7
    ((args, settings),) = ran
    assert (args.interval, settings.node_name, settings.interval) == (5.0, "n1", 5.0)
    assert user_agent().startswith(f"{NAME}/")


def test_a_run_without_the_api_server_does_not_name_itself() -> None:
    assert PROGRAM.main(["--offline"], {"NODE_NAME": "n1"}) == 7
    assert user_agent().startswith("computedomain/")


@pytest.mark.parametrize(
    ("argv", "env", "level"),
    [
        ([], {}, "INFO"),
        ([], {"LOG_LEVEL": "warning"}, "WARNING"),
        (["-v"], {"LOG_LEVEL": "warning"}, "DEBUG"),
        (["--verbose"], {}, "DEBUG"),
        (["--log-level", "error"], {"LOG_LEVEL": "warning"}, "ERROR"),
        (["--log-level", "error", "-v"], {}, "ERROR"),
    ],
)
def test_log_level_from_options_then_environment(argv: list[str], env: dict[str, str], level: str) -> None:
    _, settings = PROGRAM.parse(argv, {"NODE_NAME": "n1", **env})
    assert settings.log_level == level


def test_logging_is_configured_before_the_program_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert PROGRAM.main(["-v", "--offline"], {"NODE_NAME": "n1", "LOG_FORMAT": "json"}) == 7
    assert logging.getLogger().level == logging.DEBUG
    assert '"msg": "running"' in capsys.readouterr().err


def test_settings_errors_name_the_program_and_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"CHECK_INTERVAL_SECONDS": "soon", "LOG_LEVEL": "loud"}
    assert PROGRAM.main(["--log-level", "chatty"], env) == EXIT_USAGE
    assert ran == []
    assert capsys.readouterr().err.splitlines() == [
        f"{NAME}: error: invalid example settings:",
        "  NODE_NAME is required",
        "  CHECK_INTERVAL_SECONDS='soon': Input should be a valid number, unable to parse string as a number",
        "  --log-level='chatty': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ]


def test_parse_exits_2_on_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        PROGRAM.parse(["--interval", "0"], {"NODE_NAME": "n1"})
    assert exited.value.code == EXIT_USAGE
    assert "--interval=0.0: Input should be greater than 0" in capsys.readouterr().err


def test_bad_options_and_help_return_argparse_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert PROGRAM.main(["--no-such-option"], {"NODE_NAME": "n1"}) == EXIT_USAGE
    assert PROGRAM.main(["--help"], {}) == 0
    assert "--log-level LEVEL" in capsys.readouterr().out
    assert ran == []


def test_a_program_may_keep_v_for_itself() -> None:
    def numbered(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("-v", type=int, dest="verbosity")

    program = Program(
        name=NAME,
        description="",
        read=ExampleSettings.from_env,
        run=_run,
        options=numbered,
        verbose_flag=False,
    )
    args, settings = program.parse(["-v", "4"], {"NODE_NAME": "n1"})
    assert (args.verbosity, settings.log_level) == (4, "INFO")
