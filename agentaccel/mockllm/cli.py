"""Command line: ``python -m agentaccel.mockllm`` (also embedded as ``agentaccel mock-llm``)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .config import load_script
from .server import MockLLM

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each chat/embedding request takes"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="answer 429 beyond this many requests in flight"
    )
    parser.add_argument(
        "--rpm", type=int, default=None, help="answer 429 beyond this many requests per minute"
    )
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="seconds advised in Retry-After on concurrency 429s"
    )
    parser.add_argument("--script", metavar="FILE", default=None, help="JSON file with scripted answer rules")
    parser.add_argument(
        "--stream-chunk-delay", type=float, default=0.0, help="seconds between streamed chunks"
    )
    parser.add_argument("--embedding-dims", type=int, default=16, help="default embedding vector length")
    parser.add_argument("--chunk-words", type=int, default=1, help="words per streamed content chunk")
    # MockLLMProcess sets this so its child exits when the parent dies without stopping it.
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    try:
        server = MockLLM(
            host=args.host,
            port=args.port,
            latency=args.latency,
            max_concurrency=args.max_concurrency,
            rpm=args.rpm,
            retry_after=args.retry_after,
            script=load_script(args.script) if args.script else None,
            stream_chunk_delay=args.stream_chunk_delay,
            embedding_dims=args.embedding_dims,
            chunk_words=args.chunk_words,
        )
        server.start()
    except (OSError, ValueError) as exc:
        print(f"mock-llm: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = _install_stop_handlers(stop)
    try:
        if getattr(args, "exit_on_stdin_eof", False):
            threading.Thread(target=_wait_for_eof, args=(stop,), daemon=True).start()
        print(json.dumps({"url": server.url, "port": server.port}), flush=True)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass  # only reachable when handlers could not be installed (not the main thread)
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _install_stop_handlers(stop: threading.Event) -> dict[int, _SignalHandler]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, _SignalHandler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:
            break  # not the main thread; the embedding program owns signals
    return previous


def _wait_for_eof(stop: threading.Event) -> None:
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts interpreter exit.
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agentaccel.mockllm",
        description="OpenAI-compatible mock LLM server for tests and benchmarks. "
        'Prints {"url": ..., "port": ...} once listening and serves until SIGTERM/SIGINT.',
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
