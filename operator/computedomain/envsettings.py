"""Settings read from environment variables, in one style for every program.

A program declares its settings as a pydantic model deriving from `EnvSettings`, maps each field to
its variable in `env_names`, and reads them with `from_env`. Empty variables count as unset (a chart
that renders `value: ""` means "the default"), and every bad variable is named in one `SettingsError`,
so a broken deployment is fixed in one round instead of one variable per restart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

# Turns a variable's text into the value its field is validated from; raises ValueError when it cannot.
Converter = Callable[[str], Any]


class SettingsError(ValueError):
    """The environment does not describe a usable program; the message lists every problem."""


def parse_bool(text: str) -> bool:
    """`true`/`false` and the usual spellings (1/0, yes/no, on/off), in any case; ValueError otherwise."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true or false")


def parse_csv(text: str) -> tuple[str, ...]:
    """A comma-separated list, with blanks around and between items dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


class EnvSettings(BaseModel):
    """Base of every program's settings: frozen, no unknown fields, built with `from_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Field name -> environment variable.
    env_names: ClassVar[Mapping[str, str]] = {}
    # Field name -> converter of the variable's text (fields without one get the text as is).
    converters: ClassVar[Mapping[str, Converter]] = {}
    # Fields whose variable, when set but empty, means "" rather than "unset".
    keep_empty: ClassVar[frozenset[str]] = frozenset()
    # Field name -> command-line option, to name what was wrong when the value came from an option.
    option_names: ClassVar[Mapping[str, str]] = {}
    # Whose settings these are, for the first line of the error ("invalid controller settings:").
    title: ClassVar[str] = "settings"

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Self:
        """Build the settings from environment variables, then `overrides` (field -> value, from
        command-line options), which win over the environment.

        Raises SettingsError naming each bad variable (or option).
        """
        raw: dict[str, Any] = {}
        problems: list[str] = []
        for field, variable in cls.env_names.items():
            if field in cls.keep_empty and variable in env:
                raw[field] = env[variable]
                continue
            value = env.get(variable, "").strip()
            if not value:
                continue
            convert = cls.converters.get(field)
            try:
                raw[field] = convert(value) if convert else value
            except ValueError as error:
                problems.append(f"  {variable}={value!r}: {error}")
        given = dict(overrides or {})
        raw.update(given)
        problems.extend(f"  {problem}" for problem in cls.missing(raw))
        try:
            settings = cls.model_validate(raw)
        except ValidationError as error:
            problems.extend(cls._explain(error, env, given))
            raise SettingsError(cls._report(problems)) from None
        if problems:
            raise SettingsError(cls._report(problems))
        return settings

    @classmethod
    def missing(cls, raw: Mapping[str, Any]) -> list[str]:
        """Problems of presence that depend on other settings (e.g. "NODE_NAME is required unless
        --no-kube"), found from the values as given so that they are reported with every other problem.
        None by default."""
        return []

    @classmethod
    def _report(cls, problems: list[str]) -> str:
        return "\n".join([f"invalid {cls.title}:", *problems])

    @classmethod
    def _explain(
        cls, error: ValidationError, env: Mapping[str, str], overrides: Mapping[str, Any]
    ) -> list[str]:
        lines = []
        for problem in error.errors():
            field = str(problem["loc"][0]) if problem["loc"] else ""
            variable = cls.env_names.get(field)
            message = str(problem["msg"]).removeprefix("Value error, ")
            if field in overrides:
                option = cls.option_names.get(field, field)
                lines.append(f"  {option}={overrides[field]!r}: {message}")
            elif variable is None:
                lines.append(f"  {message}")
            elif problem["type"] == "missing":
                lines.append(f"  {variable} is required")
            else:
                lines.append(f"  {variable}={env.get(variable, '').strip()!r}: {message}")
        return lines
