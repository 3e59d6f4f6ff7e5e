"""Cache keys: a versioned SHA-256 digest of a canonical JSON encoding of everything that changes the answer.

Canonical means sorted keys, no whitespace, ``ensure_ascii=False`` and no NaN, so equal requests give equal bytes
in every process and Python run. Nothing here uses an object id, a ``repr`` or a memoized string: a request that is
not JSON data has no key, and its call is not cached (``bypass``) rather than keyed by something unstable.
"""

from __future__ import annotations

import hashlib
import json

from agentaccel import Call

#: Bumped whenever the key material or its encoding changes, so old entries are never read under a new meaning.
VERSION = "agentaccel-cache/1"

# One encoder built once: json.dumps(**kwargs) would build a new one per call on the hot path.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Unkeyable(Exception):
    """The request holds something that is not JSON data (an object, a set, NaN): the call is not cached."""


def digest(call: Call, namespace: str) -> str:
    """The key of ``call`` in ``namespace``: 64 hex digits."""
    target = call.target
    # A stream's entry holds chunks, a call's one value: the mode's kind is part of the answer's shape (sync and
    # async are not, so they share entries).
    material = [VERSION, namespace, target.framework, target.operation, call.name, call.provider,
                target.mode.is_stream, sorted(call.scope.items()), dict(call.request)]
    try:
        text = _encode(material)
    except (TypeError, ValueError) as exc:
        raise Unkeyable(str(exc)) from None
    return hashlib.sha256(text.encode()).hexdigest()


def label(call: Call) -> str:
    """What ``agentaccel cache clear --match`` globs against: ``framework/operation/name``."""
    return f"{call.target.framework}/{call.target.operation}/{call.name}"
