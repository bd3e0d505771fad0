"""How every program spells the values of its environment variables, and the one error that names
every bad variable.

Nothing here imports pydantic: the kubelet plugin, which runs on every GPU node, reads its settings with
`EnvReader` alone, while `computedomain.envsettings` builds the other programs' pydantic-settings fields
on the same parsing functions, so a spelling (`yes` for true, a comma list, `plain` for text logs) means
the same to every program. The number checks word their problems as pydantic does, so a setting reads
the same whichever way its program reads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from computedomain.logs import JSON, parse_log_format, parse_log_level

__all__ = [
    "EnvReader",
    "SettingsError",
    "integer",
    "number",
    "parse_bool",
    "parse_csv",
    "parse_json_logs",
    "parse_log_format",
    "parse_log_level",
]

T = TypeVar("T")

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


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


def parse_json_logs(text: str) -> bool:
    """LOG_FORMAT read as "log JSON lines": true for json, false for text (see `parse_log_format`)."""
    return parse_log_format(text) == JSON


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers within [minimum, maximum] (`5.0` reads as 5, `1_000` as 1000)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = _whole(text)
        if minimum is not None and value < minimum:
            raise ValueError(f"Input should be greater than or equal to {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"Input should be less than or equal to {maximum}")
        return value

    return parse


def _whole(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise ValueError("Input should be a valid integer, unable to parse string as an integer")
    return int(value)


def number(above: float | None = None, below: float | None = None) -> Callable[[str], float]:
    """A parser of numbers strictly between `above` and `below` (either may be None: no bound)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError("Input should be a valid number, unable to parse string as a number") from None
        # NaN compares false with everything: it fails whichever bound there is.
        if above is not None and not value > above:
            raise ValueError(f"Input should be greater than {above:g}")
        if below is not None and not value < below:
            raise ValueError(f"Input should be less than {below:g}")
        return value

    return parse


class EnvReader:
    """Reads typed settings from environment variables and overrides, gathering every problem.

    Variables are trimmed and an empty one counts as unset (a chart that renders `value: ""` means
    "the default"). An override (field -> value, from a command-line option) wins over the variable;
    given as text it is parsed like the variable. `finish` raises one SettingsError listing them all,
    so a broken deployment is fixed in one round instead of one variable per restart.
    """

    def __init__(
        self,
        title: str,
        env: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
        option_names: Mapping[str, str] | None = None,
    ) -> None:
        self.title = title
        self.env = env
        self.overrides = dict(overrides or {})
        self.option_names = dict(option_names or {})
        self.problems: list[str] = []
        self._read: set[str] = set()

    def given(self, field: str, variable: str) -> Any:
        """The raw value of a setting: its override, else its variable trimmed; None when unset."""
        if field in self.overrides:
            return self.overrides[field]
        text = self.env.get(variable, "").strip()
        return text or None

    def read(self, field: str, variable: str, parse: Callable[[str], T], default: T) -> T:
        """The setting `field`, from its override or `variable`; `default` when unset or bad."""
        found = self._parse(field, variable, parse)
        return default if found is None else found

    def require(self, field: str, variable: str, parse: Callable[[str], T]) -> T | None:
        """A setting without a default; a problem ("... is required") when unset."""
        if self.given(field, variable) is None:
            self._read.add(field)
            self.problems.append(f"  {variable} is required")
            return None
        return self._parse(field, variable, parse)

    def problem(self, message: str) -> None:
        """Record a problem that no single setting's parser sees (one setting requires another)."""
        self.problems.append(f"  {message}")

    def finish(self) -> None:
        """Raise SettingsError naming every problem (and every override of no known setting)."""
        for field in self.overrides:
            if field not in self._read:
                self.problems.append(f"  {self._option(field)}: no such setting")
        if self.problems:
            raise SettingsError("\n".join([f"invalid {self.title}:", *self.problems]))

    def _parse(self, field: str, variable: str, parse: Callable[[str], T]) -> T | None:
        self._read.add(field)
        value = self.given(field, variable)
        if value is None:
            return None
        overridden = field in self.overrides
        if overridden and not isinstance(value, str):
            # A typed override (a test's, an option's with its own type) is checked in its text form.
            value = str(value)
        try:
            return parse(value)
        except ValueError as error:
            name = self._option(field) if overridden else variable
            self.problems.append(f"  {name}={value!r}: {error}")
            return None

    def _option(self, field: str) -> str:
        return self.option_names.get(field, "--" + field.replace("_", "-"))
