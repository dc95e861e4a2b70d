"""amulet_native.Cache: the MutableMapping contract (against a pure-Python model),
LRU/TTL/byte bounds, callbacks, pickling, hostile keys and real-thread stress."""

from __future__ import annotations

import dataclasses
import functools
import gc
import pickle
import random
import sys
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import amulet_native as an
from amulet_native.cache import CacheStats


class FakeTimer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def size_of(value: Any) -> int:
    return len(value)


# ---- the reference model ------------------------------------------------------------


class Model:
    """A pure-Python LRU/TTL/byte-bounded cache: what Cache must behave like."""

    def __init__(self, max_items: int | None, max_bytes: int | None, ttl: float | None) -> None:
        self.d: OrderedDict[Any, tuple[Any, int, float, float | None]] = OrderedDict()
        self.max_items, self.max_bytes, self.ttl = max_items, max_bytes, ttl

    def purge(self, now: float) -> None:
        for k in [k for k, (_, _, dl, _) in self.d.items() if dl <= now]:
            del self.d[k]

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _, _ in self.d.values())

    def evict(self, items: int | None, nbytes: int | None) -> None:
        while self.d and (
            (items is not None and len(self.d) > items)
            or (nbytes is not None and self.bytes > nbytes)
        ):
            self.d.popitem(last=False)

    def get(self, k: Any, now: float) -> Any:
        self.purge(now)
        if k not in self.d:
            return None
        self.d.move_to_end(k)
        return self.d[k][0]

    def set(self, k: Any, v: Any, ttl: float | None, now: float) -> bool:
        if self.max_bytes is not None and len(v) > self.max_bytes:
            return False
        self.purge(now)
        ttl = self.ttl if ttl is None else ttl
        self.d.pop(k, None)
        self.d[k] = (v, len(v), now + ttl if ttl is not None else float("inf"), ttl)
        self.evict(self.max_items, self.max_bytes)
        return True

    def touch(self, k: Any, now: float) -> bool:
        self.purge(now)
        if k not in self.d:
            return False
        v, size, _, ttl = self.d.pop(k)
        self.d[k] = (v, size, now + ttl if ttl is not None else float("inf"), ttl)
        return True


KEYS = st.sampled_from(["a", "b", "c", "d", "e", "f", 1, 2, 3, (1, 2)])
VALUES = st.binary(max_size=40)


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.timer = FakeTimer()
        self.cache: an.Cache[Any, bytes] | None = None
        self.model: Model | None = None

    @precondition(lambda self: self.cache is None)
    @rule(
        max_items=st.one_of(st.none(), st.integers(1, 6)),
        max_bytes=st.one_of(st.none(), st.integers(1, 100)),
        ttl=st.one_of(st.none(), st.sampled_from([0.5, 1.0, 3.0])),
    )
    def create(self, max_items: int | None, max_bytes: int | None, ttl: float | None) -> None:
        self.cache = an.Cache(max_items, max_bytes, ttl, sizeof=size_of, timer=self.timer)
        self.model = Model(max_items, max_bytes, ttl)

    def ready(self) -> bool:
        return self.cache is not None

    @precondition(ready)
    @rule(k=KEYS, v=VALUES, ttl=st.one_of(st.none(), st.sampled_from([0.25, 2.0])))
    def set(self, k: Any, v: bytes, ttl: float | None) -> None:
        assert self.cache is not None and self.model is not None
        if self.model.set(k, v, ttl, self.timer.now):
            self.cache.set(k, v, ttl=ttl)
        else:
            with pytest.raises(an.ValidationError) as info:
                self.cache.set(k, v, ttl=ttl)
            assert info.value.code == "cache.too_large"

    @precondition(ready)
    @rule(k=KEYS)
    def get(self, k: Any) -> None:
        assert self.cache is not None and self.model is not None
        assert self.cache.get(k) == self.model.get(k, self.timer.now)

    @precondition(ready)
    @rule(k=KEYS)
    def delete(self, k: Any) -> None:
        assert self.cache is not None and self.model is not None
        self.model.purge(self.timer.now)
        if k in self.model.d:
            del self.model.d[k]
            del self.cache[k]
        else:
            with pytest.raises(KeyError):
                del self.cache[k]

    @precondition(ready)
    @rule(k=KEYS)
    def pop(self, k: Any) -> None:
        assert self.cache is not None and self.model is not None
        self.model.purge(self.timer.now)
        want = self.model.d.pop(k)[0] if k in self.model.d else "missing"
        assert self.cache.pop(k, "missing") == want

    @precondition(ready)
    @rule(k=KEYS)
    def contains(self, k: Any) -> None:
        assert self.cache is not None and self.model is not None
        self.model.purge(self.timer.now)
        assert (k in self.cache) == (k in self.model.d)

    @precondition(ready)
    @rule(k=KEYS)
    def touch(self, k: Any) -> None:
        assert self.cache is not None and self.model is not None
        assert self.cache.touch(k) == self.model.touch(k, self.timer.now)

    @precondition(ready)
    @rule()
    def popitem(self) -> None:
        assert self.cache is not None and self.model is not None
        self.model.purge(self.timer.now)
        if self.model.d:
            k, (v, _, _, _) = self.model.d.popitem(last=False)
            assert self.cache.popitem() == (k, v)
        else:
            with pytest.raises(KeyError):
                self.cache.popitem()

    @precondition(ready)
    @rule(dt=st.sampled_from([0.1, 0.3, 1.0, 2.5]))
    def advance(self, dt: float) -> None:
        self.timer.now += dt

    @precondition(ready)
    @rule()
    def expire(self) -> None:
        assert self.cache is not None and self.model is not None
        before = len(self.model.d)
        self.model.purge(self.timer.now)
        assert self.cache.expire() == before - len(self.model.d)

    @precondition(ready)
    @rule(
        max_items=st.one_of(st.none(), st.integers(1, 6)),
        max_bytes=st.one_of(st.none(), st.integers(1, 100)),
    )
    def resize(self, max_items: int | None, max_bytes: int | None) -> None:
        assert self.cache is not None and self.model is not None
        self.model.purge(self.timer.now)
        self.model.max_items, self.model.max_bytes = max_items, max_bytes
        self.model.evict(max_items, max_bytes)
        self.cache.resize(max_items=max_items, max_bytes=max_bytes)

    @precondition(ready)
    @rule()
    def clear(self) -> None:
        assert self.cache is not None and self.model is not None
        self.model.d.clear()
        self.cache.clear()

    @invariant()
    def same_content(self) -> None:
        if self.cache is None or self.model is None:
            return
        self.model.purge(self.timer.now)
        assert list(self.cache) == list(self.model.d)  # LRU order, oldest first
        assert len(self.cache) == len(self.model.d)
        s = self.cache.stats()
        assert s.items == len(self.model.d)
        assert s.bytes == self.model.bytes


CacheMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestCacheModel = CacheMachine.TestCase


# ---- the mapping contract ---------------------------------------------------------------


def test_is_a_mutable_mapping_and_generic() -> None:
    c: an.Cache[str, int] = an.Cache[str, int](max_items=10)
    assert isinstance(c, MutableMapping)
    c.update({"a": 1, "b": 2}, c=3)
    assert c.setdefault("a", 9) == 1
    assert c.setdefault("z", 26) == 26
    assert dict(c.items()) == {"a": 1, "b": 2, "c": 3, "z": 26}
    assert sorted(c.keys()) == ["a", "b", "c", "z"]
    assert sorted(c.values()) == [1, 2, 3, 26]
    assert ("a", 1) in c.items() and ("a", 2) not in c.items()
    assert c == {"a": 1, "b": 2, "c": 3, "z": 26}
    assert c.pop("a") == 1 and c.pop("a", None) is None
    with pytest.raises(KeyError):
        c.pop("a")
    with pytest.raises(KeyError):
        c["nope"]
    assert c.get("nope") is None and c.get("nope", 5) == 5
    c.clear()
    assert len(c) == 0 and list(c) == []
    with pytest.raises(TypeError):
        hash(c)


def test_iteration_is_a_snapshot_and_does_not_touch() -> None:
    c: an.Cache[int, int] = an.Cache()
    for i in range(5):
        c[i] = i
    for k in c:  # mutating while iterating is safe: a snapshot
        c[k + 100] = k
    assert len(c) == 10
    before = c.stats()
    assert list(c.values())[:5] == [0, 1, 2, 3, 4]
    assert c.stats() == before  # values()/items() count nothing
    assert list(c)[:5] == [0, 1, 2, 3, 4]  # order unchanged


def test_lru_order_and_eviction_reason() -> None:
    evicted: list[tuple[Any, Any, str]] = []
    c: an.Cache[str, int] = an.Cache(max_items=3, on_evict=lambda k, v, r: evicted.append((k, v, r)))
    for k in "abc":
        c[k] = ord(k)
    assert c["a"] == 97  # a becomes most recent
    c["d"] = 100  # evicts b
    assert list(c) == ["c", "a", "d"]
    assert evicted == [("b", 98, "lru")]
    assert c.peek("c") == 99 and list(c) == ["c", "a", "d"]  # peek does not touch
    assert c.touch("c") and list(c) == ["a", "d", "c"]
    assert not c.touch("zz")
    assert c.stats().evictions == 1


def test_byte_accounting_is_exact() -> None:
    c: an.Cache[str, Any] = an.Cache(max_bytes=10_000)
    arr = np.zeros((10, 20), np.float64)  # nbytes 1600
    c["arr"] = arr
    c["view"] = arr[::2]  # non-contiguous view: its own nbytes
    c["bytes"] = b"x" * 100  # buffer: len
    c["ba"] = bytearray(50)
    c["int"] = 12345
    want = 1600 + 800 + 100 + 50 + sys.getsizeof(12345)
    assert c.stats().bytes == want
    del c["arr"]
    assert c.stats().bytes == want - 1600
    c["bytes"] = b"y" * 10  # replace: re-charged
    assert c.stats().bytes == want - 1600 - 90
    obj_arr = np.array([object()], dtype=object)  # nbytes: the pointers only
    c["obj"] = obj_arr
    assert c.stats().bytes == want - 1690 + obj_arr.nbytes


def test_default_sizeof_matches_getsizeof() -> None:
    values: list[Any] = ["", "abc", "x" * 1000, "é", "日本語", 1.5, 0, 2**100, (1, 2), [1], {}]
    for v in values:
        c: an.Cache[str, Any] = an.Cache()
        c["k"] = v
        assert c.stats().bytes == sys.getsizeof(v), v


def test_byte_bound_evicts_lru_with_reason_size() -> None:
    reasons: list[str] = []
    c: an.Cache[int, bytes] = an.Cache(max_bytes=100, on_evict=lambda k, v, r: reasons.append(r))
    for i in range(5):
        c[i] = bytes(30)
    assert list(c) == [2, 3, 4] and c.stats().bytes == 90
    assert reasons == ["size", "size"]


def test_value_larger_than_max_bytes_is_refused() -> None:
    c: an.Cache[str, bytes] = an.Cache(max_bytes=10)
    c["k"] = b"old"
    with pytest.raises(an.ValidationError) as info:
        c["k"] = bytes(11)
    assert info.value.code == "cache.too_large"
    assert info.value.context["actual"] == 11 and info.value.context["limit"] == 10
    assert c["k"] == b"old"  # unchanged
    c["k"] = bytes(10)  # exactly max_bytes fits
    assert c.stats().bytes == 10


def test_custom_sizeof_and_bad_sizeof() -> None:
    c: an.Cache[str, str] = an.Cache(max_bytes=10, sizeof=lambda v: 4)
    for k in "abcd":
        c[k] = k
    assert list(c) == ["c", "d"]
    bad: an.Cache[str, str] = an.Cache(sizeof=lambda v: "big")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError):
        bad["a"] = "x"
    neg: an.Cache[str, str] = an.Cache(sizeof=lambda v: -1)
    with pytest.raises(ValueError):
        neg["a"] = "x"
    assert len(bad) == 0 and len(neg) == 0


def test_ttl_expiry_with_injected_timer() -> None:
    t = FakeTimer()
    expired: list[tuple[Any, str]] = []
    c: an.Cache[str, int] = an.Cache(ttl=10, timer=t, on_evict=lambda k, v, r: expired.append((k, r)))
    c["a"] = 1
    c.set("b", 2, ttl=2)
    c.set("c", 3, ttl=float("inf"))  # never expires
    t.now += 2
    assert "b" not in c and c.get("b") is None
    assert expired == [("b", "ttl")]
    t.now += 7.9
    assert c["a"] == 1
    assert c.touch("a")  # restarts a's ttl (10 s)
    t.now += 9.9
    assert c["a"] == 1
    t.now += 0.1
    assert len(c) == 1 and list(c) == ["c"]
    s = c.stats()
    assert s.expirations == 2 and s.evictions == 0


def test_expired_memory_is_released_by_any_operation() -> None:
    t = FakeTimer()

    class Blob:
        pass

    c: an.Cache[str, Any] = an.Cache(ttl=1, timer=t)
    blob = Blob()
    ref = weakref.ref(blob)
    c["blob"] = blob
    del blob
    t.now += 5
    c["other"] = 1  # an unrelated key: the expired one goes now
    assert ref() is None
    c.set("x", Blob(), ttl=1)
    t.now += 5
    assert c.expire() == 2  # "other" and "x": the explicit purge of an idle cache
    assert len(c) == 0 and c.stats().bytes == 0


def test_default_timer_is_monotonic_and_ttl_validated() -> None:
    import time

    c: an.Cache[str, int] = an.Cache(ttl=60)
    assert c.timer is time.monotonic
    c["a"] = 1
    assert c.dump()[0][2] == pytest.approx(60, abs=1)
    for bad in (0, -1, float("nan"), "1", True):
        with pytest.raises(an.ValidationError):
            an.Cache(ttl=bad)  # type: ignore[arg-type]
        with pytest.raises(an.ValidationError):
            c.set("a", 1, ttl=bad)  # type: ignore[arg-type]
    for bad_bound in (0, -5, 1.5, "3"):
        with pytest.raises(an.ValidationError):
            an.Cache(max_items=bad_bound)  # type: ignore[arg-type]
    with pytest.raises(an.ValidationError):
        an.Cache(on_evict=42)  # type: ignore[arg-type]


def test_resize_and_trim() -> None:
    reasons: list[str] = []
    c: an.Cache[int, bytes] = an.Cache(on_evict=lambda k, v, r: reasons.append(r))
    for i in range(10):
        c[i] = bytes(10)
    c.resize(max_items=4)
    assert list(c) == [6, 7, 8, 9] and c.max_items == 4
    assert reasons == ["resize"] * 6
    c.resize(max_bytes=25)
    assert list(c) == [8, 9] and c.max_bytes == 25 and c.max_items == 4
    c.resize(max_items=None)
    assert c.max_items is None
    for i in range(2):
        c[i] = bytes(5)
    assert list(c) == [9, 0, 1]  # 0 and 1 pushed 8 out (reason "size")
    assert c.trim(max_bytes=10) == 10  # bytes freed
    assert list(c) == [0, 1] and c.max_bytes == 25  # bounds unchanged
    assert c.trim(max_items=0) == 10 and len(c) == 0
    assert reasons[-3:] == ["trim"] * 3
    with pytest.raises(TypeError):
        c.resize(max_itemz=3)


def test_stats_and_reset() -> None:
    c: an.Cache[str, int] = an.Cache()
    c["a"] = 1
    c["a"], c.get("b"), c.get("a")
    s = c.stats()
    assert isinstance(s, CacheStats)
    assert (s.hits, s.misses) == (2, 1) and s.hit_rate == pytest.approx(2 / 3)
    c.reset_stats()
    assert c.stats().hits == 0 and c.stats().items == 1


def test_get_or_set() -> None:
    c: an.Cache[str, int] = an.Cache()
    calls: list[int] = []

    def make(v: int) -> int:
        calls.append(v)
        return v

    assert c.get_or_set("a", lambda: make(5)) == 5
    assert c.get_or_set("a", lambda: make(6)) == 5
    assert calls == [5]


def test_repr() -> None:
    c: an.Cache[str, bytes] = an.Cache(max_items=5, max_bytes=1000, ttl=30)
    c["a"] = b"12345"
    c["a"], c.get("b")
    assert repr(c) == (
        "Cache(max_items=5, max_bytes=1000, ttl=30.0) <items=1, bytes=5, hit_rate=50.0%>"
    )
    assert repr(an.Cache()) == "Cache() <items=0, bytes=0, hit_rate=0.0%>"


def _evict_cb(key: Any, value: Any, reason: str) -> None:
    pass


def test_pickle_config_only_and_with_entries() -> None:
    c: an.Cache[str, int] = an.Cache(max_items=5, max_bytes=999, ttl=30, on_evict=_evict_cb)
    c["a"] = 1
    c["b"] = 2
    clone = pickle.loads(pickle.dumps(c))
    assert type(clone) is an.Cache
    assert (clone.max_items, clone.max_bytes, clone.ttl) == (5, 999, 30.0)
    assert clone.on_evict is _evict_cb and len(clone) == 0
    c.pickle_entries = True
    full = pickle.loads(pickle.dumps(c))
    assert list(full.items()) == [("a", 1), ("b", 2)] and full.pickle_entries
    assert 29 < full.dump()[0][2] <= 30  # remaining TTL travelled
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pickle.dumps(an.Cache(on_evict=lambda k, v, r: None))


# ---- callbacks -------------------------------------------------------------------------


def test_raising_callback_warns_and_cache_survives() -> None:
    def boom(key: Any, value: Any, reason: str) -> None:
        raise ValueError("callback failed")

    c: an.Cache[int, int] = an.Cache(max_items=2, on_evict=boom)
    with pytest.warns(an.CacheCallbackWarning, match="ValueError: callback failed"):
        c.update({i: i for i in range(4)})
    assert list(c) == [2, 3] and c.stats().evictions == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", an.CacheCallbackWarning)
        with pytest.raises(an.CacheCallbackWarning):
            c[9] = 9
    assert list(c) == [3, 9]  # the insert happened; only the report became an error


def test_callback_that_uses_the_cache() -> None:
    c: an.Cache[Any, Any] = an.Cache(max_items=3)
    seen: list[tuple[Any, str]] = []

    def cb(key: Any, value: Any, reason: str) -> None:
        seen.append((key, reason))
        assert key not in c  # already gone, the cache is consistent
        if reason == "lru" and not isinstance(key, tuple):
            c[("graveyard", key)] = value  # re-enter: insert (evicts again)
        len(c), list(c), c.get(key)

    c.on_evict = cb
    for i in range(6):
        c[i] = i
    assert len(c) == 3
    assert c.stats().items == 3
    c.clear()
    assert len(c) == 0 and any(r == "clear" for _, r in seen)


def test_clear_reports_every_entry() -> None:
    got: list[Any] = []
    c: an.Cache[int, int] = an.Cache(on_evict=lambda k, v, r: got.append((k, r)))
    for i in range(100):
        c[i] = i
    c.clear()
    assert sorted(k for k, _ in got) == list(range(100))
    assert {r for _, r in got} == {"clear"}


def test_reinserting_callback_cannot_make_clear_trim_or_expire_loop() -> None:
    """A write-back style on_evict that puts every evicted entry back used to
    keep clear() (and trim/expire) evicting for ever: each does one pass."""
    now = [1.0]
    c: an.Cache[int, int] = an.Cache(ttl=1e-300, timer=lambda: now[0])
    calls: list[str] = []

    def put_back(key: int, value: int, reason: str) -> None:
        calls.append(reason)
        if len(calls) < 10_000:  # a bound so that the old behaviour fails, not hangs
            c.set(key, value, ttl=1e-300 if reason == "ttl" else 60.0)

    c.on_evict = put_back
    for i in range(3):
        c.set(i, i, ttl=60.0)
    c.clear()
    assert calls == ["clear"] * 3 and sorted(c) == [0, 1, 2]
    calls.clear()
    assert c.trim(max_bytes=0) > 0
    assert calls == ["trim"] * 3 and len(c) == 3
    calls.clear()
    c.on_evict = None
    c.clear()
    now[0] = 0.0
    for i in range(3):
        c.set(i, i)
    now[0] = 1.0  # now + 1e-300 == now: what put_back stores is expired at once
    c.on_evict = put_back
    with warnings.catch_warnings():
        # each put_back's set() purges the entry the previous one stored: a
        # recursion that ends in a RecursionError, reported as a warning
        warnings.simplefilter("ignore", an.CacheCallbackWarning)
        assert c.expire() == 3
    assert 3 <= len(calls) < 10_000 and set(calls) == {"ttl"}
    c.on_evict = None
    c.clear()
    assert len(c) == 0 and c.stats().bytes == 0


# ---- hostile keys ------------------------------------------------------------------------


class RaisingHash:
    def __hash__(self) -> int:
        raise RuntimeError("no hash")


class RaisingEq:
    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")


def test_unhashable_and_raising_keys() -> None:
    c: an.Cache[Any, int] = an.Cache()
    with pytest.raises(TypeError):
        c[[1, 2]] = 1
    with pytest.raises(TypeError):
        c.get([1])
    with pytest.raises(TypeError):
        [1] in c  # noqa: B015
    with pytest.raises(RuntimeError, match="no hash"):
        c[RaisingHash()] = 1
    a, b = RaisingEq(), RaisingEq()
    c[a] = 1  # no collision yet: no __eq__ call
    assert c[a] == 1  # identity wins
    with pytest.raises(RuntimeError, match="no eq"):
        c[b] = 2
    with pytest.raises(RuntimeError, match="no eq"):
        c.get(b)
    assert len(c) == 1 and c.stats().bytes == sys.getsizeof(1)


class Mutator:
    """A key whose __eq__ mutates the cache it lives in."""

    cache: an.Cache[Any, Any]

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 1  # all collide: every lookup runs __eq__

    def __eq__(self, other: object) -> bool:
        c = Mutator.cache
        c[("side", random.random())] = self.n
        if len(c) > 3:
            c.popitem()
        c.get(("side", 0.5))
        return isinstance(other, Mutator) and other.n == self.n


def test_eq_that_mutates_the_cache_does_not_corrupt() -> None:
    random.seed(1)
    c: an.Cache[Any, Any] = an.Cache(max_items=8, sizeof=lambda v: 1)
    Mutator.cache = c
    for i in range(300):
        k = Mutator(i % 5)
        c[k] = i
        c.get(Mutator((i + 1) % 5))
        _ = Mutator(i % 3) in c
        c.pop(Mutator(i % 4), None)
        if i % 7 == 0:
            c.touch(Mutator(i % 2))
        items = c._items()
        s = c.stats()
        assert s.items == len(items) == len(c) <= 8
        assert s.bytes == len(items)  # sizeof is 1 each: accounting matches the list
    c.clear()
    assert len(c) == 0 and c.stats().bytes == 0


def test_store_racing_a_store_of_the_same_key_leaves_one_entry() -> None:
    # The timer (like sizeof, or a finalizer run by a GC pass) is Python code
    # that runs in the middle of set(): here it stores the same key itself, as
    # another thread could at that moment.  The outer set must replace that
    # entry, not leave it linked but unreachable by its key.
    armed = [True]
    cache: an.Cache[str, bytes]

    def timer() -> float:
        if armed[0]:
            armed[0] = False
            cache.set("k", b"inner")
        return 0.0

    cache = an.Cache(max_items=10, ttl=5, timer=timer)
    cache.set("k", b"outer")
    assert len(cache) == 1 and list(cache) == ["k"]
    assert cache["k"] == b"outer" and cache.stats().bytes == len(b"outer")
    del cache["k"]
    assert len(cache) == 0 and cache.stats().bytes == 0


def test_cycles_are_collected() -> None:
    class Node:
        pass

    c: an.Cache[str, Any] = an.Cache()
    n = Node()
    n.cache = c  # type: ignore[attr-defined]
    c["self"] = n
    c["c"] = c
    ref = weakref.ref(c)
    del c, n
    gc.collect()
    assert ref() is None


# ---- threads ------------------------------------------------------------------------------


def _stress(threads: int, ops: int) -> None:
    import time

    frozen: list[float] = []  # real time during the run, frozen for the final checks

    def timer() -> float:
        return frozen[0] if frozen else time.monotonic()

    c: an.Cache[int, bytes] = an.Cache(max_items=200, max_bytes=20_000, ttl=0.05, timer=timer)
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(ops):
                k = rng.randrange(400)
                op = rng.random()
                if op < 0.45:
                    v = c.get(k)
                    assert v is None or v == bytes([k % 256]) * len(v)
                elif op < 0.85:
                    c.set(k, bytes([k % 256]) * rng.randrange(1, 200), ttl=rng.choice([None, 0.01]))
                elif op < 0.92:
                    c.pop(k, None)
                elif op < 0.96:
                    k in c  # noqa: B015
                elif op < 0.99:
                    c.touch(k)
                else:
                    c.expire()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[0]
    frozen.append(time.monotonic())
    items = c._items()
    keys = [k for k, _ in items]
    assert len(keys) == len(set(keys)) == len(c) <= 200  # no duplicates, bound kept
    s = c.stats()
    assert s.bytes == sum(len(v) for _, v in items) <= 20_000  # exact accounting
    for k in keys:
        assert c.peek(k) is not None  # every listed entry is reachable by its key


def test_threads_keep_invariants() -> None:
    _stress(16, 3_000)


@pytest.mark.slow
def test_threads_keep_invariants_100k() -> None:
    _stress(16, 100_000)


# ---- keys with a Python __eq__ racing in threads ------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlowKey:
    """A dataclass key whose __eq__ yields the GIL: every dict update of an
    equal key is a window in which another thread runs."""

    n: int

    def __eq__(self, other: object) -> bool:
        time.sleep(0)
        return isinstance(other, SlowKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


def _check_exact(c: an.Cache[Any, Any], sizeof: Any = sys.getsizeof) -> None:
    """The invariants that a lost or duplicate entry breaks."""
    items = c._items()
    keys = [k for k, _ in items]
    assert len(keys) == len({k.n if isinstance(k, SlowKey) else k for k in keys}), keys
    assert len(c) == len(keys) == c.stats().items
    assert c.stats().bytes == sum(sizeof(v) for _, v in items)
    for k, v in items:
        assert c.peek(k, _ABSENT) is v  # reachable by its key, with the listed value
    if c.max_items is not None:
        assert len(keys) <= c.max_items


_ABSENT = object()


def _run_threads(threads: int, work: Any) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[0]


def test_threads_setting_keys_with_python_eq_leave_one_entry_per_key() -> None:
    # The review's repro: 8 threads storing 8 dataclass keys left len(cache) == 245.
    c: an.Cache[SlowKey, int] = an.Cache()
    keys = [SlowKey(i) for i in range(8)]

    def work(i: int) -> None:
        for j in range(3_000):
            c.set(SlowKey(j % 8), i * 100_000 + j)  # a new but equal key object each time

    _run_threads(8, work)
    _check_exact(c)
    assert sorted(k.n for k in c) == list(range(8))
    for k in keys:
        del c[k]
    assert len(c) == 0 and c.stats().bytes == 0 and c._items() == []


def _mixed_ops(c: an.Cache[Any, Any], seed: int, ops: int, nkeys: int) -> None:
    rng = random.Random(seed)
    for _ in range(ops):
        k = SlowKey(rng.randrange(nkeys))
        op = rng.random()
        v = bytes(rng.randrange(1, 64))
        if op < 0.30:
            c.set(k, v)
        elif op < 0.45:
            got = c.get(k)
            assert got is None or isinstance(got, bytes)
        elif op < 0.60:
            c.pop(k, None)
        elif op < 0.72:
            assert isinstance(c.setdefault(k, v), bytes)
        elif op < 0.84:
            assert isinstance(c.get_or_set(k, functools.partial(bytes, v)), bytes)
        elif op < 0.90:
            c[k] = v
        elif op < 0.94:
            try:
                c.popitem()
            except KeyError:
                pass
        elif op < 0.97:
            try:
                del c[k]
            except KeyError:
                pass
        else:
            c.touch(k)


@pytest.mark.parametrize("bounded", [False, True])
def test_threads_mixed_ops_with_python_eq_keep_exact_invariants(bounded: bool) -> None:
    evicted: list[Any] = []
    c: an.Cache[Any, Any] = an.Cache(
        max_items=6 if bounded else None,
        on_evict=(lambda k, v, r: evicted.append(k)) if bounded else None,
    )
    _run_threads(12, lambda i: _mixed_ops(c, i, 1_500, 10))
    _check_exact(c, len)  # the default sizeof of bytes is their length
    c.clear()
    assert len(c) == 0 and c.stats().bytes == 0 and c._items() == []


def test_setdefault_is_atomic_and_counts_like_get() -> None:
    c: an.Cache[str, int | None] = an.Cache(max_items=2)
    assert c.setdefault("a", 1) == 1
    assert c.setdefault("a", 2) == 1
    assert c.setdefault("n") is None and "n" in c
    s = c.stats()
    assert (s.hits, s.misses, s.items) == (1, 2, 2)
    c.setdefault("b", 3)  # evicts the LRU, "a"
    assert "a" not in c and c["b"] == 3
    with pytest.raises(TypeError):
        c.setdefault([1], 1)  # type: ignore[call-overload]
    winners: list[int] = []
    c2: an.Cache[SlowKey, int] = an.Cache()
    _run_threads(8, lambda i: winners.append(c2.setdefault(SlowKey(0), i)))
    assert len(set(winners)) == 1 and c2[SlowKey(0)] == winners[0]  # one value, seen by all


def test_key_eq_storing_the_key_it_is_being_removed_for_raises_not_hangs() -> None:
    # The dict removal of a popped entry runs the colliding key's __eq__, which
    # stores the very key being removed: that cannot wait for itself.
    c: an.Cache[Any, int] = an.Cache()
    outcome: list[BaseException | None] = []

    class Reenter:
        armed = False

        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            if Reenter.armed:
                Reenter.armed = False
                if c.peek(target, None) is not None:  # still the lookup of pop(): wait
                    Reenter.armed = True
                else:  # the removal from the dict of the entry pop() took
                    try:
                        c[target] = 2
                        outcome.append(None)
                    except RuntimeError as exc:
                        outcome.append(exc)
            return self is other

    other, target = Reenter(), Reenter()
    c[other] = 0
    c[target] = 1
    Reenter.armed = True
    assert c.pop(target) == 1  # its removal compares it with `other`
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError) and "re-entered" in str(outcome[0])
    assert target not in c and len(c) == 1
    _check_exact(c)
    c[target] = 3  # usable again
    assert c[target] == 3 and len(c) == 2


@pytest.mark.slow
def test_threads_mixed_ops_with_python_eq_100k() -> None:
    c: an.Cache[Any, Any] = an.Cache(max_items=40, max_bytes=1_500, sizeof=len)
    _run_threads(16, lambda i: _mixed_ops(c, i, 100_000, 64))
    _check_exact(c, len)
    assert c.stats().bytes <= 1_500


@dataclasses.dataclass(frozen=True)
class _PyKey:
    n: int


def test_recycled_entries_and_mixed_key_kinds_stay_consistent() -> None:
    """Evicted/popped entries are reused for new keys, and a cache that first
    held only C keys (str/int) then a Python-__eq__ key switches to checked
    dict removal: every key stays reachable, values never leak across keys."""
    c: an.Cache[Any, Any] = an.Cache(max_items=50, ttl=600.0)
    ref: OrderedDict[Any, Any] = OrderedDict()
    rng = random.Random(7)
    for i in range(3000):
        kind = rng.random()
        k: Any = (f"s{rng.randrange(120)}" if kind < 0.4 else rng.randrange(120)
                  if kind < 0.8 or i < 1500 else _PyKey(rng.randrange(120)))
        if rng.random() < 0.2:
            assert c.pop(k, None) == ref.pop(k, None)
        else:
            v = object()
            c[k] = v
            ref[k] = v
            ref.move_to_end(k)
            while len(ref) > 50:
                ref.popitem(last=False)
        assert len(c) == len(ref)
    assert list(c._keys()) == list(ref)
    assert all(c.peek(k) is v for k, v in ref.items())
    gc.collect()
    assert list(c._keys()) == list(ref)
