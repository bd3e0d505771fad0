"""Settings read from environment variables, in one style for every program.

A program declares its settings as a `pydantic-settings` model deriving from `EnvSettings`, names each
field's variable with `validation_alias`, and reads them with `from_env`. How values are spelled (flags,
comma lists, log format and level) is `computedomain.envvalues`'s, with which the kubelet plugin reads
its settings without pydantic. Empty variables count as unset (a chart that renders `value: ""` means
"the default") except in fields marked `KeepEmpty`, values lose the blanks around them, and every bad
variable is named in one `SettingsError`, so a broken deployment is fixed in one round instead of one
variable per restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BeforeValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from computedomain.envvalues import (
    SettingsError,
    parse_bool,
    parse_csv,
    parse_json_logs,
    parse_log_format,
    parse_log_level,
)

__all__ = [
    "CommaList",
    "EnvBool",
    "EnvSettings",
    "JsonLogs",
    "KeepEmpty",
    "LogFormat",
    "LogLevel",
    "SettingsError",
    "parse_bool",
    "parse_csv",
]

# The variables `from_env` reads from while it builds one settings object; None: the process's own.
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("computedomain_environment", default=None)


class KeepEmpty:
    """Marks a field (`Annotated[str | None, KeepEmpty()]`) whose variable, set but empty, means ""
    rather than "unset"."""


def _bool_from_text(value: Any) -> Any:
    return parse_bool(value) if isinstance(value, str) else value


def _list_from_text(value: Any) -> Any:
    return parse_csv(value) if isinstance(value, str) else value


def _json_from_format(value: Any) -> Any:
    return parse_json_logs(value) if isinstance(value, str) else value


# A flag: true/1/yes/on or false/0/no/off in any case (pydantic's own bool also takes t, y, f, n).
EnvBool = Annotated[bool, BeforeValidator(_bool_from_text)]
# A comma-separated list (pydantic-settings would otherwise expect JSON for a sequence).
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_list_from_text)]
# `text` or `json` in any case (`plain` reads as `text`), see `computedomain.logs`.
LogFormat = Annotated[str, AfterValidator(parse_log_format)]
# LOG_FORMAT read as "log JSON lines" (true for json, false for text).
JsonLogs = Annotated[bool, BeforeValidator(_json_from_format)]
# A level name of the `logging` module, in any case; kept in upper case.
LogLevel = Annotated[str, AfterValidator(parse_log_level)]


def _keeps_empty(field: FieldInfo) -> bool:
    return any(isinstance(item, KeepEmpty) for item in field.metadata)


class _Environment(EnvSettingsSource):
    """The variables of `environ`, trimmed; empty ones dropped unless their field keeps them."""

    def __init__(self, settings_cls: type[EnvSettings], environ: Mapping[str, str]) -> None:
        # Only the variables the fields name: a field without one is never read from the environment.
        self._environ = {
            variable: environ[variable] for variable in settings_cls.env_names.values() if variable in environ
        }
        self._kept = {
            variable
            for name, field in settings_cls.model_fields.items()
            if _keeps_empty(field) and (variable := settings_cls.env_names.get(name))
        }
        super().__init__(settings_cls, case_sensitive=True, env_ignore_empty=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        values: dict[str, str | None] = {}
        for variable, text in self._environ.items():
            if variable in self._kept:
                values[variable] = text
            elif text.strip():
                values[variable] = text.strip()
        return values


class EnvSettings(BaseSettings):
    """Base of every program's settings: frozen, no unknown fields, built with `from_env`.

    Each field names its variable with `validation_alias`; fields can also be given by name (the
    command-line options' overrides, tests).
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=True,
    )

    # Field name -> environment variable, gathered from the fields' `validation_alias`.
    env_names: ClassVar[Mapping[str, str]] = {}
    # Field name -> command-line option, to name what was wrong when the value came from an option;
    # a field not listed is named as `--field-name`.
    option_names: ClassVar[Mapping[str, str]] = {}
    # Whose settings these are, for the first line of the error ("invalid controller settings:").
    title: ClassVar[str] = "settings"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.env_names = {
            name: field.validation_alias
            for name, field in cls.model_fields.items()
            if isinstance(field.validation_alias, str)
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given by name first, then the environment; no dotenv or secret files."""
        environ = _ENVIRONMENT.get()
        return init_settings, _Environment(cls, os.environ if environ is None else environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Self:
        """Build the settings from environment variables, then `overrides` (field -> value, from
        command-line options), which win over the environment.

        Raises SettingsError naming each bad variable (or option).
        """
        given = dict(overrides or {})
        with _reading(env):
            raw = {cls._field_of(key): value for key, value in _Environment(cls, env)().items()}
            problems = [f"  {problem}" for problem in cls.missing({**raw, **given})]
            try:
                settings = cls(**given)
            except ValidationError as error:
                problems.extend(cls._explain(error, raw, given))
                raise SettingsError(cls._report(problems)) from None
        if problems:
            raise SettingsError(cls._report(problems))
        return settings

    @classmethod
    def missing(cls, raw: Mapping[str, Any]) -> list[str]:
        """Problems of presence that depend on other settings (e.g. "NODE_NAME is required unless
        --no-kube"), found from the values as given (field -> value) so that they are reported with
        every other problem. None by default."""
        return []

    @classmethod
    def _field_of(cls, key: str | int) -> str:
        name = str(key)
        return next((field for field, variable in cls.env_names.items() if variable == name), name)

    @classmethod
    def _report(cls, problems: list[str]) -> str:
        return "\n".join([f"invalid {cls.title}:", *problems])

    @classmethod
    def _explain(
        cls, error: ValidationError, raw: Mapping[str, Any], overrides: Mapping[str, Any]
    ) -> list[str]:
        lines = []
        for problem in error.errors():
            field = cls._field_of(problem["loc"][0]) if problem["loc"] else ""
            variable = cls.env_names.get(field)
            message = str(problem["msg"]).removeprefix("Value error, ")
            if field in overrides:
                option = cls.option_names.get(field, "--" + field.replace("_", "-"))
                lines.append(f"  {option}={overrides[field]!r}: {message}")
            elif variable is None:
                lines.append(f"  {message}")
            elif problem["type"] == "missing":
                lines.append(f"  {variable} is required")
            else:
                lines.append(f"  {variable}={raw.get(field, '')!r}: {message}")
        return lines


@contextmanager
def _reading(env: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)
