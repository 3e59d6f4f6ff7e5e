"""The documentation keeps up with the code: every hook, config key, CLI command and public name is documented,
included source files are verbatim copies, relative links resolve and Python examples are valid Python."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import agentaccel
import agentaccel.cli
from agentaccel import hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
SAMPLE_PLUGIN = "tests/core/sample_plugin/agentaccel_sample/__init__.py"

# A fenced block: its indentation, info string and body (up to the closing fence at the same indentation).
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)\n"
                   r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?P<code>.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]\n]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.M)
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->\n(?P<fence>`{3,})[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                     re.M | re.S)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def without_code(text: str) -> str:
    """The prose of a page: fenced blocks and inline code removed (a heading or link inside them is not one)."""
    return INLINE_CODE.sub("", without_code_blocks(text))


def code_of(text: str) -> str:
    """Everything a page shows as code: fenced blocks and inline code spans."""
    blocks = [m["body"] for m in FENCE.finditer(text)]
    spans = [m["code"] for m in INLINE_CODE.finditer(without_code_blocks(text))]
    return "\n".join(blocks + spans)


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for match in HEADING.finditer(without_code_blocks(text)):
        base = slug(match["title"])
        found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return found



def test_the_pages_exist() -> None:
    names = {page.name for page in PAGES}
    assert names >= {"quickstart.md", "configuration.md", "telemetry.md", "plugins.md", "testing.md",
                     "architecture.md", "benchmarks.md"}


def test_every_hook_has_a_heading_in_the_plugin_guide() -> None:
    hooks = sorted(name for name, obj in vars(hookspecs).items()
                   if name.startswith("agentaccel_") and hasattr(obj, "agentaccel_spec"))
    assert hooks, "no hooks found in agentaccel.hookspecs"
    headings = re.findall(r"^### (agentaccel_\w+)[ \t]*$", without_code_blocks(read(DOCS / "plugins.md")), re.M)
    assert [h for h, n in Counter(headings).items() if n > 1] == [], "a hook is documented twice"
    assert sorted(set(hooks) - set(headings)) == [], "hooks without a `### <hook>` heading in docs/plugins.md"
    assert sorted(set(headings) - set(hooks)) == [], "docs/plugins.md documents hooks that do not exist"


def test_every_config_key_of_the_built_in_plugins_is_in_the_configuration_reference(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from agentaccel._runtime import load_configuration

    for var in [v for v in os.environ if v.startswith("AGENTACCEL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AGENTACCEL_PLUGINS", "")  # entry-point plugins off: the built-ins are what is left
    monkeypatch.chdir(tmp_path)  # no configuration file
    _, _, spec, _ = load_configuration({})
    assert spec.sections, "the built-in plugins declare no config section"
    reference = read(DOCS / "configuration.md")
    missing = []
    for section, schema in spec.sections.items():
        if f"[{section}]" not in reference:
            missing.append(f"[{section}]")
        for field in dataclasses.fields(schema):
            for spelling in (f"`{section}.{field.name}`", f"AGENTACCEL_{section.upper()}__{field.name.upper()}"):
                if spelling not in reference:
                    missing.append(spelling)
    assert missing == [], "not in docs/configuration.md"


def test_every_cli_subcommand_is_in_the_quickstart() -> None:
    quickstart = read(DOCS / "quickstart.md")
    missing = [name for name, *_ in agentaccel.cli.BUILTIN if f"agentaccel {name}" not in quickstart]
    assert missing == [], "subcommands not shown as `agentaccel <name>` in docs/quickstart.md"


def test_every_public_name_is_documented() -> None:
    code = "\n".join(code_of(read(page)) for page in PAGES)
    missing = [name for name in agentaccel.__all__ if not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", code)]
    assert missing == [], "names in agentaccel.__all__ that no page shows as code"


def test_included_files_are_verbatim_copies() -> None:
    included: dict[str, list[str]] = {}
    for page in PAGES:
        for match in INCLUDE.finditer(read(page)):
            included.setdefault(match["path"], []).append(page.name)
            source = ROOT / match["path"]
            assert source.is_file(), f"{page.name} includes {match['path']}, which does not exist"
            assert match["body"] == read(source), (
                f"the copy of {match['path']} in docs/{page.name} differs from the file; paste the file again")
    assert SAMPLE_PLUGIN in included, f"docs/plugins.md must include {SAMPLE_PLUGIN} (<!-- include: ... -->)"
    assert included[SAMPLE_PLUGIN] == ["plugins.md"]


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for match in LINK.finditer(without_code(read(page))):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(read(file)):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert broken == [], f"broken links in {page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_examples_are_valid_python(page: Path) -> None:
    text = read(page)
    for match in FENCE.finditer(text):
        if match["info"].strip() != "python":
            continue
        line = text[: match.start()].count("\n") + 1
        try:
            ast.parse(textwrap.dedent(match["body"]))
        except SyntaxError as exc:
            pytest.fail(f"docs/{page.name}:{line}: the Python example does not parse: {exc}")


@pytest.mark.parametrize(("variable", "value"), [("OTEL_TRACES_EXPORTER", "zipkin"),
                                                 ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])
def test_the_exporter_errors_the_configuration_reference_quotes_are_the_codes(
        variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentaccel._otel import exporter_names  # what enable() checks when it would set the SDK up

    monkeypatch.setenv(variable, value)
    with pytest.raises(agentaccel.ConfigError) as caught:
        exporter_names("auto")
    assert f"`{caught.value}`" in read(DOCS / "configuration.md")

