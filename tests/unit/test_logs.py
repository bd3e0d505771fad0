"""The agent's log formats."""

from __future__ import annotations

import json
import logging
import sys

from computedomain.logs import JsonFormatter


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
