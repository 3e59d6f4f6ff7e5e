"""Cache keys: a canonical JSON encoding of everything that changes the answer, and its versioned SHA-256 digest.

L1 is keyed by the encoding itself (a dict lookup hashes 1.3 KB in 0.1 us; SHA-256 takes 1 us on this host, on every
hit); the digest names the entry everywhere else (L2, single flight, the span's ``agentaccel.cache.key``) and is
made only when a call misses L1 (an L1 entry keeps its own).

Canonical means orjson with sorted keys: no whitespace, UTF-8, shortest round-trip floats, so equal requests give
equal bytes in every process and Python run (orjson because the stdlib encoder costs 6 us on a 1.2 KB chat request
against orjson's 0.4 us, and this runs on every cached call). Nothing here uses an object id, a ``repr`` or a
memoized string: a request that is not JSON data has no key, and its call is not cached (``bypass``) rather than
keyed by something unstable.

NaN and the infinities are not JSON: orjson writes them as null, so a request holding one shares its key with the
same request holding None there. Searching every key's bytes for a null to rule that out would cost 0.8 us per
call for requests no provider accepts (they fail upstream, and a failed call stores nothing). The types orjson
writes natively (datetime, UUID, enum, dataclass) are keyed by their JSON form.
"""

from __future__ import annotations

import hashlib

import orjson

from agentaccel import Call

#: Bumped whenever the key material or its encoding changes, so old entries are never read under a new meaning.
VERSION = "agentaccel-cache/2"
_SORTED = orjson.OPT_SORT_KEYS


class Unkeyable(Exception):
    """The request holds something that is not JSON data (an object, a set, a non-string key, an integer beyond
    64 bits): the call is not cached."""


def encode(call: Call, namespace: str) -> bytes:
    """The canonical encoding of ``call``'s key material in ``namespace``; raises :class:`Unkeyable`."""
    target = call.target
    scope = call.scope
    # A stream's entry holds chunks, a call's one value: the mode's kind is part of the answer's shape (sync and
    # async are not, so they share entries).
    material = (VERSION, namespace, target.framework, target.operation, call.name, call.provider,
                target.mode.is_stream, sorted(scope.items()) if scope else (), call.request)
    try:
        return orjson.dumps(material, option=_SORTED)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise Unkeyable(str(exc)) from None


def digest(encoding: bytes) -> str:
    """The key named by an :func:`encode` result: 64 hex digits."""
    return hashlib.sha256(encoding).hexdigest()


def label(call: Call) -> str:
    """What ``agentaccel cache clear --match`` globs against: ``framework/operation/name``."""
    return f"{call.target.framework}/{call.target.operation}/{call.name}"
