"""Values of environment variables as every program spells them, read without pydantic."""

from __future__ import annotations

import math

import pytest

from computedomain import envsettings, envvalues
from computedomain.envvalues import EnvReader, SettingsError, integer, number


def test_the_pydantic_settings_share_the_rules_and_the_error() -> None:
    assert envsettings.SettingsError is envvalues.SettingsError
    assert envsettings.parse_bool is envvalues.parse_bool
    assert envsettings.parse_csv is envvalues.parse_csv


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("65535", 65535), ("+5", 5), (" 7", 7), ("08", 8), ("1_000", 1000), ("5.0", 5)],
)
def test_integers(text: str, value: int) -> None:
    assert integer(0, 65535)(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5.5", "Input should be a valid integer, unable to parse string as an integer"),
        ("0x10", "Input should be a valid integer"),
        ("nan", "Input should be a valid integer"),
        ("-1", "Input should be greater than or equal to 0"),
        ("65536", "Input should be less than or equal to 65535"),
    ],
)
def test_bad_integers(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        integer(0, 65535)(text)


def test_numbers() -> None:
    assert number(above=0, below=45)("44.9") == 44.9
    assert number(above=0)(".5") == 0.5
    assert number(above=0)("inf") == math.inf
    for text, message in [
        ("0", "greater than 0"),
        ("-0", "greater than 0"),
        ("45", "less than 45"),
        ("inf", "less than 45"),
        ("nan", "greater than 0"),
        ("soon", "Input should be a valid number, unable to parse string as a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            number(above=0, below=45)(text)


def test_the_reader_names_every_problem_at_once() -> None:
    reader = EnvReader("example settings", {"PORT": "many", "WAIT": " 3 ", "EMPTY": ""}, {"level": "x"})
    assert reader.require("node", "NODE_NAME", str) is None
    assert reader.read("port", "PORT", integer(0, 10), 8) == 8
    assert reader.read("wait", "WAIT", number(above=0), 1.0) == 3.0
    assert reader.read("empty", "EMPTY", integer(), 4) == 4
    assert reader.read("level", "LEVEL", envvalues.parse_log_level, "INFO") == "INFO"
    reader.problem("NODE_NAME is required unless --offline")
    with pytest.raises(SettingsError) as caught:
        reader.finish()
    assert str(caught.value).splitlines() == [
        "invalid example settings:",
        "  NODE_NAME is required",
        "  PORT='many': Input should be a valid integer, unable to parse string as an integer",
        "  --level='x': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "  NODE_NAME is required unless --offline",
    ]


def test_an_override_of_no_setting_is_a_problem() -> None:
    reader = EnvReader("example settings", {}, {"colour": "blue", "size": 3}, {"size": "-s"})
    assert reader.read("size", "SIZE", integer(), 1) == 3
    with pytest.raises(SettingsError, match="--colour: no such setting"):
        reader.finish()
