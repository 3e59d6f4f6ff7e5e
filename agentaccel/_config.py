"""Typed configuration: one section per plugin, from pyproject.toml / agentaccel.toml, environment variables and
``enable()`` keyword arguments (``enable() > env > file``).

A section is a dataclass. Values are checked against its field types; mistakes are reported as one
:class:`~agentaccel.ConfigError` naming the path (``cache.rules[2].ttl``), what was expected and the closest valid
key, never as a traceback from deep inside.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from agentaccel._errors import ConfigError

ENV_PREFIX = "AGENTACCEL_"
FILE_NAMES = ("agentaccel.toml", "pyproject.toml")


@dataclasses.dataclass(frozen=True)
class Option:
    """A per-call option a plugin reads from ``agentaccel.options(...)``."""

    name: str
    type: Any
    help: str
    #: Raises ValueError saying what is wrong with a value of the right type (a negative number of seconds).
    check: Callable[[Any], None] | None = None


class ConfigSpec:
    """What plugins declare in ``agentaccel_add_config``: their sections and per-call options."""

    def __init__(self) -> None:
        self.sections: dict[str, type[Any]] = {}
        self.options: dict[str, Option] = {}

    def add_section(self, name: str, schema: type[Any]) -> None:
        """Declare section ``name`` whose keys and defaults are the fields of dataclass ``schema``."""
        if not dataclasses.is_dataclass(schema):
            raise TypeError(f"config section {name!r}: schema must be a dataclass, got {schema!r}")
        if name in self.sections and self.sections[name] is not schema:
            raise ConfigError(f"config section {name!r} is declared by two plugins")
        self.sections[name] = schema

    def add_option(self, name: str, type: Any, help: str, check: Callable[[Any], None] | None = None) -> None:
        """Declare a per-call option accepted by ``agentaccel.options(name=...)``; ``check(value)``, when given,
        raises ValueError for a value of the right type that cannot work."""
        if name in self.options:
            raise ConfigError(f"per-call option {name!r} is declared by two plugins; prefix it with the plugin's name")
        self.options[name] = Option(name, type, help, check)

    def check_options(self, options: Mapping[str, Any]) -> None:
        for key, value in options.items():
            option = self.options.get(key)
            if option is None:
                raise ConfigError(f"agentaccel.options() got unknown option {key!r}{_closest(key, self.options)}; "
                                  f"known options: {', '.join(sorted(self.options)) or 'none'}")
            value = _convert(value, option.type, f"options({key}=...)", from_text=False)
            if option.check is not None:
                try:
                    option.check(value)
                except ValueError as exc:
                    raise ConfigError(f"options({key}=...): {exc}") from None


class Config:
    """The resolved configuration: ``config.section("cache")`` is that plugin's dataclass instance."""

    def __init__(self, sections: dict[str, Any], sources: list[str], extra: Mapping[str, Any]) -> None:
        self._sections = sections
        self.sources = sources
        #: Objects handed to enable() that are not sections (tracer_provider, meter_provider).
        self.extra = extra

    def section(self, name: str) -> Any:
        try:
            return self._sections[name]
        except KeyError:
            raise ConfigError(f"no config section {name!r}{_closest(name, self._sections)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._sections

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(value) for name, value in sorted(self._sections.items())}


def find_config_file(start: Path | None = None) -> Path | None:
    """``$AGENTACCEL_CONFIG``, else the nearest agentaccel.toml, or pyproject.toml with [tool.agentaccel],
    from the working directory upwards."""
    named = os.environ.get(ENV_PREFIX + "CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"AGENTACCEL_CONFIG names {named!r}, which is not a file")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for file_name in FILE_NAMES:
            path = folder / file_name
            if path.is_file() and (file_name != "pyproject.toml" or _file_sections(path)):
                return path
    return None


def _file_sections(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("agentaccel", {}) if isinstance(tool, dict) else {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [tool.agentaccel] must be a table of sections, got {type(data).__name__}")
    return data


def load(
    spec: ConfigSpec,
    overrides: Mapping[str, Any],
    *,
    ignored_sections: frozenset[str] = frozenset(),
    environ: Mapping[str, str] | None = None,
    file: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Merge file < environment < ``overrides`` into typed sections."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, dict[str, Any]], bool]] = []
    sources = []
    path = file if file is not None else find_config_file()
    if path is not None:
        prefix = "[tool.agentaccel." if path.name == "pyproject.toml" else "["
        raw = _file_sections(path)
        layers.append((f"{path} {prefix}", _split_sections(raw, str(path), spec, ignored_sections), True))
        sources.append(str(path))
    env_layer: dict[str, dict[str, Any]] = {}
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX):].partition("__")
        section, key = section.lower(), key.lower()
        if section in ignored_sections:
            continue
        if section not in spec.sections:
            raise ConfigError(f"environment variable {var}: unknown section {section!r}"
                              f"{_closest(section, spec.sections)}{_known(spec)}")
        env_layer.setdefault(section, {})[key] = text
        sources.append(var)
    layers.append(("environment variable AGENTACCEL_", env_layer, False))
    layers.append(("enable(", _split_sections(dict(overrides), "enable()", spec, ignored_sections), False))

    sections: dict[str, Any] = {}
    for name, schema in spec.sections.items():
        merged: dict[str, Any] = {}
        for origin, layer, _ in layers:
            for key, value in layer.get(name, {}).items():
                merged[key] = (origin, value)
        sections[name] = _build(schema, merged, name)
    return Config(sections, sources, extra or {})


def _split_sections(raw: Mapping[str, Any], origin: str, spec: ConfigSpec,
                    ignored: frozenset[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section in ignored:
            continue
        if section not in spec.sections:
            raise ConfigError(f"{origin}: unknown section {section!r}{_closest(section, spec.sections)}"
                              f"{_known(spec)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {section!r} must be a table of keys, "
                              f"got {type(values).__name__}")
        out[section] = dict(values)
    return out


def _known(spec: ConfigSpec) -> str:
    known = ", ".join(sorted(spec.sections)) or "none"
    return f"; known sections: {known} (a section belongs to a plugin: `agentaccel plugins` lists what is installed)"


def _build(schema: type[Any], values: Mapping[str, tuple[str, Any]], path: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for key, (origin, value) in values.items():
        if key not in fields:
            raise ConfigError(f"{_where(origin, path, key)}: unknown key {key!r} in section {path!r}"
                              f"{_closest(key, fields)}; valid keys: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], f"{path}.{key}", from_text=origin.startswith("environment"),
                               origin=_where(origin, path, key))
    try:
        return schema(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"section {path!r}: {exc}") from None


def _where(origin: str, path: str, key: str) -> str:
    """Where a key came from, in the words the user wrote it: the env var, the enable() argument, the file."""
    section = path.split(".")[0].split("[")[0]
    if not origin:  # a key of a nested table: its path says it all
        return f"{path}.{key}"
    if origin.startswith("environment"):
        return f"environment variable {ENV_PREFIX}{section.upper()}__{key.upper()} ({path}.{key})"
    if origin == "enable(":
        return f"enable({section}={{...}}) key {path}.{key}"
    return f"{origin}{section}] key {path}.{key}"


def _closest(word: object, candidates: Mapping[str, Any] | dict[str, Any]) -> str:
    # str(): a key given in Python (enable(cache={1: ...})) need not be a string, and difflib takes only strings
    match = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


_BOOL_TEXT = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
              "off": False}


def _convert(value: Any, hint: Any, path: str, *, from_text: bool, origin: str = "") -> Any:
    """Check ``value`` against type ``hint``; environment variables arrive as text and are parsed first."""
    where = origin or path
    origin_type = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin_type in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if from_text and value == "" and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arm, path, from_text=from_text, origin=origin)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {_name(hint)}, got {value!r}")
    if origin_type is Literal:
        if from_text:  # an environment variable's text stands for the choice it spells
            value = next((a for a in args if str(a).lower() == str(value).strip().lower()), value)
        if any(value == a and type(value) is type(a) for a in args):  # True == 1, but `true` is not the choice 1
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(repr(a) for a in args)}, got {value!r}"
                          f"{_closest(str(value), {str(a): a for a in args})}")
    if hint is Any:
        return value
    if from_text and (origin_type in (list, dict, tuple) or dataclasses.is_dataclass(hint)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if origin_type in (list, tuple) and args and args[0] is str:
                value = [part.strip() for part in value.split(",") if part.strip()]
            else:
                raise ConfigError(f"{where}: expected JSON for {_name(hint)}, got {value!r}") from None
        from_text = False
    if origin_type in (list, tuple):
        if not isinstance(value, (list, tuple)):
            item = args[0].__name__ if isinstance(args[0], type) else str(args[0]).replace("typing.", "")
            raise ConfigError(f"{where}: expected a list of {item} values, got {type(value).__name__} {value!r}")
        items = [_convert(v, args[0], f"{path}[{i}]", from_text=False) for i, v in enumerate(value)]
        return items if origin_type is list else tuple(items)
    if origin_type is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return {str(k): _convert(v, args[1], f"{path}.{k}", from_text=False) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return _build(hint, {k: ("", v) for k, v in value.items()}, path)  # type: ignore[arg-type]
    if from_text:
        value = _parse_text(value, hint, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{where}: expected {_name(hint)}, got {type(value).__name__} {value!r}")


def _parse_text(text: str, hint: Any, where: str) -> Any:
    try:
        if hint is bool:
            return _BOOL_TEXT[text.strip().lower()]
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except (KeyError, ValueError):
        raise ConfigError(f"{where}: expected {_name(hint)}, got {text!r}") from None
    return text


def _name(hint: Any) -> str:
    if isinstance(hint, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            hint.__name__, hint.__name__)
    return str(hint).replace("typing.", "")
