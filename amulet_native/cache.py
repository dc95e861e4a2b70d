"""Native caches: :class:`Cache`, the :func:`cached` decorator and :class:`ImageCache`.

:class:`Cache` is a thread-safe ``MutableMapping`` with LRU eviction, a per-item
time to live and a byte budget, implemented in C (``csrc/core/cache/cache_store.c``
and ``csrc/py/cache/cache.c``): every operation is O(1) (O(log n) for entries with a
TTL).  :func:`cached` memoises plain functions, methods and coroutines with
single-flight misses, and :class:`ImageCache` caches decoded images by content
digest, handing out read-only zero-copy arrays.

>>> cache: Cache[str, bytes] = Cache(max_items=1000, max_bytes=64 << 20, ttl=300)
>>> cache["user:1"] = b"..."
>>> cache.get("user:1")
b'...'
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import time
import weakref
from _thread import allocate_lock as _allocate_lock
from _thread import get_ident as _get_ident
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    ItemsView,
    Iterator,
    MutableMapping,
    ValuesView,
)
from typing import Any, NamedTuple, Protocol, TypeVar, overload

import numpy as np
import numpy.typing as npt

from . import _core
from . import image as _image
from .errors import ReentrantCallError, ValidationError

__all__ = ["Cache", "CacheInfo", "CacheStats", "ImageCache", "cached"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_MISSING: Any = object()

# The call path of @cached looks up no builtin at call time (a program may
# replace builtins.len & co, as functools guards against): these are bound once.
_object = object
_type = type
_getattr = getattr
_HashedKey = _core._HashedKey

#: The reasons passed to ``on_evict(key, value, reason)``; a stable set.
EVICT_REASONS = ("lru", "size", "ttl", "resize", "trim", "clear")


class CacheStats(NamedTuple):
    """Counters of a :class:`Cache` (since creation or ``reset_stats()``)."""

    hits: int
    misses: int
    hit_rate: float  #: hits / (hits + misses); 0.0 before any lookup
    evictions: int  #: entries pushed out by max_items ("lru") or max_bytes ("size")
    expirations: int  #: entries removed because their TTL passed
    items: int
    bytes: int  #: sum of sizeof(value) over the live entries


class _ItemsView(ItemsView[K, V]):
    """items() over a snapshot: iterating touches neither LRU order nor stats."""

    _mapping: Cache[K, V]

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return iter(self._mapping._items())

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        value = self._mapping.peek(item[0], _MISSING)
        return value is not _MISSING and (value is item[1] or value == item[1])


class _ValuesView(ValuesView[V]):
    _mapping: Cache[Any, V]

    def __iter__(self) -> Iterator[V]:
        return iter(self._mapping._values())


def _restore(cls: type[Cache[Any, Any]], config: dict[str, Any], entries: Any) -> Cache[Any, Any]:
    cache = cls(**config)
    if entries is not None:
        cache.pickle_entries = True
        cache.load(entries)
    return cache


class Cache(_core.Cache[K, V], MutableMapping[K, V]):
    """A thread-safe LRU cache with TTL and a byte budget, native all the way.

    ``Cache(max_items=None, max_bytes=None, ttl=None, *, sizeof=None,
    timer=time.monotonic, on_evict=None)``

    * ``max_items``: evict the least recently used entries beyond this count.
    * ``max_bytes``: evict LRU entries while the sum of ``sizeof(value)`` is over
      this.  ``sizeof`` defaults to ``nbytes`` for NumPy arrays and other buffer
      objects (``len`` of bytes), ``sys.getsizeof`` otherwise.  A single value
      larger than ``max_bytes`` is refused: ``set``/``[]=`` raise
      :class:`ValidationError` with code ``"cache.too_large"`` and the cache
      (including any old value under that key) is left unchanged.
    * ``ttl``: default seconds to live (``set(key, value, ttl=...)`` per item).
      Expired entries are never returned.  Every operation (get, set, ``in``,
      ``len``, ...) first purges the entries whose deadline has passed, from a
      deadline heap (O(log n) each), so their memory is released promptly.  An
      idle cache purges nothing until it is used again: call ``expire()`` (e.g.
      from a periodic task) to purge an idle cache.
    * ``timer``: the clock of the TTLs (inject a fake one in tests).
    * ``on_evict(key, value, reason)``: called after the cache is consistent again,
      outside every internal critical section, for entries evicted with
      ``reason`` in ``"lru"``, ``"size"``, ``"ttl"``, ``"resize"``, ``"trim"``,
      ``"clear"`` (never for ``del``, ``pop`` or overwrites).  It may use the
      cache.  If it raises, a :class:`CacheCallbackWarning` is issued and the
      cache carries on.

    Iteration, ``keys()``, ``values()`` and ``items()`` work on a snapshot, least
    recently used first, and do not change LRU order or the stats.  ``get``,
    ``[]`` and ``touch`` mark an entry recently used; ``peek`` does not.

    ``pickle.dumps(cache)`` keeps the configuration only; set
    ``cache.pickle_entries = True`` to include the entries (their remaining TTL
    travels with them).  ``sizeof``, ``timer`` and ``on_evict`` must be picklable
    then (module-level functions).

    Keys may have Python ``__hash__``/``__eq__`` (dataclasses, tuples of them):
    concurrent stores and removals of equal keys leave exactly one entry per
    key.  ``setdefault`` is atomic.  A key whose ``__eq__`` stores a key that
    this same call is removing gets a ``RuntimeError`` instead of a hang.

    >>> c: Cache[str, int] = Cache(max_items=2)
    >>> c["a"] = 1; c["b"] = 2; c["c"] = 3
    >>> list(c)
    ['b', 'c']
    """

    __slots__ = ("_timer_fn",)

    def __init__(
        self,
        max_items: int | None = None,
        max_bytes: int | None = None,
        ttl: float | None = None,
        *,
        sizeof: Callable[[Any], int] | None = None,
        timer: Callable[[], float] = time.monotonic,
        on_evict: Callable[[Any, Any, str], object] | None = None,
    ) -> None:
        self._timer_fn = timer
        super().__init__(
            max_items,
            max_bytes,
            ttl,
            sizeof=sizeof,
            timer=None if timer is time.monotonic else timer,
            on_evict=on_evict,
        )

    @property
    def timer(self) -> Callable[[], float]:
        return self._timer_fn

    def stats(self) -> CacheStats:
        """Hits, misses, hit rate, evictions, expirations, items and bytes."""
        hits, misses, evictions, expirations, items, nbytes = self._stats()
        total = hits + misses
        return CacheStats(
            hits, misses, hits / total if total else 0.0, evictions, expirations, items, nbytes
        )

    def get_or_set(self, key: K, factory: Callable[[], V], *, ttl: float | None = None) -> V:
        """The value for key; on a miss, ``factory()`` is stored and returned.
        (Not single-flight: use :func:`cached` when concurrent misses must
        compute once.)"""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = factory()
            self.set(key, value, ttl=ttl)
        return value  # type: ignore[no-any-return]

    def load(self, entries: Any) -> None:
        """Stores the ``(key, value, ttl_left)`` triples of :meth:`dump`, in order."""
        for key, value, ttl in entries:
            self.set(key, value, ttl=ttl)

    def items(self) -> ItemsView[K, V]:
        return _ItemsView(self)

    def values(self) -> ValuesView[V]:
        return _ValuesView(self)

    def __reduce__(self) -> tuple[Any, ...]:
        config = {
            "max_items": self.max_items,
            "max_bytes": self.max_bytes,
            "ttl": self.ttl,
            "sizeof": self.sizeof,
            "timer": self._timer_fn,
            "on_evict": self.on_evict,
        }
        return (_restore, (type(self), config, self.dump() if self.pickle_entries else None))

    def __repr__(self) -> str:
        s = self.stats()
        bounds = ", ".join(
            f"{name}={value!r}"
            for name, value in (
                ("max_items", self.max_items),
                ("max_bytes", self.max_bytes),
                ("ttl", self.ttl),
            )
            if value is not None
        )
        return (
            f"{type(self).__name__}({bounds}) <items={s.items}, bytes={s.bytes}, "
            f"hit_rate={s.hit_rate:.1%}>"
        )

    __hash__ = None  # type: ignore[assignment]


# ---- @cached ------------------------------------------------------------------------


class CacheInfo(NamedTuple):
    """Like ``functools.lru_cache``'s ``cache_info()``."""

    hits: int
    misses: int
    maxsize: int | None
    currsize: int


class _CachedError:
    """What ``cache_exceptions=True`` stores: hits re-raise ``exc``."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Retry(Exception):
    """Tells waiters the owner was interrupted (not failed): try again."""


class _Flight:
    """One in-progress computation of a key.  ``done`` is a latch: the owner
    holds the lock until the flight ends (``finish``); each waiter takes it
    and hands it on at once.  ``Lock.acquire`` releases the GIL while it
    waits and runs signal handlers (Ctrl-C raises in the waiter)."""

    __slots__ = ("done", "error", "owner", "retry", "value")

    def __init__(self) -> None:
        self.done = _allocate_lock()
        self.done.acquire()
        self.owner = _get_ident()
        self.value: Any = None
        self.error: BaseException | None = None
        self.retry = False

    def finish(self) -> None:
        self.done.release()

    def wait(self) -> Any:
        done = self.done
        done.acquire()
        done.release()
        if self.retry:
            return _MISSING
        if self.error is not None:
            raise self.error
        return self.value


#: keys being computed by the current task (async re-entrancy detection)
_computing: contextvars.ContextVar[frozenset[Any]] = contextvars.ContextVar(
    "amulet_native_cached_computing", default=frozenset()
)


def _is_too_large(exc: ValidationError) -> bool:
    return exc.code == "cache.too_large"


class _Memo:
    """The slow path and the bookkeeping shared by the sync and async wrappers."""

    def __init__(
        self,
        func: Callable[..., Any],
        cache: Any,
        ttl: float | None,
        cache_exceptions: bool,
    ) -> None:
        self.func = func
        self.cache = cache
        self.ttl = ttl
        self.cache_exceptions = cache_exceptions
        self.native = (
            getattr(type(cache), "get", None) is _core.Cache.get
            and isinstance(cache, _core.Cache)
        )
        self.ident = id(self)
        self.flights: dict[Any, _Flight] = {}
        self.aflights: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Any, asyncio.Future[Any]]
        ] = weakref.WeakKeyDictionary()
        self.name = getattr(func, "__qualname__", repr(func))
        #: a new object each time a flight (thread or task) finishes, before its
        #: slot is freed: an owner re-reads the cache only when one finished
        #: since its first lookup (for a TieredCache that re-read is a second
        #: Redis round trip).  Assignment is atomic; ``+= 1`` would not be.
        self.finished: object = object()

    @staticmethod
    def plain(key: Any) -> Any:
        """The key a cache other than the native one sees: a _HashedKey (the
        one-hash wrapper of make_key) unwrapped, so that e.g. a TieredCache
        serialises the key itself."""
        return key.key if _type(key) is _HashedKey else key

    def lookup(self, key: Any) -> Any:
        if self.native:
            return self.cache.peek(key, _MISSING)
        return self.cache.get(self.plain(key), _MISSING)

    def store(self, key: Any, value: Any) -> None:
        if not self.native:
            key = self.plain(key)
        try:
            if self.ttl is None:
                self.cache.set(key, value)
            else:
                self.cache.set(key, value, ttl=self.ttl)
        except ValidationError as exc:  # too large to cache: return it uncached
            if not _is_too_large(exc):
                raise

    async def astore(self, key: Any, value: Any) -> None:
        aset = _getattr(self.cache, "aset", None)
        if aset is None:
            self.store(key, value)
            return
        key = self.plain(key)
        try:
            if self.ttl is None:
                await aset(key, value)
            else:
                await aset(key, value, ttl=self.ttl)
        except ValidationError as exc:
            if not _is_too_large(exc):
                raise

    async def alookup(self, key: Any) -> Any:
        aget = _getattr(self.cache, "aget", None)
        if aget is None:
            return self.lookup(key)
        return await aget(self.plain(key), _MISSING)

    def reentrant(self, key: Any) -> ReentrantCallError:
        return ReentrantCallError(
            f"{self.name}() called itself for the key it is computing ({key!r})",
            function=self.name,
        )

    @staticmethod
    def unwrap(value: Any) -> Any:
        if _type(value) is _CachedError:
            raise value.exc
        return value

    # -- threads ------------------------------------------------------------------

    def miss(self, wrapper: Any, key: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        seen = self.finished
        if not self.native:
            value = self.cache.get(self.plain(key), _MISSING)
            wrapper._record(value is not _MISSING)
            if value is not _MISSING:
                return self.unwrap(value)
        flights = self.flights
        while True:
            flight = _Flight()
            current = flights.setdefault(key, flight)
            if current is flight:
                break
            if current.owner == flight.owner:
                raise self.reentrant(key)
            value = current.wait()
            if value is not _MISSING:
                return value
        try:
            # A flight may have finished between the first lookup and now (the
            # native hit path's lookup ran just before this call: re-peek).
            value = self.lookup(key) if self.native or self.finished is not seen else _MISSING
            if value is not _MISSING:
                flight.value = value = self.unwrap(value)
                return value
            try:
                value = self.func(*args, **(kwargs or {}))
            except Exception as exc:
                if self.cache_exceptions:
                    self.store(key, _CachedError(exc))
                flight.error = exc
                raise
            except BaseException:
                flight.retry = True  # KeyboardInterrupt & co: waiters retry
                raise
            self.store(key, value)
            flight.value = value
            return value
        except BaseException as exc:
            if flight.error is None and not flight.retry:
                flight.error = exc
            raise
        finally:
            self.finished = _object()  # before the slot is free: see __init__
            flights.pop(key, None)
            flight.finish()

    # -- asyncio ------------------------------------------------------------------

    async def acall(self, counters: list[int], key: Any, args: Any, kwargs: Any) -> Any:
        seen = self.finished
        value = await self.alookup(key)
        if value is not _MISSING:
            counters[0] += 1
            return self.unwrap(value)
        counters[1] += 1
        loop = asyncio.get_running_loop()
        flights = self.aflights.setdefault(loop, {})
        marker = (self.ident, key)
        while True:
            fut = flights.get(key)
            if fut is None:
                break
            if marker in _computing.get():
                raise self.reentrant(key)
            try:
                return await asyncio.shield(fut)
            except _Retry:
                continue
        fut = loop.create_future()
        flights[key] = fut
        token = _computing.set(_computing.get() | {marker})
        try:
            value = await self.alookup(key) if self.finished is not seen else _MISSING
            if value is not _MISSING:
                value = self.unwrap(value)
            else:
                try:
                    value = await self.func(*args, **kwargs)
                except Exception as exc:
                    if self.cache_exceptions:
                        await self.astore(key, _CachedError(exc))
                    raise
                await self.astore(key, value)
            fut.set_result(value)
            return value
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" log without waiters
            raise
        except BaseException:
            if not fut.done():
                fut.set_exception(_Retry())
                fut.exception()
            raise
        finally:
            _computing.reset(token)
            self.finished = _object()
            if flights.get(key) is fut:
                del flights[key]


class CachedFunction(Protocol[R_co]):
    """The type :func:`cached` returns (for type checkers): call it like the
    function; ``.cache``, ``.cache_info()``, ``.cache_clear()``."""

    cache: Any
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> R_co: ...

    def __get__(self, obj: Any, objtype: Any = None) -> Any: ...

    def cache_info(self) -> CacheInfo: ...

    def cache_clear(self) -> None: ...

    def cache_parameters(self) -> dict[str, Any]: ...


def _maxsize(cache: Any) -> int | None:
    value = getattr(cache, "max_items", None)
    return value if isinstance(value, int) else None


def _currsize(cache: Any) -> int:
    try:
        return len(cache)
    except TypeError:
        return 0


class _NoCache:
    """The cache of ``max_items=0``: stores nothing (every call computes)."""

    max_items = 0

    def get(self, key: Any, default: Any = None) -> Any:
        return default

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        return None

    def clear(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


def _no_key(*args: Any, **kwargs: Any) -> None:
    """The key of every call when nothing is cached: arguments are never hashed."""


def _uncached(func: Callable[..., Any], params: dict[str, Any]) -> Any:
    """``max_items=0`` (or negative), as ``lru_cache(maxsize=0)``: no cache, no
    single flight, every call computes and counts as a miss."""
    target = _NoCache()
    if inspect.iscoroutinefunction(func):
        misses = [0]

        @functools.wraps(func)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            misses[0] += 1
            return await func(*args, **kwargs)

        def ainfo() -> CacheInfo:
            return CacheInfo(0, misses[0], 0, 0)

        def aclear() -> None:
            misses[0] = 0

        awrapper.cache = target  # type: ignore[attr-defined]
        awrapper.cache_info = ainfo  # type: ignore[attr-defined]
        awrapper.cache_clear = aclear  # type: ignore[attr-defined]
        awrapper.cache_parameters = params.copy  # type: ignore[attr-defined]
        return awrapper

    def compute(key: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        record(False)
        return func(*args, **kwargs) if kwargs else func(*args)

    wrapper = _core.CachedFunction(func, target, False, False, _no_key, compute, None)
    record = wrapper._record
    functools.update_wrapper(wrapper, func)

    def cache_info() -> CacheInfo:
        return CacheInfo(0, wrapper.misses, 0, 0)

    wrapper.cache_info = cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = wrapper._reset  # type: ignore[attr-defined]
    wrapper.cache_parameters = params.copy  # type: ignore[attr-defined]
    return wrapper


@overload
def cached(cache: Callable[..., R], /) -> CachedFunction[R]: ...


@overload
def cached(
    cache: Any = None,
    *,
    ttl: float | None = None,
    max_items: int | None = 128,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    cache_exceptions: bool = False,
) -> Callable[[Callable[..., R]], CachedFunction[R]]: ...


def cached(
    cache: Any = None,
    *,
    ttl: float | None = None,
    max_items: int | None = 128,
    key: Callable[..., Hashable] | None = None,
    typed: bool = False,
    cache_exceptions: bool = False,
) -> Any:
    """Memoise a function, method or ``async def`` coroutine function.

    ``cache``: where results go; by default a new ``Cache(max_items, ttl=ttl)``.
    Any object with ``get(key, default)`` and ``set(key, value, ttl=None)``
    works (e.g. a ``TieredCache``); for coroutine functions its ``aget``/``aset``
    coroutine methods are awaited when it has them, and a cache with only those
    (an ``AsyncTieredCache``) serves ``async def`` functions alone.  A native :class:`Cache`
    gets the native hit path (key building and lookup in C).

    Keys are like functools': the positional arguments and the keyword
    arguments (``typed=True`` also tells ``1`` from ``1.0``), or
    ``key(*args, **kwargs)``.  Misses are single-flight: concurrent callers (threads
    or tasks) of the same key wait for one computation and share its result or
    its exception.  Exceptions are not cached unless ``cache_exceptions=True``.

    A drop-in for ``functools.lru_cache(maxsize=...)``: ``max_items=128`` by
    default, ``None`` for no bound, ``0`` (or a negative number, read as 0) for
    no caching at all (every call computes and counts as a miss, arguments need
    not be hashable); ``cache_info()``, ``cache_clear()`` and
    ``cache_parameters()`` (``maxsize`` and ``typed`` as functools, plus
    ``ttl``); the ``functools.update_wrapper`` attributes (``__wrapped__``,
    ``__name__``, ``__qualname__``, ``__doc__``, ``__module__``, ``__dict__``);
    weak references; a module-level cached function, method or staticmethod
    pickles by reference and ``copy.copy``/``copy.deepcopy`` return it
    unchanged; a key's ``__hash__`` runs once per call; no builtin is looked up
    at call time.  Deliberate differences from ``lru_cache``:

    * single flight: concurrent misses of one key compute it once (lru_cache
      lets each caller compute it and keeps the last result);
    * a call that recurses into the key it is computing, from the same thread
      or task, raises :class:`ReentrantCallError` (lru_cache recurses);
    * keyword arguments are keyed sorted by name, so ``f(a=1, b=2)`` and
      ``f(b=2, a=1)`` share an entry (lru_cache keys them in call order);
    * ``ttl``, ``key=``, ``cache_exceptions`` and a shared, inspectable
      ``.cache`` (a :class:`Cache`, or any cache you pass) are additions;
      ``f.cache`` may hold a key whose hash is expensive wrapped in a
      ``_HashedKey`` (equal to, and hashing as, the key itself).

    >>> @cached(ttl=60, max_items=1024)
    ... def thumbnail_for(user_id: int) -> bytes: ...
    >>> thumbnail_for.cache_info()
    CacheInfo(hits=0, misses=0, maxsize=1024, currsize=0)
    """
    if callable(cache) and not hasattr(cache, "get"):  # bare @cached
        return cached()(cache)
    if key is not None and not callable(key):
        raise ValidationError("key must be a callable or None", field="key")
    if cache is None and max_items is not None and max_items <= 0:  # as lru_cache(maxsize=0)
        params = {"maxsize": 0, "typed": typed, "ttl": ttl}
        return lambda func: _uncached(func, params)
    target = cache if cache is not None else Cache(max_items, ttl=ttl)
    set_ttl = ttl if cache is not None else None
    has_sync = _has_methods(target, "get", "set")
    if not (has_sync or _has_methods(target, "aget", "aset")):
        raise ValidationError(
            f"cache must have get(key, default) and set(key, value, ttl=None) (or the "
            f"coroutines aget/aset, for async def functions), got {target!r}",
            field="cache",
        )

    params = {"maxsize": _maxsize(target), "typed": typed, "ttl": ttl}

    def decorate(func: Callable[..., Any]) -> Any:
        if not callable(func):
            raise TypeError(f"cached() needs a callable, got {func!r}")
        memo = _Memo(func, target, set_ttl, cache_exceptions)
        if inspect.iscoroutinefunction(func):
            awrapper = _async_wrapper(func, memo, key, typed)
            awrapper.cache_parameters = params.copy
            return awrapper
        if not has_sync:  # e.g. an AsyncTieredCache under a plain function
            raise ValidationError(
                f"{type(target).__name__} has only aget/aset: it caches async def "
                f"functions, not {getattr(func, '__qualname__', func)!r}",
                field="cache",
            )
        wrapper = _core.CachedFunction(
            func,
            target,
            memo.native,
            typed,
            key,
            lambda k, a, kw: memo.miss(wrapper, k, a, kw),
            _CachedError if cache_exceptions else None,
        )
        functools.update_wrapper(wrapper, func)

        def cache_info() -> CacheInfo:
            return CacheInfo(wrapper.hits, wrapper.misses, _maxsize(target), _currsize(target))

        def cache_clear() -> None:
            target.clear()
            wrapper._reset()

        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        wrapper.cache_parameters = params.copy  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _has_methods(obj: Any, *names: str) -> bool:
    return all(callable(getattr(obj, n, None)) for n in names)


def _async_wrapper(
    func: Callable[..., Awaitable[Any]],
    memo: _Memo,
    keyfunc: Callable[..., Hashable] | None,
    typed: bool,
) -> Any:
    counters = [0, 0]  # hits, misses
    make_key = _core.make_key

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = keyfunc(*args, **kwargs) if keyfunc is not None else make_key(args, kwargs, typed)
        return await memo.acall(counters, k, args, kwargs)

    def cache_info() -> CacheInfo:
        return CacheInfo(counters[0], counters[1], _maxsize(memo.cache), _currsize(memo.cache))

    def cache_clear() -> None:
        clear = getattr(memo.cache, "clear", None)
        if clear is None:  # AsyncTieredCache: clearing is a coroutine
            raise TypeError(
                f"{type(memo.cache).__name__} has no clear(): await its aclear() instead"
            )
        clear()
        counters[0] = counters[1] = 0

    wrapper.cache = memo.cache  # type: ignore[attr-defined]
    wrapper.cache_info = cache_info  # type: ignore[attr-defined]
    wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
    return wrapper


# ---- ImageCache -----------------------------------------------------------------------


class ImageCache:
    """Decoded images cached by content: the same upload is decoded once.

    ``ImageCache(max_bytes=512 MiB, ttl=None, max_items=None)``.  The byte budget
    counts the arrays' real memory (``nbytes``).

    ``decode(data, mode="RGB", **options)`` takes what
    :func:`amulet_native.decode` takes (bytes, bytearray, memoryview, mmap, a
    uint8 ndarray, or a binary file object, which is read) and the same options.
    The key is the BLAKE2b-256 digest of the bytes (buffers are hashed in place,
    never copied) plus the normalised options, so ``decode(b)`` and
    ``decode(b, mode="RGB")`` share an entry but ``mode="L"`` does not.
    It returns read-only views of the cached array (zero copy): its memory is
    freed once the cache has dropped it *and* every caller has dropped its
    view.  Concurrent decodes of the same bytes run once (single-flight).  A
    tolerant decode's (``strict=False``) warning is issued on the decode only,
    not on later hits.  Images larger than ``max_bytes`` are returned uncached.

    The original system's API: ``cache_image(data, name=None) -> key``,
    ``get_image(key)``, ``get_stats()``; and ``shrink(fraction)`` for
    memory-pressure callbacks.

    >>> images = ImageCache(max_bytes=256 << 20)
    >>> rgb = images.decode(upload_bytes)           # decodes
    >>> rgb is not images.decode(upload_bytes)      # a hit: a new view, same memory
    True
    """

    def __init__(
        self,
        max_bytes: int | None = 512 << 20,
        ttl: float | None = None,
        max_items: int | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: Cache[Hashable, npt.NDArray[Any]] = Cache(
            max_items, max_bytes, ttl, timer=timer
        )
        self._memo = _Memo(_decode_readonly, self._cache, None, False)
        self._named = _NamedImages(self._cache)
        self._named_memo = _Memo(_decode_readonly, self._named, None, False)

    @property
    def cache(self) -> Cache[Hashable, npt.NDArray[Any]]:
        """The underlying :class:`Cache` (keys: names, digests, decode keys)."""
        return self._cache

    @staticmethod
    def _digest(data: Any) -> bytes:
        try:
            return hashlib.blake2b(data, digest_size=32).digest()
        except (TypeError, BufferError, ValueError):
            raise ValidationError(
                f"expected a contiguous bytes-like object or a binary file, got "
                f"{type(data).__name__}",
                code="input.type",
                field="data",
            ) from None

    def _get_or_decode(self, key: Hashable, data: Any, options: Any) -> npt.NDArray[Any]:
        arr = self._cache.get(key, _MISSING)
        if arr is _MISSING:
            arr = self._memo.miss(_NoCounter, key, (data, *options, None), None)
        return arr.view()  # type: ignore[no-any-return]

    def decode(
        self,
        data: Any,
        mode: _image.Mode = "RGB",
        *,
        scale: Any = None,
        max_size: tuple[int, int] | None = None,
        orient: bool = True,
        limits: _image.Limits | None = None,
        strict: bool | None = None,
        dtype: npt.DTypeLike = np.uint8,
        frame: int = 0,
    ) -> npt.NDArray[Any]:
        """Decode through the cache; returns a read-only array (see the class)."""
        options, lim = _image._core_options(
            mode, scale, max_size, orient, limits, strict, dtype, None, frame
        )
        buf = _image._read_source(data, lim.max_bytes)
        key = ("decode", self._digest(buf), options)
        return self._get_or_decode(key, buf, options)

    def cache_image(self, image_bytes: Any, name: str | None = None) -> str:
        """Decodes (RGB, default options) and stores the image; returns its key:
        ``name``, or the hex BLAKE2b digest of the bytes.  Caching other bytes
        under a ``name`` already in use replaces that name's image."""
        if name is not None and not isinstance(name, str):
            raise ValidationError("name must be a str or None", field="name")
        options, lim = _image._core_options("RGB", None, None, True, None, True, np.uint8, None)
        buf = _image._read_source(image_bytes, lim.max_bytes)
        digest = self._digest(buf)
        if name is None:
            key = digest.hex()  # content-addressed: the key says which bytes
            self._get_or_decode(key, buf, options)
        else:
            key = name
            self._named_memo.miss(_NoCounter, (name, digest), (buf, *options, None), None)
        return key

    def get_image(self, key: str) -> npt.NDArray[Any] | None:
        """The image stored by :meth:`cache_image` (a read-only view), or None."""
        arr = self._cache.get(key)
        return None if arr is None else arr.view()

    def get_stats(self) -> dict[str, Any]:
        """hits, misses, hit_rate, items, bytes, max_bytes, evictions."""
        s = self._cache.stats()
        return {
            "hits": s.hits,
            "misses": s.misses,
            "hit_rate": s.hit_rate,
            "items": s.items,
            "bytes": s.bytes,
            "max_bytes": self._cache.max_bytes,
            "evictions": s.evictions,
        }

    def shrink(self, fraction: float) -> int:
        """Evicts LRU images until bytes <= (1 - fraction) * current bytes;
        returns the bytes freed.  ``fraction`` in [0, 1]."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0
        ):
            raise ValidationError(
                f"fraction must be a number in [0, 1], got {fraction!r}", field="fraction"
            )
        target = int((1.0 - fraction) * self._cache.stats().bytes)
        return self._cache.trim(max_bytes=target)

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        s = self._cache.stats()
        return (
            f"ImageCache(max_bytes={self._cache.max_bytes!r}) <items={s.items}, "
            f"bytes={s.bytes}, hit_rate={s.hit_rate:.1%}>"
        )


class _NamedImages:
    """The @cached-protocol view of ImageCache's named entries, keyed by
    ``(name, digest)``: a hit only when ``name`` holds the image of exactly
    these bytes, so new bytes under an old name are decoded and replace it."""

    def __init__(self, cache: Cache[Hashable, npt.NDArray[Any]]) -> None:
        self.cache = cache
        #: name -> (digest, weakref to the array stored under name); an item goes
        #: away with its array, so this never outgrows the live images.
        self.origin: dict[str, tuple[bytes, weakref.ref[npt.NDArray[Any]]]] = {}

    def get(self, key: tuple[str, bytes], default: Any = None) -> Any:
        name, digest = key
        arr = self.cache.peek(name, None)
        rec = self.origin.get(name)
        if arr is None or rec is None or rec[0] != digest or rec[1]() is not arr:
            return default
        return self.cache.get(name, default)  # counts the hit, marks it recently used

    def set(self, key: tuple[str, bytes], value: Any, ttl: float | None = None) -> None:
        name, digest = key
        origin = self.origin

        def forget(ref: weakref.ref[npt.NDArray[Any]]) -> None:
            rec = origin.get(name)
            if rec is not None and rec[1] is ref:
                origin.pop(name, None)

        self.cache.set(name, value)  # too large: raises before origin changes
        origin[name] = (digest, weakref.ref(value, forget))


def _decode_readonly(*args: Any) -> npt.NDArray[Any]:
    arr = _core.decode(*args)
    arr.flags.writeable = False  # shared by every caller: nobody may write
    return arr


class _NoCounterType:
    """Stands in for a CachedFunction's counters where nothing is counted."""

    @staticmethod
    def _record(hit: bool) -> None:
        return None


_NoCounter = _NoCounterType()
