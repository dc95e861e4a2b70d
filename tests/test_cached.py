"""@cached: keys, methods, coroutines, single-flight under real thread and task
bursts, exception delivery, re-entrancy and the generic cache protocol."""

from __future__ import annotations

import asyncio
import functools
import pickle
import threading
import time
from typing import Any

import pytest

import amulet_native as an
from amulet_native import _core


def test_keys_like_functools() -> None:
    calls: list[Any] = []

    @an.cached
    def f(*args: Any, **kwargs: Any) -> int:
        calls.append((args, kwargs))
        return len(calls)

    assert f(1, 2) == f(1, 2) == 1
    assert f(1, b=2, a=1) == f(1, a=1, b=2) == 2  # kwargs sorted
    assert f(1) == 3 and f(1.0) == 3 and f(True) == 3  # untyped: 1 == 1.0 == True
    assert f("1") == 4
    assert f() == f() == 5
    assert f((1, 2)) == 6 and f(1, 2) == 1
    info = f.cache_info()
    assert info.misses == len(calls) == 6 and info.hits == 6
    assert info.maxsize == 128 and info.currsize == 6


def test_typed_distinguishes_int_and_float() -> None:
    @an.cached(typed=True)
    def f(x: Any, *, y: Any = 0) -> str:
        return type(x).__name__ + type(y).__name__

    assert f(1) == "intint" and f(1.0) == "floatint"
    assert f(1, y=1.0) == "intfloat" and f(1, y=1) == "intint"
    assert f.cache_info().currsize == 4


def test_make_key_matches_native_path() -> None:
    assert _core.make_key((1,), None, False) == 1
    assert _core.make_key(((1, 2),), None, False) == ((1, 2),)  # never collides with (1, 2)
    assert _core.make_key((1, 2), {"b": 1, "a": 2}, False) == _core.make_key(
        (1, 2), {"a": 2, "b": 1}, False
    )
    k = _core.make_key((1,), None, True)
    assert isinstance(k, tuple) and k[-1] is int


def test_user_key_function() -> None:
    @an.cached(key=lambda path, *, mode="RGB": path.lower())
    def load(path: str, *, mode: str = "RGB") -> str:
        return path + mode

    assert load("A.jpg") == "A.jpgRGB"
    assert load("a.JPG", mode="L") == "A.jpgRGB"  # same key by construction
    with pytest.raises(an.ValidationError):
        an.cached(key=42)  # type: ignore[call-overload]


def test_wraps_metadata_and_clear() -> None:
    def area(w: int, h: int) -> int:
        """Area of a box."""
        return w * h

    c = an.cached(max_items=10)(area)
    assert c.__name__ == "area" and c.__doc__ == "Area of a box."
    assert c.__wrapped__ is area
    assert c(2, 3) == 6 and c(2, 3) == 6
    assert isinstance(c.cache, an.Cache) and c.cache.max_items == 10
    c.cache_clear()
    assert c.cache_info() == an.cache.CacheInfo(0, 0, 10, 0)
    assert repr(c).startswith("<cached <function")


def test_methods_bind_self() -> None:
    class Box:
        computed = 0

        def __init__(self, k: int) -> None:
            self.k = k

        @an.cached(max_items=None)
        def scaled(self, x: int) -> int:
            Box.computed += 1
            return self.k * x

    a, b = Box(2), Box(3)
    assert a.scaled(5) == 10 and b.scaled(5) == 15 and a.scaled(5) == 10
    assert Box.computed == 2
    assert Box.scaled(a, 5) == 10 and Box.computed == 2
    assert Box.scaled.cache_info().maxsize is None


def test_ttl_and_given_cache() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    store: an.Cache[Any, Any] = an.Cache(timer=clock)
    n = [0]

    @an.cached(store, ttl=5)
    def f(x: int) -> int:
        n[0] += 1
        return x

    f(1), f(1)
    clock.now = 6
    f(1)
    assert n[0] == 2
    assert f.cache is store


def test_exceptions_not_cached_unless_asked() -> None:
    n = [0]

    @an.cached
    def fails(x: int) -> int:
        n[0] += 1
        raise KeyError(x)

    for _ in range(3):
        with pytest.raises(KeyError):
            fails(1)
    assert n[0] == 3

    m = [0]

    @an.cached(cache_exceptions=True)
    def fails_once(x: int) -> int:
        m[0] += 1
        raise ValueError(x)

    for _ in range(3):
        with pytest.raises(ValueError):
            fails_once(1)
    assert m[0] == 1 and fails_once.cache_info().hits == 2


def test_too_large_result_is_returned_uncached() -> None:
    @an.cached(an.Cache(max_bytes=10))
    def blob(n: int) -> bytes:
        return bytes(n)

    assert blob(100) == bytes(100) and blob(5) == bytes(5)
    assert len(blob.cache) == 1


def test_reentrant_call_raises() -> None:
    @an.cached
    def loop(x: int) -> int:
        return loop(x) if x else 0

    with pytest.raises(an.ReentrantCallError) as info:
        loop(1)
    assert info.value.code == "cache.reentrant" and isinstance(info.value, RuntimeError)
    assert info.value.context["function"].endswith("loop")
    assert pickle.loads(pickle.dumps(info.value)).code == "cache.reentrant"

    @an.cached
    def fib(n: int) -> int:  # recursion on other keys is fine
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(60) == 1548008755920


class Arrivals:
    """Counts the threads about to call; the computation waits for all of them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.lock = threading.Lock()
        self.all_in = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.count += 1
            if self.count == self.n:
                self.all_in.set()

    def wait_all(self) -> None:
        assert self.all_in.wait(10)
        time.sleep(0.05)  # the last arrival is a few instructions from its call


def _burst(
    fn: Any, threads: int, arg: Any, arrivals: Arrivals | None = None
) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        if arrivals is not None:
            arrivals.arrive()
        try:
            results.append(fn(arg))
        except BaseException as exc:  # noqa: BLE001 - the test inspects every outcome
            errors.append(exc)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return results, errors


def test_single_flight_threads(fast_switch: None) -> None:
    calls = [0]
    lock = threading.Lock()
    arrivals = Arrivals(32)

    @an.cached
    def slow(x: int) -> list[int]:
        with lock:
            calls[0] += 1
        arrivals.wait_all()
        return [x]

    results, errors = _burst(slow, 32, 7, arrivals)
    assert not errors and calls[0] == 1
    assert len(results) == 32 and all(r is results[0] for r in results)
    info = slow.cache_info()
    assert info.hits + info.misses == 32


def test_single_flight_exception_reaches_all_waiters(fast_switch: None) -> None:
    calls = [0]
    arrivals = Arrivals(32)

    @an.cached
    def bad(x: int) -> int:
        calls[0] += 1
        arrivals.wait_all()
        raise ValueError("broken upstream")

    results, errors = _burst(bad, 32, 1, arrivals)
    assert not results and len(errors) == 32
    assert all(isinstance(e, ValueError) for e in errors)
    assert calls[0] == 1  # one computation, its exception delivered to every waiter
    assert len(bad.cache) == 0


def test_waiters_are_interruptible() -> None:
    """A thread waiting on another's flight wakes up in short slices: a signal
    (here: the owner finishing) is noticed without a long block."""
    started = threading.Event()
    release = threading.Event()

    @an.cached
    def held(x: int) -> int:
        started.set()
        release.wait(5)
        return x

    owner = threading.Thread(target=held, args=(1,))
    owner.start()
    started.wait(5)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(held(1)))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # waiting, GIL released (we are running)
    release.set()
    owner.join(5)
    waiter.join(5)
    assert got == [1]


def test_async_single_flight_and_hits() -> None:
    calls = [0]

    @an.cached
    async def fetch(x: int) -> dict[str, int]:
        calls[0] += 1
        await asyncio.sleep(0.02)
        return {"x": x}

    async def main() -> list[dict[str, int]]:
        first = await asyncio.gather(*(fetch(3) for _ in range(32)))
        second = await asyncio.gather(*(fetch(3) for _ in range(4)))
        return first + second

    out = asyncio.run(main())
    assert calls[0] == 1 and all(r is out[0] for r in out)
    assert fetch.cache_info().hits >= 4
    assert fetch.__name__ == "fetch"


def test_async_exceptions_and_reentrancy() -> None:
    calls = [0]

    @an.cached
    async def bad(x: int) -> int:
        calls[0] += 1
        await asyncio.sleep(0.01)
        raise LookupError(x)

    @an.cached
    async def rec(x: int) -> int:
        return await rec(x)

    async def main() -> None:
        res = await asyncio.gather(*(bad(1) for _ in range(32)), return_exceptions=True)
        assert all(isinstance(r, LookupError) for r in res)
        assert calls[0] == 1
        with pytest.raises(an.ReentrantCallError):
            await rec(1)

    asyncio.run(main())


def test_async_cancelled_owner_lets_waiters_retry() -> None:
    calls = [0]

    @an.cached
    async def work(x: int) -> int:
        calls[0] += 1
        await asyncio.sleep(0.05)
        return x

    async def main() -> None:
        owner = asyncio.ensure_future(work(1))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(work(1))
        await asyncio.sleep(0.01)
        owner.cancel()
        assert await waiter == 1

    asyncio.run(main())
    assert calls[0] == 2


class DictCache:
    """A generic cache object (the TieredCache protocol): get/set only."""

    def __init__(self) -> None:
        self.d: dict[Any, Any] = {}
        self.sets: list[tuple[Any, Any]] = []

    def get(self, key: Any, default: Any = None) -> Any:
        return self.d.get(key, default)

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        self.sets.append((key, ttl))
        self.d[key] = value

    def clear(self) -> None:
        self.d.clear()


class AsyncDictCache(DictCache):
    def __init__(self) -> None:
        super().__init__()
        self.async_calls = 0

    async def aget(self, key: Any, default: Any = None) -> Any:
        self.async_calls += 1
        return self.d.get(key, default)

    async def aset(self, key: Any, value: Any, ttl: float | None = None) -> None:
        self.async_calls += 1
        self.set(key, value, ttl)


def test_generic_cache_protocol(fast_switch: None) -> None:
    store = DictCache()
    n = [0]

    @an.cached(store, ttl=9)
    def f(x: int) -> int:
        n[0] += 1
        time.sleep(0.02)
        return x * 2

    results, errors = _burst(f, 16, 4)
    assert not errors and results == [8] * 16 and n[0] == 1
    assert store.sets == [(4, 9)]
    assert f.cache_info().currsize == 0  # DictCache has no __len__
    assert f(4) == 8 and f.cache_info().hits >= 1

    astore = AsyncDictCache()

    @an.cached(astore)
    async def g(x: int) -> int:
        return x + 1

    async def main() -> None:
        assert await g(1) == 2 and await g(1) == 2

    asyncio.run(main())
    assert astore.async_calls >= 3 and astore.sets == [(1, None)]
    with pytest.raises(an.ValidationError):
        an.cached(object())


class AsyncOnlyCache:
    """Only the coroutine protocol, like AsyncTieredCache."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    async def aget(self, key: Any, default: Any = None) -> Any:
        await asyncio.sleep(0)
        return self.data.get(key, default)

    async def aset(self, key: Any, value: Any, ttl: float | None = None) -> None:
        await asyncio.sleep(0)
        self.data[key] = value


def test_async_only_cache_serves_coroutines() -> None:
    """A cache with only aget/aset (AsyncTieredCache) was refused by cached()
    although its docstring promises @cached(cache=tc) on async def functions."""
    store = AsyncOnlyCache()
    calls: list[int] = []

    @an.cached(cache=store)
    async def square(x: int) -> int:
        calls.append(x)
        await asyncio.sleep(0.01)
        return x * x

    async def main() -> list[int]:
        return await asyncio.gather(*(square(5) for _ in range(32)))

    assert asyncio.run(main()) == [25] * 32 and calls == [5] and store.data == {5: 25}
    assert asyncio.run(square(5)) == 25 and calls == [5]
    info = square.cache_info()
    assert (info.hits, info.misses) == (1, 32)
    with pytest.raises(TypeError, match="aclear"):
        square.cache_clear()
    with pytest.raises(an.ValidationError) as refused:
        an.cached(cache=store)(lambda x: x)  # a plain function needs get/set
    assert refused.value.code == "validation"


def test_cached_wrapper_is_collectable() -> None:
    import gc
    import weakref

    def f(x: int) -> int:
        return x

    c = an.cached(f)
    c(1)
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None


def test_native_hit_path_agrees_with_functools() -> None:
    """Same results and the same hit/miss counts as functools.lru_cache."""
    ref = functools.lru_cache(maxsize=None)(lambda a, b=0: (a, b))
    mine = an.cached(max_items=None)(lambda a, b=0: (a, b))
    for _ in range(2):
        for i in range(300):
            for args in ((i,), (i, i), (str(i),)):
                assert mine(*args) == ref(*args)
            assert mine(i, b=1) == ref(i, b=1)
    assert mine.cache_info().misses == ref.cache_info().misses == 1200
    assert mine.cache_info().hits == ref.cache_info().hits == 1200
