"""The ``agentaccel`` command: run, plugins, doctor, demo, mock-llm, and commands plugins register."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from agentaccel._errors import AgentAccelError

BOOTSTRAP = str(Path(__file__).parent / "_bootstrap")


def _run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("agentaccel run: give the program to run, e.g. agentaccel run -- python app.py", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.plugins is not None:
        env["AGENTACCEL_PLUGINS"] = args.plugins
    if args.disable is not None:
        env["AGENTACCEL_DISABLE_PLUGINS"] = args.disable
    if args.config is not None:
        env["AGENTACCEL_CONFIG"] = str(Path(args.config).resolve())
    os.environ.update(env)
    import agentaccel

    try:
        agentaccel.enable()  # what the program's start-up will do: a mistake is reported before it starts
    except AgentAccelError as exc:  # a ConfigError, or a PluginError such as a middleware order cycle
        print(f"agentaccel run: {exc}", file=sys.stderr)
        return 2
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [BOOTSTRAP, env.get("PYTHONPATH")]))
    executable = shutil.which(command[0], path=env.get("PATH"))
    if executable is None:
        print(f"agentaccel run: {command[0]!r} not found on PATH", file=sys.stderr)
        return 127
    os.execve(executable, command, env)


def _plugins(args: argparse.Namespace) -> int:
    from agentaccel._report import plugins_report

    report = plugins_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from agentaccel._report import format_report

        print(format_report(report))
    # The report is still worth reading, but a script checking the setup must see that nothing was enabled.
    return 2 if report["config_error"] else 0


def _doctor(args: argparse.Namespace) -> int:
    from agentaccel._doctor import run_checks

    return run_checks(print)


def _demo(args: argparse.Namespace) -> int:
    from agentaccel._demo import run_demo

    return run_demo(questions=args.questions, latency=args.latency)


def _mock_llm_arguments(parser: argparse.ArgumentParser) -> None:
    from agentaccel.mockllm.cli import add_arguments

    add_arguments(parser)


def _mock_llm(args: argparse.Namespace) -> int:
    from agentaccel.mockllm.cli import run

    return run(args)


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", help="comma-separated allow-list of entry-point plugins (AGENTACCEL_PLUGINS)")
    parser.add_argument("--disable", help="comma-separated plugins to disable (AGENTACCEL_DISABLE_PLUGINS)")
    parser.add_argument("--config", help="configuration file (AGENTACCEL_CONFIG)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments, after --")


# argparse types: a bad value is a usage error (exit 2) naming the option, not a traceback from the demo.
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=_positive_int, default=6, help="how many questions the agent answers")
    parser.add_argument("--latency", type=_seconds, default=0.05, help="seconds each mock LLM call takes")


def _add_flag(parser: argparse.ArgumentParser, flag: str, help_text: str) -> None:
    parser.add_argument(flag, action="store_true", help=help_text)


Runner = Callable[[argparse.Namespace], int]
BUILTIN: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Runner]] = [
    ("run", "run a program with agentaccel enabled: agentaccel run -- python app.py", _run_arguments, _run),
    ("plugins", "list plugins, adapters, detected frameworks and what is instrumented",
     lambda p: _add_flag(p, "--json", "machine-readable output"), _plugins),
    ("doctor", "check configuration, exporter and Redis reachability", lambda p: None, _doctor),
    ("demo", "run an example agent against the built-in mock LLM and show what agentaccel recorded",
     _demo_arguments, _demo),
    ("mock-llm", "serve the OpenAI-compatible test LLM on 127.0.0.1", _mock_llm_arguments, _mock_llm),
]


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser, which rejects arguments it does not know with its own usage.

    argparse hands them up to the top-level parser, whose usage (``agentaccel ... COMMAND``) does not show the
    subcommand's options. Subparsers a command adds (``cache stats``) are of this class too, so the innermost
    one reports."""

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    from agentaccel import __version__

    parser = argparse.ArgumentParser(prog="agentaccel", description="Accelerate and observe agent frameworks.")
    parser.add_argument("--version", action="version", version=f"agentaccel {__version__}")
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND", required=True,
                                     parser_class=_CommandParser)
    for name, help_text, add_arguments, run in BUILTIN + _plugin_commands():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(handler=run)
    return parser


def _plugin_commands() -> list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Runner]]:
    from agentaccel._plugins import build_manager, discover
    from agentaccel._runtime import _call_each

    infos = discover()
    found: list[tuple[str, str, Callable[[argparse.ArgumentParser], None], Runner]] = []
    _call_each(build_manager(infos), {i.name: i for i in infos}, "agentaccel_register_commands", collect=found)
    taken = {name for name, *_ in BUILTIN}
    return [command for command in found if command[0] not in taken]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `agentaccel run python app.py --flag`: everything after the program name belongs to the program.
    if argv[:1] == ["run"] and "--" not in argv:
        argv = ["run", "--", *argv[1:]] if argv[1:2] and not argv[1].startswith("-") else argv
    args = build_parser().parse_args(argv)
    handler: Any = args.handler
    try:
        return int(handler(args))
    except AgentAccelError as exc:  # the message says what to fix; a traceback would not help
        print(f"agentaccel: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
