"""How every settings dataclass is checked when it is read: the stages' own settings, the analysis
configuration (pipeline.core.config), detector configs and training recipes all go through
`load_settings` (pydantic, from the dataclasses' annotations). It lives with the stages, the lowest
layer, so that training and the pipeline share it without importing each other."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml


class ConfigError(ValueError):
    """A configuration file or override is wrong; message is for the user."""


def one_of(choices: typing.Iterable[str], what: str) -> typing.Callable[[str], str]:
    """The check of a setting that names one of `choices` (a registry's keys, a tuple of names): the
    name itself, or ValueError listing the known ones."""
    def check(name: str) -> str:
        if name not in choices:
            raise ValueError(f"unknown {what} {name!r}; known: {', '.join(choices)}")
        return name
    return check


def _unknown_keys(cls: type, data: Any, where: str) -> None:
    """Refuse keys a settings dataclass does not have (pydantic ignores them on plain dataclasses)."""
    if not isinstance(data, dict):
        return
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown setting {where + str(key)!r}; known: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            _unknown_keys(hint, value, f"{where}{key}.")  # type: ignore[arg-type]
        elif typing.get_origin(hint) is dict and isinstance(value, dict):
            inner = typing.get_args(hint)[1]
            if dataclasses.is_dataclass(inner):
                for name, item in value.items():
                    _unknown_keys(inner, item, f"{where}{key}.{name}.")  # type: ignore[arg-type]


T = TypeVar("T")


def load_settings(cls: type[T], data: dict[str, Any], what: str = "setting") -> T:
    """Build a (nested) settings dataclass from a mapping, checking every value's type, range and
    choices (pydantic, from the dataclasses' annotations); the first problem is one ConfigError line
    naming its key. The one loader for analysis settings and training recipes."""
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise ConfigError(f"{what}s must be a mapping, got {type(data).__name__}")
    _unknown_keys(cls, data, "")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "union[")))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{what} {key or '(top level)'}: {first['msg']}, got {first.get('input')!r}{more}") from None


class _SettingsLoader(yaml.SafeLoader):
    """YAML with YAML 1.2's booleans: only true/false. PyYAML follows YAML 1.1, where a bare on, off,
    yes or no is a boolean too, so `render.enabled: off` (or `--set render.enabled=off`) would reach
    the settings as false. Boolean settings still take yes/no/on/off: pydantic reads those strings."""


_SettingsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SettingsLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                      list("tTfF"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_SettingsLoader)  # a SafeLoader subclass: no arbitrary objects


def read_yaml(path: Path) -> dict:
    try:
        data = parse_yaml(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    return data


