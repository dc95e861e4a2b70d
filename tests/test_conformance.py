"""Drop-in conformance with the standard library.

``@cached(max_items=...)`` against ``functools.lru_cache(maxsize=...)`` and
``ThreadSafeQueue`` against ``queue.Queue``: each behaviour users rely on is
checked on both, side by side, so a test fails if ours drifts from the
standard library's (or the standard library changes).  The deliberate
differences (single-flight, ReentrantCallError, keyword order) are tested in
tests/test_cached.py and documented in ``cached``'s docstring.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import functools
import pickle
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import amulet_native as an
from amulet_native import _core

# ---- module-level cached callables (pickled by reference) ---------------------------


@an.cached(max_items=16)
def square(x: int) -> int:
    """Square of x."""
    return x * x


@functools.lru_cache(maxsize=16)
def std_square(x: int) -> int:
    """Square of x."""
    return x * x


@an.cached
async def async_square(x: int) -> int:
    return x * x


class Shapes:
    @an.cached(max_items=4)
    def area(self, w: int, h: int) -> int:
        return w * h

    @staticmethod
    @an.cached(max_items=4)
    def unit(n: int) -> int:
        return n

    @classmethod
    def make(cls) -> Shapes:
        return cls()


# ---- max_items=0 and negative ---------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, -100])
def test_max_items_zero_or_negative_caches_nothing_like_lru_cache(size: int) -> None:
    ours_calls: list[int] = []
    std_calls: list[int] = []

    @an.cached(max_items=size)
    def ours(x: int) -> int:
        ours_calls.append(x)
        return x + 1

    @functools.lru_cache(maxsize=size)
    def std(x: int) -> int:
        std_calls.append(x)
        return x + 1

    for f in (ours, std):
        assert [f(1), f(1), f(2)] == [2, 2, 3]
    assert ours_calls == std_calls == [1, 1, 2]  # every call computes
    std_info = std.cache_info()
    info = ours.cache_info()
    assert (info.hits, info.misses, info.maxsize, info.currsize) == tuple(std_info)
    assert tuple(info) == (0, 3, 0, 0)


def test_max_items_zero_accepts_unhashable_arguments_like_lru_cache() -> None:
    @an.cached(max_items=0)
    def total(xs: list[int]) -> int:
        return sum(xs)

    assert functools.lru_cache(maxsize=0)(sum)([1, 2]) == 3  # type: ignore[arg-type]
    assert total([1, 2]) == 3 and total([1, 2]) == 3
    assert total.cache_info().misses == 2


def test_max_items_zero_computes_concurrent_calls_each() -> None:
    """No cache, no single flight: two threads computing the same key both run."""
    inside = threading.Barrier(2, timeout=10)

    @an.cached(max_items=0)
    def slow(x: int) -> int:
        inside.wait()  # both callers must be inside at once, or this times out
        return x

    out: list[int] = []
    threads = [threading.Thread(target=lambda: out.append(slow(7))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert out == [7, 7]


def test_async_max_items_zero_caches_nothing() -> None:
    calls = [0]

    @an.cached(max_items=0)
    async def f(x: int) -> int:
        calls[0] += 1
        return x

    async def main() -> None:
        assert await f(1) == 1 and await f(1) == 1

    asyncio.run(main())
    assert calls[0] == 2
    assert tuple(f.cache_info()) == (0, 2, 0, 0)


def test_cache_parameters_like_lru_cache() -> None:
    for size, typed in ((16, False), (None, True), (0, False)):
        std = functools.lru_cache(maxsize=size, typed=typed)(lambda x: x)
        ours = an.cached(max_items=size, typed=typed)(lambda x: x)
        params = ours.cache_parameters()
        for k, v in std.cache_parameters().items():
            assert params[k] == v, (k, params)
    assert an.cached(max_items=-5)(len).cache_parameters()["maxsize"] == 0
    assert an.cached(ttl=30)(len).cache_parameters()["ttl"] == 30

    async def coro(x: int) -> int:
        return x

    assert an.cached(max_items=3)(coro).cache_parameters()["maxsize"] == 3


# ---- pickle and copy by reference --------------------------------------------------


@pytest.mark.parametrize(
    "get",
    [
        lambda: square,
        lambda: async_square,
        lambda: Shapes.area,
        lambda: Shapes.unit,
        lambda: std_square,  # the reference behaviour
    ],
    ids=["function", "coroutine", "method", "staticmethod", "lru_cache"],
)
def test_pickles_by_reference_and_copies_to_itself(get: Callable[[], Any]) -> None:
    f = get()
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(f, protocol)) is f
    assert copy.copy(f) is f
    assert copy.deepcopy(f) is f
    assert copy.deepcopy({"f": [f]})["f"][0] is f


def test_pickled_reference_keeps_the_cache() -> None:
    square.cache_clear()
    square(12)
    back = pickle.loads(pickle.dumps(square))
    assert back(12) == 144 and back.cache_info().hits == 1


def test_bound_cached_method_pickles_with_its_instance() -> None:
    s = Shapes()
    back = pickle.loads(pickle.dumps(s.area))
    assert back(2, 3) == 6
    assert type(back.__self__) is Shapes


def test_local_cached_function_refuses_to_pickle_like_lru_cache() -> None:
    @an.cached
    def local(x: int) -> int:
        return x

    @functools.lru_cache
    def std_local(x: int) -> int:
        return x

    for f in (std_local, local):
        with pytest.raises((pickle.PicklingError, AttributeError)):
            pickle.dumps(f)


# ---- hashing -----------------------------------------------------------------------


class CountingKey:
    """A key whose __hash__ is expensive in real code: count the calls."""

    hashes = 0

    def __init__(self, v: int) -> None:
        self.v = v

    def __hash__(self) -> int:
        CountingKey.hashes += 1
        return hash(self.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountingKey) and other.v == self.v


@pytest.fixture
def counting() -> Iterator[type[CountingKey]]:
    CountingKey.hashes = 0
    yield CountingKey


def _hashes_per_call(f: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    before = CountingKey.hashes
    f(*args, **kwargs)
    return CountingKey.hashes - before


@pytest.mark.parametrize(
    "call",
    [
        lambda f, K: f(K(1)),  # a lone argument
        lambda f, K: f(K(1), 2),  # positional
        lambda f, K: f(1, y=K(1)),  # keyword
    ],
    ids=["lone", "positional", "keyword"],
)
@pytest.mark.parametrize("typed", [False, True])
def test_key_hash_is_computed_once_per_call(
    counting: type[CountingKey], call: Callable[..., Any], typed: bool
) -> None:
    def body(x: Any, y: Any = None) -> int:
        return 1

    ours = an.cached(max_items=8, typed=typed)(body)
    std = functools.lru_cache(maxsize=8, typed=typed)(body)
    for f in (std, ours):
        assert _hashes_per_call(call, f, counting) == 1  # the miss
        assert _hashes_per_call(call, f, counting) == 1  # the hit (an equal, new key)


def test_key_hash_is_computed_once_with_evictions_and_a_key_function(
    counting: type[CountingKey],
) -> None:
    f = an.cached(max_items=2, key=lambda k: (k, "v1"))(lambda k: k.v)
    for i in range(6):  # misses that evict
        assert _hashes_per_call(f, counting(i)) == 1
    assert _hashes_per_call(f, counting(5)) == 1  # hit


def test_key_hash_is_computed_once_per_async_call(counting: type[CountingKey]) -> None:
    @an.cached(max_items=4)
    async def f(k: CountingKey) -> int:
        return k.v

    async def main() -> list[int]:
        out = []
        for _ in range(2):
            before = CountingKey.hashes
            await f(counting(3))
            out.append(CountingKey.hashes - before)
        return out

    assert asyncio.run(main()) == [1, 1]


class CountingEq(CountingKey):
    eqs = 0

    def __eq__(self, other: object) -> bool:
        CountingEq.eqs += 1
        return super().__eq__(other)

    __hash__ = CountingKey.__hash__


def test_a_hit_with_the_same_object_runs_no_eq_like_lru_cache() -> None:
    def body(x: Any, y: int = 0) -> int:
        return 1

    k = CountingEq(4)
    for f in (functools.lru_cache(8)(body), an.cached(max_items=8)(body)):
        for args in ((k,), (k, 1)):
            f(*args)
            before = CountingEq.eqs
            f(*args)
            assert CountingEq.eqs == before, f  # identity: no __eq__ call


def test_wrapped_keys_still_find_their_entries(counting: type[CountingKey]) -> None:
    f = an.cached(max_items=4)(lambda k: k.v)
    f(counting(1))
    assert counting(1) in f.cache  # the cache's key equals (and hashes as) the argument
    assert f(counting(1)) == 1 and f.cache_info().hits == 1


# ---- no builtins looked up at call time ---------------------------------------------

PATCHED = ("len", "type", "isinstance", "getattr", "hasattr", "object", "id", "hash",
           "callable", "iter", "next", "repr", "tuple", "dict", "sorted", "super")


class BrokenBuiltins:
    """Replaces common builtins with a function that raises, and puts them back."""

    def __init__(self) -> None:
        self.saved = {name: getattr(builtins, name) for name in PATCHED}

    @staticmethod
    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("a builtin was looked up at call time")

    def patch(self) -> None:
        for name in PATCHED:
            setattr(builtins, name, self.boom)

    def restore(self) -> None:
        for name, value in self.saved.items():
            setattr(builtins, name, value)


def test_no_builtin_is_looked_up_on_the_cached_path() -> None:
    @an.cached(max_items=2)
    def f(x: Any, y: int = 0) -> Any:
        return x

    g = an.cached(max_items=0)(f.__wrapped__)
    key = ("a", 1)
    results: list[Any] = []
    broken = BrokenBuiltins()
    broken.patch()
    try:
        results.append(f(key))  # miss
        results.append(f(key))  # hit
        results.append(f(1, y=2))  # keyword miss
        results.append(f(2))
        results.append(f(3))  # eviction
        results.append(g(5))  # no-cache mode
    except BaseException as e:  # noqa: BLE001 - reported after the builtins are back
        results.append(e)
    finally:
        broken.restore()
    assert results == [key, key, 1, 2, 3, 5]


def test_no_builtin_is_looked_up_on_the_async_cached_path() -> None:
    @an.cached(max_items=2)
    async def f(x: Any) -> Any:
        return x  # never suspends: the whole call runs inside the patched window

    async def main() -> list[Any]:
        results: list[Any] = []
        await f(0)  # the loop's bookkeeping (WeakKeyDictionary entry) made once
        broken = BrokenBuiltins()
        broken.patch()
        try:
            results.append(await f(("a", 1)))  # miss
            results.append(await f(("a", 1)))  # hit
            results.append(await f(2))  # miss, evicts
        except BaseException as e:  # noqa: BLE001 - reported after the builtins are back
            results.append(e)
        finally:
            broken.restore()
        return results

    assert asyncio.run(main()) == [("a", 1), ("a", 1), 2]


def test_the_builtins_check_can_fail() -> None:
    """The check above would see a builtin used on the path: here, by the key."""
    f = an.cached(max_items=2, key=lambda x: len(x))(lambda x: x)
    broken = BrokenBuiltins()
    broken.patch()
    try:
        f("abc")
    except AssertionError as e:
        err: Exception | None = e
    else:
        err = None
    finally:
        broken.restore()
    assert err is not None


# ---- weak references and functools attributes -----------------------------------------


def test_weak_referenceable() -> None:
    def f(x: int) -> int:
        return x

    c = an.cached(f)
    r = weakref.ref(c)
    assert r() is c
    del c
    import gc

    gc.collect()
    assert r() is None
    assert weakref.ref(square)() is square
    assert weakref.ref(async_square)() is async_square


def test_wrapper_attributes_match_functools() -> None:
    def area(w: int, h: int) -> int:
        """Area."""
        return w * h

    area.__dict__["tag"] = "kept"
    std = functools.lru_cache(area)
    ours = an.cached(area)
    for attr in functools.WRAPPER_ASSIGNMENTS:
        assert getattr(ours, attr) == getattr(std, attr), attr
    assert ours.__wrapped__ is area and std.__wrapped__ is area
    assert ours.tag == std.tag == "kept"  # type: ignore[attr-defined]
    assert square.__module__ == __name__ and square.__qualname__ == "square"
    assert Shapes.area.__qualname__ == "Shapes.area"
    assert square.__doc__ == std_square.__doc__ == "Square of x."


# ---- ThreadSafeQueue.maxsize writable like queue.Queue.maxsize ------------------------


def both(maxsize: int) -> list[Any]:  # queue.Queue and ours, same calls
    return [queue.Queue(maxsize=maxsize), an.ThreadSafeQueue(maxsize=maxsize)]


def test_maxsize_is_writable_and_read_back() -> None:
    q: Any
    for q in both(2):
        q.maxsize = 5
        assert q.maxsize == 5
        q.maxsize = 0
        assert q.maxsize == 0


def test_shrinking_maxsize_refuses_puts_until_drained() -> None:
    q: Any
    for q in both(0):
        for i in range(4):
            q.put(i)
        q.maxsize = 2
        assert q.full()
        with pytest.raises(queue.Full):
            q.put_nowait(9)
        with pytest.raises(queue.Full):
            q.put(9, timeout=0.01)
        assert q.get() == 0 and q.get() == 1
        assert q.full()  # 2 left: still at the new bound
        with pytest.raises(queue.Full):
            q.put_nowait(9)
        q.get()
        q.put_nowait(9)
        assert q.qsize() == 2


def test_growing_maxsize_wakes_a_blocked_putter() -> None:
    for q in both(1):
        q.put("a")
        done = threading.Event()

        def putter(q: Any = q, done: threading.Event = done) -> None:
            q.put("b", timeout=10)
            done.set()

        t = threading.Thread(target=putter)
        t.start()
        time.sleep(0.05)
        assert not done.is_set()  # blocked: the queue is full
        if isinstance(q, queue.Queue):
            with q.mutex:  # queue.Queue needs a notify for a changed bound
                q.maxsize = 2
                q.not_full.notify_all()
        else:
            q.maxsize = 2  # ours wakes the putters itself
        assert done.wait(10)
        t.join(10)
        assert q.qsize() == 2


def test_growing_maxsize_wakes_an_async_putter() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
    q.put(0)

    async def main() -> None:
        task = asyncio.ensure_future(q.aput(1, timeout=10))
        await asyncio.sleep(0.05)
        assert not task.done()
        q.maxsize = 0  # unbounded now
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert q.qsize() == 2


def test_maxsize_rejects_non_ints() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    with pytest.raises(TypeError):
        q.maxsize = 1.5  # type: ignore[assignment]
    with pytest.raises(TypeError):
        del q.maxsize
    q.maxsize = -3  # <= 0: unbounded, as queue.Queue
    for i in range(10):
        q.put_nowait(i)


def test_core_types_expose_the_same_names() -> None:
    assert _core.ThreadSafeQueue is an.ThreadSafeQueue
