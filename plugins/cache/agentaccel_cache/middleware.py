"""The ``cache`` middleware: every decision of a cached call, written once as a flow the pipeline drives for sync,
async and streaming calls alike. I/O (waiting for a flight, Redis, SQLite) goes out as Io effects.

A call goes: policy and key -> L1 -> in-process flight (wait for an identical call in progress) -> L2 -> L2
lease (wait for an identical call in another process) -> upstream -> store in L1 (waking local waiters), then L2
(releasing the lease). Every L2 step goes through the circuit breaker, and any L2 failure means "go on without
L2", never a failed call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from functools import partial
from typing import Any

from agentaccel import PROCEED, Call, Io, Middleware, Outcome, Proceed, Return, StreamOutcome
from agentaccel_cache import keys
from agentaccel_cache.cache import Cache
from agentaccel_cache.policy import Policy
from agentaccel_cache.singleflight import TIMEOUT, Flight, on_event_loop
from agentaccel_cache.values import Entry, make_entry, snapshot

log = logging.getLogger("agentaccel.cache")
RESULT = "agentaccel.cache.result"
LAYER = "agentaccel.cache.layer"
KEY = "agentaccel.cache.key"
HIT, MISS, COALESCED, BYPASS, ERROR = "hit", "miss", "coalesced", "bypass", "error"


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: What an L2 step gives back when the backend failed or the breaker kept us away from it.
UNAVAILABLE = _Marker("UNAVAILABLE")
#: What the L2 lookup found when the entry there was not valid (planted, tampered): only a fresh call replaces it.
INVALID = _Marker("INVALID")
_UNDECODED: Any = object()  # "decode the entry's text" (an L2 hit passes the result it already decoded)
Flow = Generator[Io | Return | Any, Any, None]


class CacheMiddleware(Middleware):
    name = "cache"
    after = ("tracing", "profile")
    before = ("limit", "pool")

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def flow(self, call: Call) -> Flow | Proceed | Return:
        # A plain method, not a generator, for the decisions that need nothing more (a bypass, an L1 hit): a
        # generator's start, first step and end cost about 0.3 us on every call.
        cache = self.cache
        policy = cache.policies.for_call(call)
        encoded = None
        if policy is not None:
            try:
                encoded = keys.encode(call, cache.namespace)
            except keys.Unkeyable:  # not JSON data: no stable key, so no caching (try: suppress() costs 0.3 us)
                encoded = None
        if encoded is None:
            call.annotate(RESULT, BYPASS)
            cache.stats.count(BYPASS)
            return PROCEED
        assert policy is not None
        refresh = bool(call.options.get("refresh"))
        if not refresh:
            entry = cache.l1.hit(encoded)  # counted there
            if entry is not None:
                call.attributes[KEY] = entry.digest
                return self._serve(call, entry, HIT, "l1")
        return self._miss(call, cache, policy, encoded, refresh)

    def _miss(self, call: Call, cache: Cache, policy: Policy, encoded: bytes, refresh: bool) -> Flow:
        digest = keys.digest(encoded)
        call.annotate(KEY, digest)
        backend = cache.backend
        key = backend.entry_key(keys.label(call), digest) if backend is not None else ""
        lookup: Any = None  # what L2 held: nothing (None), INVALID or UNAVAILABLE; a valid entry is served
        if backend is not None and not refresh:
            # L2 before the in-process flight: a hit (the common case across a fleet) then costs no flight, and
            # identical misses still meet in it, where the leader's lease request returns an entry stored since.
            lookup = yield from self._remote(backend.get(key))
            if isinstance(lookup, bytes):
                found = cache.load(key, lookup, call.target.codec)
                if found is not None:
                    yield self._serve_l2(call, encoded, digest, found, HIT)
                    return
                lookup = INVALID
        flight: Flight | None = None
        if not refresh:
            while True:
                flight, leading = cache.flights.join(digest)
                if leading:
                    # A leader that finished after this call missed L1 left its entry there: no second call.
                    entry = cache.l1.hit(encoded)  # counted there
                    if entry is not None:
                        cache.flights.finish(digest, flight, entry)
                        yield self._serve(call, entry, HIT, "l1")
                        return
                    break
                waited = yield Io(partial(flight.wait, cache.lease), partial(flight.wait_async, cache.lease))
                if isinstance(waited, Entry):
                    cache.stats.served(COALESCED, "l1", waited)
                    yield self._serve(call, waited, COALESCED, "l1")
                    return
                flight = None
                if waited is TIMEOUT:
                    break  # the leader outlived its lease: call upstream without leading
                # The leader stored nothing (it failed): try to lead this time.
        yield from self._lead(call, cache, policy, encoded, digest, key, lookup, flight, refresh)

    def _lead(self, call: Call, cache: Cache, policy: Policy, encoded: bytes, digest: str, key: str, lookup: Any,
              flight: Flight | None, refresh: bool) -> Flow:
        backend = cache.backend
        entry: Entry | None = None
        token: str | None = None
        result = MISS
        try:
            if backend is not None and not refresh:
                found, token, result = yield from self._remote_lookup(call, key, digest, lookup)
                if found is not None:
                    if flight is not None:
                        cache.flights.finish(digest, flight, found[0])
                    yield self._serve_l2(call, encoded, digest, found, result)
                    return
            call.annotate(RESULT, result)
            cache.stats.count(result)
            stream = call.target.mode.is_stream
            if stream:
                # Each chunk's JSON, made before the consumer gets the chunk: what it does to the chunk is its own.
                call.collect = partial(snapshot, call.target.codec)
            start = time.perf_counter()
            outcome = yield PROCEED
            entry = self._entry(call, outcome, policy, stream, time.perf_counter() - start)
            if entry is not None:
                cache.l1.put(encoded, digest, entry)
        finally:
            if flight is not None:  # also when the call failed or was abandoned: waiters must never hang
                cache.flights.finish(digest, flight, entry)
        # After a failed lookup the backend is not asked again for this call: a slow Redis costs one timeout.
        if backend is not None and result != ERROR and (entry is not None or token is not None):
            blob = cache.dump(key, entry) if entry is not None else None
            yield from self._remote(backend.store(key, digest, blob, policy.ttl, policy.tags, token))

    def _remote_lookup(self, call: Call, key: str, digest: str, lookup: Any
                       ) -> Generator[Io, Any, tuple[tuple[Entry, Any] | None, str | None, str]]:
        """After the L2 lookup (``lookup``: what it found), the lease: (entry and result, None, hit|coalesced)
        when another process made the entry meanwhile; (None, lease token or None, miss|error) when this call must
        go upstream."""
        if lookup is UNAVAILABLE:
            return None, None, ERROR
        cache = self.cache
        backend = cache.backend
        assert backend is not None
        deadline = None
        waited = False
        invalid = lookup is INVALID
        while backend.locks:
            # Atomically "the entry, else the lease": bytes, our token, or None while another process holds it.
            taken = yield from self._remote(backend.acquire(key, digest, cache.lease, not invalid))
            if taken is UNAVAILABLE:
                return None, None, ERROR
            if isinstance(taken, str):
                return None, taken, MISS
            blob = taken
            if blob is None:
                if not call.target.mode.is_async and on_event_loop():
                    # A sync call on an event loop's thread must not block it: the holder may be a task of that
                    # loop (as with Flight.wait), which could then not finish until the lease ran out.
                    return None, None, MISS
                now = time.monotonic()
                deadline = deadline or now + cache.lease
                if now >= deadline:
                    return None, None, MISS  # waited a whole lease for a moving target: go upstream alone
                blob = yield from self._remote(backend.wait(key, digest, deadline - now))
                if blob is UNAVAILABLE:
                    return None, None, ERROR
                waited = True
            if blob is not None:
                found = cache.load(key, blob, call.target.codec)
                if found is not None:
                    return found, None, COALESCED if waited else HIT
                invalid = True  # a planted or tampered entry: only a fresh call can replace it
        return None, None, MISS

    def _remote(self, io: Io) -> Generator[Io, Any, Any]:
        """One L2 step through the breaker: its result, or UNAVAILABLE. Never raises a backend error."""
        cache = self.cache
        assert cache.backend is not None
        if not cache.breaker.allow():
            return UNAVAILABLE
        try:
            value = yield io
        except cache.backend.errors as exc:
            cache.breaker.failure(exc)
            cache.stats.backend_error()
            return UNAVAILABLE
        cache.breaker.success()
        return value

    def _serve_l2(self, call: Call, encoded: bytes, digest: str, found: tuple[Entry, Any], result: str) -> Return:
        """The answer from an L2 entry (and its result, decoded), which is promoted to L1."""
        entry, value = found
        self.cache.l1.put(encoded, digest, entry)
        self.cache.stats.served(result, "l2", entry)
        return self._serve(call, entry, result, "l2", value)

    def _serve(self, call: Call, entry: Entry, result: str, layer: str, value: Any = _UNDECODED) -> Return:
        """The answer from ``entry`` (already counted in the stats)."""
        attributes = call.attributes  # call.annotate() twice, without its two calls on every hit
        attributes[RESULT] = result
        attributes[LAYER] = layer
        return Return(entry.result(call.target.codec) if value is _UNDECODED else value)

    def _entry(self, call: Call, outcome: Outcome, policy: Policy, stream: bool, duration: float) -> Entry | None:
        """What to store: nothing for an error, a cancelled call or a stream not read to its end."""
        if not outcome.completed or (stream and outcome.value is None):
            return None
        target = call.target
        usage: Any = {}
        if target.describe is not None:
            last = outcome.last if isinstance(outcome, StreamOutcome) else outcome.value
            try:
                usage = target.describe(last) if last is not None else {}
            except Exception:
                usage = {}  # the adapter's describe() failing costs the saved-token count, nothing else
        try:
            return make_entry(target.codec, outcome.value, stream, duration, usage, policy.ttl)
        except Exception as exc:
            # Not JSON data after the codec (or the codec failed): this result is simply not cached.
            log.debug("agentaccel cache: result of %r not stored: %s", call, exc)
            return None
