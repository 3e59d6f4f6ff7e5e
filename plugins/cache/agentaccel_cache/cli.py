"""``agentaccel cache stats`` and ``agentaccel cache clear [--namespace N] [--match GLOB] [--tag T]``.

They act on the L2 backend of the configuration (or ``--backend URL``). L1 lives inside each running process and
is not reachable from here; its entries expire by TTL.
"""

from __future__ import annotations

import argparse
import json
import sys

from agentaccel import ConfigError
from agentaccel_cache.backends import Backend, open_backend
from agentaccel_cache.config import CacheConfig, check, redact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="entries and bytes in the L2 backend")
    clear = actions.add_parser("clear", help="delete L2 entries (all of the namespace, or those selected)")
    for sub in (stats, clear):
        sub.add_argument("--backend", help="backend URL instead of cache.backend from the configuration")
        sub.add_argument("--namespace", help="namespace instead of cache.namespace from the configuration")
        sub.add_argument("--json", action="store_true", help="machine-readable output")
    clear.add_argument("--match", metavar="GLOB", help="only entries whose framework/operation/name matches, "
                       "e.g. 'openai/chat/*'")
    clear.add_argument("--tag", help="only entries carrying this tag (set by a rule's tags or options(cache_tags))")


def run(args: argparse.Namespace) -> int:
    section = _section()
    url = args.backend or section.backend
    namespace = args.namespace or section.namespace
    check(CacheConfig(backend=url, namespace=namespace))
    if not url:
        print("agentaccel cache: cache.backend is empty, so the cache lives inside each process (L1) and there is "
              "nothing shared to inspect or clear; set cache.backend or pass --backend URL", file=sys.stderr)
        return 2
    backend = open_backend(url, namespace, section.connect_timeout, max(section.timeout, 5.0), create=False)
    try:
        return _act(args, backend, namespace, redact(url))
    except backend.errors as exc:
        print(f"agentaccel cache: backend {redact(url)} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


def _act(args: argparse.Namespace, backend: Backend, namespace: str, shown: str) -> int:
    if args.cache_action == "stats":
        report = {"backend": shown, "namespace": namespace, **backend.stats(namespace)}
        if args.json:
            print(json.dumps(report))
        else:
            for name, value in report.items():
                print(f"{name}: {value}")
        return 0
    deleted = backend.clear(namespace, args.match, args.tag)
    if args.json:
        print(json.dumps({"backend": shown, "namespace": namespace, "deleted": deleted}))
    else:
        print(f"deleted {deleted} entries from {shown} (namespace {namespace!r})")
    return 0


def _section() -> CacheConfig:
    """The ``cache`` section as configured (file, environment), without enabling anything."""
    from agentaccel import load_config

    config = load_config()
    if "cache" not in config:
        raise ConfigError("the cache plugin is disabled (AGENTACCEL_PLUGINS / AGENTACCEL_DISABLE_PLUGINS)")
    section: CacheConfig = config.section("cache")
    return section
