"""Names the standard plugins provide under `agentaccel.` fail clearly when the plugin is not installed (the core's
test environment has no plugins)."""

from __future__ import annotations

import pytest

import agentaccel


@pytest.mark.parametrize("name", ["map", "amap", "LimitExceeded"])
def test_a_plugin_name_without_its_plugin_says_what_to_install(name: str) -> None:
    with pytest.raises(ImportError, match=rf"agentaccel\.{name} needs the agentaccel-limit plugin: "
                                          r"pip install agentaccel-limit"):
        getattr(agentaccel, name)


def test_other_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        agentaccel.nothing_here  # noqa: B018
