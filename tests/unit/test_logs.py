"""The log formats every program shares."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from computedomain.logs import JsonFormatter, configure_logging, parse_log_format, parse_log_level


def test_json_lines_carry_level_logger_and_message() -> None:
    record = logging.LogRecord(
        "computedomain.agent.loop", logging.WARNING, __file__, 1, "clique %s", ("x.1",), None
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "computedomain.agent.loop"
    assert entry["msg"] == "clique x.1"
    assert entry["time"].endswith("+00:00")
    assert "exc" not in entry


def test_json_lines_include_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("a", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: boom" in entry["exc"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("text", "text"), ("TEXT", "text"), ("plain", "text"), ("json", "json"), (" Json ", "json")],
)
def test_log_formats_of_every_program(text: str, expected: str) -> None:
    assert parse_log_format(text) == expected


@pytest.mark.parametrize("text", ["", "xml", "yaml"])
def test_unknown_log_formats_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="must be json or text"):
        parse_log_format(text)


def test_log_levels() -> None:
    assert parse_log_level(" debug ") == "DEBUG"
    with pytest.raises(ValueError, match="must be one of DEBUG, INFO"):
        parse_log_level("loud")


def test_json_format_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("json", "INFO")
        logging.getLogger("computedomain.test").info("hello %s", "there")
        logging.getLogger("computedomain.test").debug("not shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["hello there"]
