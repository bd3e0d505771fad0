"""The settings style every program shares: typed, from the environment, every bad variable in one error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import Field

from computedomain.envsettings import (
    CommaList,
    EnvBool,
    EnvSettings,
    KeepEmpty,
    SettingsError,
    parse_bool,
    parse_csv,
)


class Example(EnvSettings):
    option_names: ClassVar[Mapping[str, str]] = {"count": "--count"}
    title: ClassVar[str] = "example settings"

    name: str = Field(min_length=1, validation_alias="EXAMPLE_NAME")
    count: int = Field(default=3, ge=1, validation_alias="EXAMPLE_COUNT")
    enabled: EnvBool = Field(default=False, validation_alias="EXAMPLE_ENABLED")
    tags: CommaList = Field(default=(), validation_alias="EXAMPLE_TAGS")
    marker: Annotated[str | None, KeepEmpty()] = Field(default=None, validation_alias="EXAMPLE_MARKER")
    # No variable: set by name only.
    quiet: bool = False

    @classmethod
    def missing(cls, raw: Mapping[str, Any]) -> list[str]:
        # The values as given: the variables' text, the overrides' values.
        if raw.get("enabled") in ("true", True) and not raw.get("tags"):
            return ["EXAMPLE_TAGS is required when enabled"]
        return []


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
    env = {"EXAMPLE_COUNT": " 0 ", "EXAMPLE_ENABLED": "maybe", "EXAMPLE_TAGS": ""}
    with pytest.raises(SettingsError) as raised:
        Example.from_env(env)
    assert str(raised.value).splitlines() == [
        "invalid example settings:",
        "  EXAMPLE_NAME is required",
        "  EXAMPLE_COUNT='0': Input should be greater than or equal to 1",
        "  EXAMPLE_ENABLED='maybe': must be true or false",
    ]


def test_lists_are_comma_separated_not_json() -> None:
    assert Example.from_env({"EXAMPLE_NAME": "x", "EXAMPLE_TAGS": '["a", "b"]'}).tags == ('["a"', '"b"]')


def test_only_the_named_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # A field without a variable is never read from the environment, whatever its spelling.
    assert not Example.from_env({"EXAMPLE_NAME": "x", "quiet": "true", "QUIET": "true"}).quiet
    # Built without `from_env`, the settings read the process's environment.
    monkeypatch.setenv("EXAMPLE_NAME", "from-process")
    monkeypatch.setenv("EXAMPLE_COUNT", "5")
    # (`name` comes from the environment, which the type checker cannot see.)
    assert (Example().name, Example(count=9).count) == ("from-process", 9)  # type: ignore[call-arg]


def test_variable_names_are_gathered_from_the_fields() -> None:
    assert Example.env_names == {
        "name": "EXAMPLE_NAME",
        "count": "EXAMPLE_COUNT",
        "enabled": "EXAMPLE_ENABLED",
        "tags": "EXAMPLE_TAGS",
        "marker": "EXAMPLE_MARKER",
    }


def test_overrides_are_named_as_options_by_default() -> None:
    with pytest.raises(SettingsError, match=r"--name='': String should have at least 1 character"):
        Example.from_env({"EXAMPLE_NAME": "x"}, {"name": ""})


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


@pytest.mark.parametrize(("text", "items"), [("", ()), ("a", ("a",)), (" a , ,b,", ("a", "b"))])
def test_parse_csv(text: str, items: tuple[str, ...]) -> None:
    assert parse_csv(text) == items
