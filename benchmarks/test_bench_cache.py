"""The native caches against their peers: functools.lru_cache (C), cachetools
(pure Python), cachebox (Rust) and theine (Rust, W-TinyLFU).

Every timed call runs a batch of OPS cache operations through ``map`` drained
by a zero-length deque, so the Python loop costs almost nothing and the
per-operation time is ``median / OPS``.  Each peer is paired round by round with
its like-for-like amulet_native call (``measure(ref=...)``): TTL peers with a
``Cache(ttl=...)``, LRU peers with a plain ``Cache(max_items=...)``.  All caches
hold CAPACITY int keys; "set with eviction" alternates two disjoint halves of
2 x CAPACITY keys, so every set evicts the least recently used entry.

cachetools is not thread-safe: in the contention group it runs under a
threading.Lock, as its documentation prescribes.  No timing assertions here.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from _inputs import InputSet
from conftest import measure

import amulet_native as an

OPS = 1000
CAPACITY = 1000
TTL = 600.0
THREAD_OPS = 20_000

GET_HIT = f"cache get-hit ({OPS} ops)"
GET_MISS = f"cache get-miss ({OPS} ops)"
SET_EVICT = f"cache set with eviction, full cache ({OPS} ops)"
CACHED_HIT = f"@cached hit ({OPS} calls)"
CONTENDED = f"cache get-hit, 2 threads x {THREAD_OPS} ops"
IMAGE_HIT = "ImageCache hit vs decode jpeg 768x512"

HITS = list(range(CAPACITY))
MISSES = list(range(CAPACITY, 2 * CAPACITY))
VALUES = [f"v{i}" for i in range(2 * CAPACITY)]


def drain(it: Any) -> None:
    deque(it, maxlen=0)


def _filled(cache: Any, setter: Callable[[Any, Any, Any], None] | None = None) -> Any:
    for k in HITS:
        if setter is None:
            cache[k] = VALUES[k]
        else:
            setter(cache, k, VALUES[k])
    return cache


def _cachetools(kind: str) -> Any:
    cachetools = pytest.importorskip("cachetools")
    if kind == "ttl":
        return cachetools.TTLCache(CAPACITY, TTL)
    return cachetools.LRUCache(CAPACITY)


def _cachebox(kind: str) -> Any:
    cachebox = pytest.importorskip("cachebox")
    if kind == "ttl":
        return cachebox.TTLCache(CAPACITY, TTL)
    return cachebox.LRUCache(CAPACITY)


def _amulet(kind: str) -> an.Cache[int, str]:
    return an.Cache(CAPACITY, ttl=TTL if kind == "ttl" else None)


# (peer name, kind, factory): kind picks the paired amulet_native reference
MAPPING_PEERS: list[tuple[str, str, Callable[[str], Any]]] = [
    ("cachetools LRUCache", "lru", _cachetools),
    ("cachetools TTLCache", "ttl", _cachetools),
    ("cachebox LRUCache", "lru", _cachebox),
    ("cachebox TTLCache", "ttl", _cachebox),
]


def _theine() -> Any:
    theine = pytest.importorskip("theine")
    c = theine.Cache(CAPACITY)
    for k in HITS:
        c.set(k, VALUES[k])
    return c


# ---- get-hit / get-miss ------------------------------------------------------------


def _get_op(cache: Any, keys: list[int]) -> Callable[[Any], None]:
    get = cache.get
    return lambda _: drain(map(get, keys))


@pytest.mark.parametrize("group,keys", [(GET_HIT, HITS), (GET_MISS, MISSES)])
def test_amulet_get(benchmark: Any, group: str, keys: list[int]) -> None:
    measure(benchmark, _get_op(_filled(_amulet("lru")), keys), None, group=group,
            peer="amulet_native", kind="cache")


@pytest.mark.parametrize("group,keys", [(GET_HIT, HITS), (GET_MISS, MISSES)])
def test_amulet_ttl_get(benchmark: Any, group: str, keys: list[int]) -> None:
    measure(benchmark, _get_op(_filled(_amulet("ttl")), keys), None, group=group,
            peer="amulet_native (ttl)", kind="cache",
            ref=_get_op(_filled(_amulet("lru")), keys))


@pytest.mark.parametrize("group,keys", [(GET_HIT, HITS), (GET_MISS, MISSES)])
@pytest.mark.parametrize("peer,kind,factory", MAPPING_PEERS)
def test_peer_get(
    benchmark: Any, group: str, keys: list[int], peer: str, kind: str, factory: Any
) -> None:
    measure(benchmark, _get_op(_filled(factory(kind)), keys), None, group=group, peer=peer,
            kind="cache", ref=_get_op(_filled(_amulet(kind)), keys))


@pytest.mark.parametrize("group,keys", [(GET_HIT, HITS), (GET_MISS, MISSES)])
def test_theine_get(benchmark: Any, group: str, keys: list[int]) -> None:
    measure(benchmark, _get_op(_theine(), keys), None, group=group, peer="theine Cache",
            kind="cache", ref=_get_op(_filled(_amulet("lru")), keys))


def test_lru_cache_hit_as_get(benchmark: Any) -> None:
    """functools.lru_cache's hit: the lookup of a memoised identity function."""
    f = functools.lru_cache(CAPACITY)(lambda k: k)
    drain(map(f, HITS))
    measure(benchmark, lambda _: drain(map(f, HITS)), None, group=GET_HIT,
            peer="functools.lru_cache hit", kind="cache",
            ref=_get_op(_filled(_amulet("lru")), HITS))


# ---- set with eviction ---------------------------------------------------------------


def _set_op(cache: Any, setter: Callable[[Any], Callable[[Any, Any], Any]] | None = None) -> Any:
    put = setter(cache) if setter else cache.__setitem__
    state = [0]
    halves = (MISSES, HITS)
    values = (VALUES[CAPACITY:], VALUES[:CAPACITY])

    def run(_: Any) -> None:
        i = state[0] = state[0] ^ 1
        drain(map(put, halves[i], values[i]))

    return run


def test_amulet_set(benchmark: Any) -> None:
    measure(benchmark, _set_op(_filled(_amulet("lru"))), None, group=SET_EVICT,
            peer="amulet_native", kind="cache")


def test_amulet_ttl_set(benchmark: Any) -> None:
    measure(benchmark, _set_op(_filled(_amulet("ttl"))), None, group=SET_EVICT,
            peer="amulet_native (ttl)", kind="cache", ref=_set_op(_filled(_amulet("lru"))))


@pytest.mark.parametrize("peer,kind,factory", MAPPING_PEERS)
def test_peer_set(benchmark: Any, peer: str, kind: str, factory: Any) -> None:
    measure(benchmark, _set_op(_filled(factory(kind))), None, group=SET_EVICT, peer=peer,
            kind="cache", ref=_set_op(_filled(_amulet(kind))))


def test_theine_set(benchmark: Any) -> None:
    measure(benchmark, _set_op(_theine(), lambda c: c.set), None, group=SET_EVICT,
            peer="theine Cache", kind="cache", ref=_set_op(_filled(_amulet("lru"))))


# ---- @cached hit ------------------------------------------------------------------------


def _ident(k: int) -> int:
    return k


def _cached_op(fn: Any) -> Callable[[Any], None]:
    drain(map(fn, HITS))
    return lambda _: drain(map(fn, HITS))


def _amulet_cached() -> Any:
    return an.cached(max_items=CAPACITY)(_ident)


def test_amulet_cached_hit(benchmark: Any) -> None:
    measure(benchmark, _cached_op(_amulet_cached()), None, group=CACHED_HIT,
            peer="amulet_native", kind="cache")


def _peer_decorated(peer: str) -> Any:
    if peer == "functools.lru_cache":
        return functools.lru_cache(CAPACITY)(_ident)
    if peer == "cachetools.cached(LRUCache)":
        cachetools = pytest.importorskip("cachetools")
        return cachetools.cached(cachetools.LRUCache(CAPACITY))(_ident)
    if peer == "cachetools.cached(TTLCache)":
        cachetools = pytest.importorskip("cachetools")
        return cachetools.cached(cachetools.TTLCache(CAPACITY, TTL))(_ident)
    if peer == "cachebox.cached(LRUCache)":
        cachebox = pytest.importorskip("cachebox")
        return cachebox.cached(cachebox.LRUCache(CAPACITY))(_ident)
    theine = pytest.importorskip("theine")
    memo = theine.Memoize(CAPACITY, timedelta(seconds=TTL))(_ident)
    memo.key(lambda k: str(k))
    return memo


@pytest.mark.parametrize(
    "peer",
    [
        "functools.lru_cache",
        "cachetools.cached(LRUCache)",
        "cachetools.cached(TTLCache)",
        "cachebox.cached(LRUCache)",
        "theine Memoize",
    ],
)
def test_peer_cached_hit(benchmark: Any, peer: str) -> None:
    measure(benchmark, _cached_op(_peer_decorated(peer)), None, group=CACHED_HIT, peer=peer,
            kind="cache", ref=_cached_op(_amulet_cached()))


# ---- two threads contending ------------------------------------------------------------


def _contended(get: Callable[[int], Any]) -> Callable[[Any], None]:
    keys = HITS * (THREAD_OPS // CAPACITY)

    def run(_: Any) -> None:
        ts = [threading.Thread(target=lambda: drain(map(get, keys))) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    return run


def _amulet_contended() -> Callable[[Any], None]:
    return _contended(_filled(_amulet("lru")).get)


def test_amulet_contended(benchmark: Any) -> None:
    measure(benchmark, _amulet_contended(), None, group=CONTENDED, peer="amulet_native",
            kind="cache", min_rounds=10)


def _locked(cache: Any) -> Callable[[int], Any]:
    lock = threading.Lock()

    def get(k: int) -> Any:
        with lock:
            return cache.get(k)

    return get


@pytest.mark.parametrize(
    "peer", ["cachetools LRUCache + Lock", "cachebox LRUCache", "theine Cache"]
)
def test_peer_contended(benchmark: Any, peer: str) -> None:
    if peer.startswith("cachetools"):
        get = _locked(_filled(_cachetools("lru")))
    elif peer.startswith("cachebox"):
        get = _filled(_cachebox("lru")).get
    else:
        get = _theine().get
    measure(benchmark, _contended(get), None, group=CONTENDED, peer=peer, kind="cache",
            ref=_amulet_contended(), min_rounds=10)


# ---- ImageCache -------------------------------------------------------------------------


def _jpeg(inputs: InputSet) -> bytes:
    return inputs.jpeg["jpeg kodim01 768x512"].data


def _image_hit(data: bytes) -> Callable[[Any], Any]:
    images = an.ImageCache(max_bytes=64 << 20)
    images.decode(data)
    return lambda _: images.decode(data)


def test_image_cache_hit(benchmark: Any, inputs: InputSet) -> None:
    measure(benchmark, _image_hit(_jpeg(inputs)), None, group=IMAGE_HIT,
            peer="amulet_native", kind="cache")


def test_image_fresh_decode(benchmark: Any, inputs: InputSet) -> None:
    data = _jpeg(inputs)
    measure(benchmark, lambda _: an.decode(data), None, group=IMAGE_HIT,
            peer="amulet_native decode (no cache)", kind="cache", ref=_image_hit(data))
