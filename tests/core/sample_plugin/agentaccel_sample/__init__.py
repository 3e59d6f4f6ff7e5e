"""A complete third-party plugin, installed by the tests into a fresh virtual environment and found through its
``agentaccel`` entry point. The plugin-authoring guide (docs/plugins.md) walks through it.

It counts the calls it sees per operation, tags each span with a greeting from its config section, lets
``agentaccel.options(sample_tag=...)`` add a per-call tag, and adds ``agentaccel sample-stats`` and a doctor check.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from collections.abc import Callable, Generator
from typing import Any

import agentaccel


@dataclasses.dataclass
class SampleConfig:
    greeting: str = "hello"
    #: Operations to count; the rest pass through untouched (decided once per target, not per call).
    operations: list[str] = dataclasses.field(default_factory=lambda: ["execute_tool", "chat"])


counts: Counter[str] = Counter()


class CountingMiddleware(agentaccel.Middleware):
    name = "sample"
    after = ("tracing",)  # inside the span, so its annotations land on it

    def __init__(self, config: SampleConfig) -> None:
        self.config = config

    def accepts(self, target: agentaccel.Target) -> bool:
        return target.operation in self.config.operations

    def flow(self, call: agentaccel.Call) -> Generator[Any, Any, None]:
        call.annotate("sample.greeting", self.config.greeting)
        tag = call.options.get("sample_tag")
        if tag is not None:
            call.annotate("sample.tag", tag)
        outcome = yield agentaccel.PROCEED
        counts[f"{call.operation}:{'ok' if outcome.error is None else 'error'}"] += 1


@agentaccel.hookimpl
def agentaccel_add_config(spec: agentaccel.ConfigSpec) -> None:
    spec.add_section("sample", SampleConfig)
    spec.add_option("sample_tag", str, "a tag the sample plugin puts on the spans of these calls")


@agentaccel.hookimpl
def agentaccel_register_middleware(register: Callable[[agentaccel.Middleware], None],
                                   config: agentaccel.Config) -> None:
    register(CountingMiddleware(config.section("sample")))


def _stats(args: argparse.Namespace) -> int:
    print(f"sample plugin: greeting={args.greeting!r}")
    return 0


@agentaccel.hookimpl
def agentaccel_register_commands(register: Callable[..., None]) -> None:
    register("sample-stats", "show the sample plugin's settings",
             lambda parser: parser.add_argument("--greeting", default="hello"), _stats)


@agentaccel.hookimpl
def agentaccel_doctor(register: Callable[..., None], config: agentaccel.Config) -> None:
    greeting = config.section("sample").greeting
    register("sample greeting", lambda: (bool(greeting), f"greeting is {greeting!r}"))
