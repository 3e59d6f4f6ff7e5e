"""Entries and their stored form. Values are JSON text made by the adapter's codec: never pickle, so an entry
someone planted in Redis is at worst a wrong answer (which the optional HMAC signature rules out), never code.

Stored form (L2)::

    b"aac2" + b"u" + body                  unsigned
    b"aac2" + b"s" + HMAC-SHA256(32) + body  signed; the MAC covers the L2 key and the body
    body = head + value JSON
    head = stream (1 byte, 0 or 1), duration (float64), input and output tokens (uint64), expiry (float64):
           33 bytes, little-endian, read in one struct call (a hit reads it on every L2 round trip)

The algorithm is fixed by the configuration (a secret means HMAC-SHA256), never read from the entry. Values are
written and read with orjson, so a hit decodes in under a microsecond; what would not read back as the same data
(a tuple, NaN, an integer beyond 64 bits, a datetime) is not stored. An ``int`` or ``str`` subclass (an enum member)
compares equal to its plain value and is stored as that value.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from agentaccel import JSON_CODEC, Codec

MAGIC = b"aac2"  # aac1 (a JSON metadata line) entries are not ours any more: misses, replaced when called
_MAC_SIZE = 32
_HEAD = struct.Struct("<BdQQd")
#: What an L1 entry costs in memory beyond its text and its key: the Entry object, its digest string, the cache's
#: dict slots and LRU bookkeeping: 550 bytes on CPython 3.11, calibrated with bench_cache.py's RSS fill.
OVERHEAD_BYTES = 550


class InvalidEntry(ValueError):
    """A stored entry that is malformed, unsigned or forged (when signing is on), or not ours: a miss."""


class Entry:
    """A cached result: ``text`` is the JSON (UTF-8 bytes) of the codec's data (a list of chunks' data for a
    stream), decoded into fresh objects on every hit so callers can mutate what they get."""

    __slots__ = ("digest", "duration", "expires_at", "input_tokens", "output_tokens", "size", "stream", "text")

    def __init__(self, text: bytes, stream: bool, duration: float, input_tokens: int, output_tokens: int,
                 expires_at: float) -> None:
        self.text = text
        self.stream = stream
        self.duration = duration
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        #: Wall-clock (time.time()) expiry, so an L2 entry promoted to L1 keeps its remaining lifetime.
        self.expires_at = expires_at
        #: Set when it enters L1: the key's digest (a hit's ``agentaccel.cache.key``) and what L1 charges for it.
        self.digest = ""
        self.size = 0

    def result(self, codec: Codec) -> Any:
        """A fresh result from an L1 entry. Its data was made by ``codec.encode`` or has passed ``codec.decode``
        once (an L2 entry enters L1 only after it decoded), so the codec's ``rebuild`` may skip validation."""
        data = orjson.loads(self.text)
        # JSON data is its own result (a stream's, the list of its chunks): no call per hit to pass it through.
        return data if codec is JSON_CODEC else to_result(codec, self.stream, data, getattr(codec, "rebuild", None))


def to_result(codec: Codec, stream: bool, data: Any, decode: Callable[[Any], Any] | None = None) -> Any:
    """The caller's result from stored data (``codec.decode`` unless ``decode`` is given): a list of chunks for a
    stream (the pipeline replays it)."""
    decode = decode or codec.decode
    if stream:
        return [decode(chunk) for chunk in data]
    return decode(data)


def snapshot(codec: Codec, chunk: Any) -> bytes:
    """The JSON of a result, or of one stream chunk (``call.collect`` of a stream the cache stores, made as the
    chunk passes)."""
    return to_json(codec.encode(chunk))


def make_entry(codec: Codec, value: Any, stream: bool, duration: float, usage: Mapping[str, Any],
               ttl: float) -> Entry:
    """Encode a result (for a stream, ``value`` is the list of its chunks' :func:`snapshot`); raises CodecError,
    TypeError or ValueError for what is not JSON data orjson reads back unchanged."""
    # A copy of exact size: orjson's own bytes object keeps its whole growth buffer (10x a small value's size),
    # which L1 would hold for the entry's lifetime. (join makes one of exact size.)
    text = b"[" + b",".join(value) + b"]" if stream else memoryview(snapshot(codec, value)).tobytes()
    return Entry(text, stream, duration, _tokens(usage, "gen_ai.usage.input_tokens"),
                 _tokens(usage, "gen_ai.usage.output_tokens"), time.time() + ttl)


def _tokens(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64 else 0


def dump(entry: Entry, key: str, secret: bytes | None) -> bytes:
    body = _HEAD.pack(entry.stream, entry.duration, entry.input_tokens, entry.output_tokens,
                      entry.expires_at) + entry.text
    if secret is None:
        return MAGIC + b"u" + body
    return MAGIC + b"s" + _mac(secret, key, body) + body


def load(blob: bytes, key: str, secret: bytes | None) -> tuple[Entry, Any]:
    """The entry stored under ``key`` and its parsed value data; raises InvalidEntry for anything not made by
    :func:`dump` with the same secret (and key). Nothing in the blob chooses how it is read."""
    if not isinstance(blob, bytes) or blob[:4] != MAGIC:
        raise InvalidEntry("not an agentaccel-cache entry")
    kind = blob[4:5]
    if kind == b"s":
        body = blob[5 + _MAC_SIZE:]
        if secret is not None and not hmac.compare_digest(blob[5:5 + _MAC_SIZE], _mac(secret, key, body)):
            raise InvalidEntry("signature does not match (tampered, moved to another key, or another secret)")
    elif kind == b"u":
        if secret is not None:
            raise InvalidEntry("unsigned entry while cache.secret is set")
        body = blob[5:]
    else:
        raise InvalidEntry(f"unknown entry kind {kind!r}")
    try:
        stream, duration, input_tokens, output_tokens, expires_at = _HEAD.unpack_from(body)
        text = body[_HEAD.size:]
        data = orjson.loads(text)  # parsed once: undecodable JSON is a miss here, not an error at the hit
    except (struct.error, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise InvalidEntry(f"malformed entry: {exc}") from None
    if stream > 1 or not (math.isfinite(duration) and math.isfinite(expires_at)) or (stream and type(data) is not list):
        raise InvalidEntry("malformed entry head")
    return Entry(text, stream == 1, duration, input_tokens, output_tokens, expires_at), data


def to_json(data: Any) -> bytes:
    """``data`` as JSON bytes; raises TypeError or ValueError for what would not read back as the same data.
    orjson refuses integers beyond 64 bits, but writes NaN as null, a tuple as a list and a datetime, a UUID or a
    dataclass as their JSON forms: reading the text back and comparing (on the store path only) catches those
    everywhere in the data, in C, faster than the stdlib encoder's own check."""
    text = orjson.dumps(data)
    if orjson.loads(text) != data:
        raise ValueError("it would not read back as the same data (a tuple reads back as a list; NaN, a datetime, "
                         "a UUID or a dataclass as something else)")
    return text


def _mac(secret: bytes, key: str, body: bytes) -> bytes:
    # Binding the key into the MAC stops a valid entry being copied under another key (another tenant's).
    return hmac.new(secret, key.encode() + b"\0" + body, hashlib.sha256).digest()
