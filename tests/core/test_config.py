"""Typed configuration: sections declared by plugins, read from pyproject.toml / agentaccel.toml, environment
variables and ``enable()`` (in that order of precedence, lowest first); every mistake is one ConfigError naming the
key, its section and the closest valid key, with no traceback chained to it."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import agentaccel
from agentaccel import ConfigError

Register = Callable[[Any, str], None]


@dataclasses.dataclass
class Rule:
    name: str
    ttl: int = 60


@dataclasses.dataclass
class WidgetConfig:
    ttl: int = 60
    ratio: float = 0.5
    enabled: bool = True
    speed: Literal["fast", "slow"] = "fast"
    level: Literal[1, 2, 3] = 1
    label: str | None = "default"
    tags: list[str] = dataclasses.field(default_factory=list)
    rules: list[Rule] = dataclasses.field(default_factory=list)


class WidgetPlugin:
    """Declares section ``widget`` (the plugin is registered under the same name, as plugins are)."""

    @agentaccel.hookimpl
    def agentaccel_add_config(self, spec: agentaccel.ConfigSpec) -> None:
        spec.add_section("widget", WidgetConfig)


@pytest.fixture
def widget(register: Register, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The widget plugin registered, and an empty working directory to put configuration files in."""
    monkeypatch.chdir(tmp_path)
    register(WidgetPlugin(), "widget")
    yield tmp_path


def section(**sections: Any) -> WidgetConfig:
    config: WidgetConfig = agentaccel.enable(**sections).config.section("widget")
    return config


def enable_error(**sections: Any) -> str:
    """The message of the ConfigError enable() raises; it carries no chained traceback."""
    with pytest.raises(ConfigError) as caught:
        agentaccel.enable(**sections)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert agentaccel.runtime() is None
    return str(caught.value)


# --- values and their types --------------------------------------------------------------------------------------


def test_defaults_when_nothing_is_configured(widget: Path) -> None:
    assert section() == WidgetConfig()
    assert agentaccel.runtime().config.sources == []  # type: ignore[union-attr]


def test_values_from_enable_are_typed(widget: Path) -> None:
    config = section(widget={"ttl": 5, "ratio": 1, "enabled": False, "speed": "slow", "label": None,
                             "tags": ["a"], "rules": [{"name": "r", "ttl": 9}, {"name": "s"}]})
    assert config == WidgetConfig(ttl=5, ratio=1.0, enabled=False, speed="slow", label=None, tags=["a"],
                                  rules=[Rule("r", 9), Rule("s", 60)])
    assert isinstance(config.ratio, float)


def test_environment_text_is_parsed(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTACCEL_WIDGET__TTL", "42")
    monkeypatch.setenv("AGENTACCEL_WIDGET__RATIO", "0.25")
    monkeypatch.setenv("AGENTACCEL_WIDGET__ENABLED", "off")
    monkeypatch.setenv("AGENTACCEL_WIDGET__SPEED", "slow")
    monkeypatch.setenv("AGENTACCEL_WIDGET__LABEL", "")
    monkeypatch.setenv("AGENTACCEL_WIDGET__TAGS", "a, b")
    monkeypatch.setenv("AGENTACCEL_WIDGET__RULES", '[{"name": "r", "ttl": 3}]')

    assert section() == WidgetConfig(ttl=42, ratio=0.25, enabled=False, speed="slow", label=None, tags=["a", "b"],
                                     rules=[Rule("r", 3)])
    assert "AGENTACCEL_WIDGET__TTL" in agentaccel.runtime().config.sources  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("yes", True), ("TRUE", True), ("on", True),
                                                ("0", False), ("no", False), ("false", False), ("Off", False)])
def test_booleans_from_the_environment(widget: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                       expected: bool) -> None:
    monkeypatch.setenv("AGENTACCEL_WIDGET__ENABLED", text)
    assert section().enabled is expected


@pytest.mark.parametrize(("key", "text", "expected"), [
    ("ttl", "4.5", "expected an integer, got '4.5'"),
    ("ttl", "soon", "expected an integer, got 'soon'"),
    ("ratio", "half", "expected a number, got 'half'"),
    ("enabled", "maybe", "expected true or false, got 'maybe'"),
    ("rules", "[{", "expected JSON for"),
])
def test_unparsable_environment_text(widget: Path, monkeypatch: pytest.MonkeyPatch, key: str, text: str,
                                     expected: str) -> None:
    monkeypatch.setenv(f"AGENTACCEL_WIDGET__{key.upper()}", text)
    message = enable_error()
    assert f"AGENTACCEL_WIDGET__{key.upper()}" in message
    assert f"widget.{key}" in message
    assert expected in message


@pytest.mark.parametrize(("values", "path", "expected"), [
    ({"ttl": "soon"}, "widget.ttl", "expected an integer, got str 'soon'"),
    ({"ttl": True}, "widget.ttl", "expected an integer, got bool True"),
    ({"ratio": False}, "widget.ratio", "expected a number, got bool False"),
    ({"enabled": "yes"}, "widget.enabled", "expected true or false, got str 'yes'"),
    ({"tags": "a,b"}, "widget.tags", "expected a list of str values"),
    ({"tags": ["a", 2]}, "widget.tags[1]", "expected a string, got int 2"),
    ({"rules": [{"name": "ok"}, {"name": "bad", "ttl": "long"}]}, "widget.rules[1].ttl",
     "expected an integer, got str 'long'"),
    ({"rules": [{"name": "ok", "tll": 3}]}, "widget.rules[0]", "unknown key 'tll'"),
])
def test_a_wrong_type_names_the_path_and_the_expected_type(widget: Path, values: dict[str, Any], path: str,
                                                           expected: str) -> None:
    message = enable_error(widget=values)
    assert path in message
    assert expected in message


def test_a_wrong_type_in_a_nested_table_of_a_file(widget: Path) -> None:
    (widget / "agentaccel.toml").write_text(textwrap.dedent("""
        [[widget.rules]]
        name = "first"

        [[widget.rules]]
        name = "second"
        ttl = "an hour"
    """))
    message = enable_error()
    assert "widget.rules[1].ttl" in message
    assert "expected an integer, got str 'an hour'" in message


def test_literal_choices(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = enable_error(widget={"speed": "fsat"})
    assert "widget.speed" in message
    assert "expected one of 'fast', 'slow', got 'fsat'" in message
    assert "did you mean 'fast'?" in message

    monkeypatch.setenv("AGENTACCEL_WIDGET__SPEED", "medium")
    assert "expected one of 'fast', 'slow', got 'medium'" in enable_error()


def test_literal_number_choices(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert section(widget={"level": 2}).level == 2
    assert "expected one of 1, 2, 3, got 4" in enable_error(widget={"level": 4})

    # environment variables are text: "3" is the choice 3
    monkeypatch.setenv("AGENTACCEL_WIDGET__LEVEL", "3")
    assert section().level == 3


def test_a_section_that_is_not_a_table(widget: Path) -> None:
    assert "section 'widget' must be a table of keys, got int" in enable_error(widget=5)


# --- unknown keys and sections, from every source -----------------------------------------------------------------


def _assert_unknown_key(message: str, where: str) -> None:
    assert where in message
    assert "unknown key 'tll'" in message
    assert "section 'widget'" in message
    assert "did you mean 'ttl'?" in message


def test_an_unknown_key_from_enable(widget: Path) -> None:
    _assert_unknown_key(enable_error(widget={"tll": 5}), "enable(widget={...})")


def test_a_key_that_is_not_a_string_from_enable(widget: Path) -> None:
    message = enable_error(widget={1: 5})  # a ConfigError that names it, not difflib's TypeError
    assert "unknown key 1 in section 'widget'" in message
    assert "valid keys:" in message


def test_an_unknown_key_from_the_environment(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTACCEL_WIDGET__TLL", "5")
    _assert_unknown_key(enable_error(), "environment variable AGENTACCEL_WIDGET__TLL")


def test_an_unknown_key_from_agentaccel_toml(widget: Path) -> None:
    (widget / "agentaccel.toml").write_text("[widget]\ntll = 5\n")
    message = enable_error()
    _assert_unknown_key(message, str(widget / "agentaccel.toml"))
    assert "[widget]" in message


def test_an_unknown_key_from_pyproject_toml(widget: Path) -> None:
    (widget / "pyproject.toml").write_text("[project]\nname = 'app'\n\n[tool.agentaccel.widget]\ntll = 5\n")
    message = enable_error()
    _assert_unknown_key(message, str(widget / "pyproject.toml"))
    assert "[tool.agentaccel.widget]" in message


def _assert_unknown_section(message: str, where: str) -> None:
    assert where in message
    assert "unknown section 'widgte'" in message
    assert "did you mean 'widget'?" in message
    assert "tracing" in message  # the known sections are listed
    assert "widget" in message


def test_an_unknown_section_from_enable(widget: Path) -> None:
    _assert_unknown_section(enable_error(widgte={"ttl": 1}), "enable()")


def test_an_unknown_section_from_the_environment(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTACCEL_WIDGTE__TTL", "1")
    _assert_unknown_section(enable_error(), "AGENTACCEL_WIDGTE__TTL")


def test_an_unknown_section_from_a_file(widget: Path) -> None:
    (widget / "agentaccel.toml").write_text("[widgte]\nttl = 1\n")
    _assert_unknown_section(enable_error(), str(widget / "agentaccel.toml"))


def test_an_unknown_section_from_pyproject_toml(widget: Path) -> None:
    (widget / "pyproject.toml").write_text("[tool.agentaccel.widgte]\nttl = 1\n")
    _assert_unknown_section(enable_error(), str(widget / "pyproject.toml"))


# --- files and precedence ----------------------------------------------------------------------------------------


def test_enable_beats_the_environment_beats_the_file(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (widget / "agentaccel.toml").write_text('[widget]\nttl = 1\nratio = 0.1\nspeed = "slow"\n')
    monkeypatch.setenv("AGENTACCEL_WIDGET__RATIO", "0.2")
    monkeypatch.setenv("AGENTACCEL_WIDGET__SPEED", "fast")

    config = section(widget={"speed": "slow"})

    assert (config.ttl, config.ratio, config.speed) == (1, 0.2, "slow")
    assert agentaccel.runtime().config.sources == [  # type: ignore[union-attr]
        str(widget / "agentaccel.toml"), "AGENTACCEL_WIDGET__RATIO", "AGENTACCEL_WIDGET__SPEED"]


def test_pyproject_tool_agentaccel_is_read(widget: Path) -> None:
    (widget / "pyproject.toml").write_text("[project]\nname = 'app'\n\n[tool.agentaccel.widget]\nttl = 7\n")
    assert section().ttl == 7


def test_a_pyproject_without_tool_agentaccel_is_passed_over_for_one_further_up(
    widget: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (widget / "agentaccel.toml").write_text("[widget]\nttl = 8\n")
    package = widget / "package"
    package.mkdir()
    (package / "pyproject.toml").write_text("[project]\nname = 'package'\n")
    monkeypatch.chdir(package)

    assert section().ttl == 8


def test_agentaccel_config_names_the_file(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (widget / "agentaccel.toml").write_text("[widget]\nttl = 1\n")
    elsewhere = widget / "elsewhere.toml"
    elsewhere.write_text("[widget]\nttl = 2\n")
    monkeypatch.setenv("AGENTACCEL_CONFIG", str(elsewhere))

    assert section().ttl == 2


def test_agentaccel_config_naming_a_missing_file(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = widget / "nowhere" / "agentaccel.toml"
    monkeypatch.setenv("AGENTACCEL_CONFIG", str(missing))

    message = enable_error()
    assert "AGENTACCEL_CONFIG" in message
    assert str(missing) in message


def test_a_file_that_is_not_toml(widget: Path) -> None:
    (widget / "agentaccel.toml").write_text("[widget\nttl = \n")
    message = enable_error()
    assert "cannot read" in message
    assert str(widget / "agentaccel.toml") in message


def test_a_file_that_is_not_utf8(widget: Path) -> None:
    # TOML is UTF-8; a file saved as Latin-1 is the user's to fix, so it is a ConfigError like any other mistake.
    (widget / "agentaccel.toml").write_bytes('[widget]\nlabel = "café"\n'.encode("latin-1"))
    message = enable_error()
    assert message.startswith(f"cannot read {widget / 'agentaccel.toml'}: ")


def test_a_pyproject_tool_agentaccel_that_is_not_a_table(widget: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (widget / "pyproject.toml").write_text('[tool]\nagentaccel = "widget"\n')
    monkeypatch.setenv("AGENTACCEL_CONFIG", str(widget / "pyproject.toml"))
    assert enable_error() == f"{widget / 'pyproject.toml'}: [tool.agentaccel] must be a table of sections, got str"


def test_a_bool_is_not_a_number_choice(widget: Path) -> None:
    # `level = true` in a file is not `level = 1`, although True == 1 in Python.
    (widget / "agentaccel.toml").write_text("[widget]\nlevel = true\n")
    assert enable_error().endswith("key widget.level: expected one of 1, 2, 3, got True")


# --- deny-listed plugins -------------------------------------------------------------------------------------------


def test_the_file_and_environment_sections_of_a_deny_listed_plugin_are_ignored(
    widget: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (widget / "agentaccel.toml").write_text("[widget]\nttl = 'not even an integer'\n")
    monkeypatch.setenv("AGENTACCEL_WIDGET__BOGUS", "1")
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "widget")

    rt = agentaccel.enable()

    assert {p.name: p.status for p in rt.plugins}["widget"] == "disabled"
    assert "widget" not in rt.config.as_dict()


def test_the_enable_section_of_a_deny_listed_plugin_is_ignored(widget: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The application configures the plugin in code; operations switch the plugin off with the environment
    # (or `agentaccel run --disable widget`). That must not stop the application from starting.
    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "widget")

    rt = agentaccel.enable(widget={"ttl": 5})

    assert {p.name: p.status for p in rt.plugins}["widget"] == "disabled"
    assert "widget" not in rt.config.as_dict()


def test_the_file_section_of_a_deny_listed_built_in_is_ignored(widget: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (widget / "agentaccel.toml").write_text("[tracing]\nexport = 'carrier-pigeon'\n")
    assert "expected one of" in enable_error()

    monkeypatch.setenv("AGENTACCEL_DISABLE_PLUGINS", "tracing")
    rt = agentaccel.enable()
    assert "tracing" not in rt.config.as_dict()


def test_a_config_error_from_enable_leaves_agentaccel_disabled_and_a_fix_enables_it(widget: Path) -> None:
    agentaccel.enable()
    enable_error(widget={"ttl": "x"})
    assert agentaccel.runtime() is None
    assert section(widget={"ttl": 3}).ttl == 3
