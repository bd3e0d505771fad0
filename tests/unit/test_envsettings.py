"""The settings style every program shares: typed, from the environment, every bad variable in one error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from pydantic import Field

from computedomain.envsettings import Converter, EnvSettings, SettingsError, parse_bool, parse_csv


class Example(EnvSettings):
    env_names: ClassVar[Mapping[str, str]] = {
        "name": "EXAMPLE_NAME",
        "count": "EXAMPLE_COUNT",
        "enabled": "EXAMPLE_ENABLED",
        "tags": "EXAMPLE_TAGS",
        "marker": "EXAMPLE_MARKER",
    }
    converters: ClassVar[Mapping[str, Converter]] = {"enabled": parse_bool, "tags": parse_csv}
    keep_empty: ClassVar[frozenset[str]] = frozenset({"marker"})
    option_names: ClassVar[Mapping[str, str]] = {"count": "--count"}
    title: ClassVar[str] = "example settings"

    name: str = Field(min_length=1)
    count: int = Field(default=3, ge=1)
    enabled: bool = False
    tags: tuple[str, ...] = ()
    marker: str | None = None

    @classmethod
    def missing(cls, raw: Mapping[str, Any]) -> list[str]:
        return ["EXAMPLE_TAGS is required when enabled"] if raw.get("enabled") and not raw.get("tags") else []


def test_values_are_converted_and_typed() -> None:
    env = {"EXAMPLE_NAME": " x ", "EXAMPLE_COUNT": "7", "EXAMPLE_ENABLED": "Yes", "EXAMPLE_TAGS": "a, b,"}
    settings = Example.from_env(env)
    assert (settings.name, settings.count, settings.enabled, settings.tags) == ("x", 7, True, ("a", "b"))


def test_empty_counts_as_unset_except_where_empty_means_something() -> None:
    settings = Example.from_env({"EXAMPLE_NAME": "x", "EXAMPLE_COUNT": " ", "EXAMPLE_MARKER": ""})
    assert (settings.count, settings.marker) == (3, "")
    assert Example.from_env({"EXAMPLE_NAME": "x"}).marker is None


def test_overrides_win_and_are_named_by_their_option() -> None:
    assert Example.from_env({"EXAMPLE_NAME": "x", "EXAMPLE_COUNT": "7"}, {"count": 2}).count == 2
    with pytest.raises(SettingsError, match=r"--count=0: Input should be greater than or equal to 1"):
        Example.from_env({"EXAMPLE_NAME": "x"}, {"count": 0})


def test_every_bad_variable_is_named_in_one_error() -> None:
    env = {"EXAMPLE_COUNT": "0", "EXAMPLE_ENABLED": "maybe", "EXAMPLE_TAGS": ""}
    with pytest.raises(SettingsError) as raised:
        Example.from_env(env)
    assert str(raised.value).splitlines() == [
        "invalid example settings:",
        "  EXAMPLE_ENABLED='maybe': must be true or false",
        "  EXAMPLE_NAME is required",
        "  EXAMPLE_COUNT='0': Input should be greater than or equal to 1",
    ]


def test_presence_rules_are_reported_with_the_rest() -> None:
    with pytest.raises(SettingsError) as raised:
        Example.from_env({"EXAMPLE_ENABLED": "true"})
    assert "EXAMPLE_TAGS is required when enabled" in str(raised.value)
    assert "EXAMPLE_NAME is required" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("off", False), ("No", False)],
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled"])
def test_parse_bool_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        parse_bool(text)
