"""Object pools with health checks: :class:`ObjectPool` (threads) and
:class:`AsyncObjectPool` (asyncio), the generic ``ConnectionPool<T>``.

At most ``max_size`` objects exist at once (idle + borrowed + being made).  A
borrower takes a *slot* first: ``ObjectPool`` waits for one in C with the GIL
released (``_core.PoolSlots``), ``AsyncObjectPool`` on an asyncio future; both
wait until ``timeout`` and then raise :class:`~amulet_native.errors.PoolTimeoutError`
(never "too many").  With a slot, it reuses the most recently returned idle
object or calls the factory.  The factory, health check and close callback
are your Python code and run with no lock held.

Lifecycle of an object:

* borrow: idle objects past ``max_idle_time`` (idle) or ``max_lifetime`` (age)
  are closed instead of used; one idle for longer than
  ``check_on_borrow_after`` seconds is health-checked first (a false result or
  an exception closes it, and the next one is tried, or a new one made);
* return: an exception inside the ``with`` block closes the object instead of
  returning it; so does ``max_lifetime`` or a closed pool;
* :meth:`ObjectPool.evict` (or the background maintenance every
  ``maintenance_interval`` seconds, off by default) closes expired idle objects
  and tops the pool up to ``min_idle``.

State (:class:`PoolState`), from failures = factory errors, failed health
checks and exceptions (``Exception`` subclasses) in ``with`` blocks, over the
last ``failure_window`` seconds (default 60): no failure in the window: HEALTHY; ``failure_threshold``
(default 5) or more failures in a row with no success in between: FAILED;
otherwise DEGRADED.  A success (an object made, a passed health check, a
clean return) ends a run of failures.  The state is information: acquire
keeps trying the factory whatever the state.  A block left by a cancellation,
``KeyboardInterrupt`` or ``SystemExit`` still discards its object (it may be
mid-operation) but counts as no failure: a disconnecting client is not a sick
resource.

``close()`` closes every idle object, makes further ``acquire`` raise
:class:`~amulet_native.errors.PoolClosedError` (code ``pool.closed``, also for
borrowers waiting at that moment), and objects still borrowed are closed when
they come back.  Exceptions raised by the close callback are counted in
``stats()["close_errors"]`` and otherwise ignored (the object is gone either
way).  Time (idle, lifetime, the failure window) comes from ``timer``
(default ``time.monotonic``), which tests may replace.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar

from . import _core
from .errors import PoolClosedError, PoolTimeoutError, ValidationError

__all__ = ["AsyncObjectPool", "ObjectPool", "PoolState"]

T = TypeVar("T")


class PoolState(enum.Enum):
    """Health of a pool, from its recent failures (see the module docs)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"


class _Entry(Generic[T]):
    __slots__ = ("created", "last_used", "obj")

    def __init__(self, obj: T, now: float) -> None:
        self.obj = obj
        self.created = now
        self.last_used = now


def _bad(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="value.invalid", field=field)


def _opt_seconds(field: str, value: float | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not v >= 0.0:
        raise _bad(field, f"{field} must be None or >= 0, got {value!r}")
    return v


def _timeout_arg(timeout: float | None) -> float:
    t = _opt_seconds("timeout", timeout)
    return -1.0 if t is None else t


class _PoolBase(Generic[T]):
    """Bookkeeping shared by both pools.  ``_lock`` guards the idle stack, the
    borrowed set and the counters; it is never held while user code runs."""

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        max_size: int,
        min_idle: int = 0,
        max_idle_time: float | None = None,
        max_lifetime: float | None = None,
        health_check: Callable[[T], Any] | None = None,
        check_on_borrow_after: float = 0.0,
        close: Callable[[T], Any] | None = None,
        failure_window: float = 60.0,
        failure_threshold: int = 5,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(factory):
            raise TypeError("factory must be callable")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise _bad("max_size", f"max_size must be an int >= 1, got {max_size!r}")
        if isinstance(min_idle, bool) or not isinstance(min_idle, int) or not (
            0 <= min_idle <= max_size
        ):
            raise _bad("min_idle", f"min_idle must be an int in [0, max_size], got {min_idle!r}")
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int) or (
            failure_threshold < 1
        ):
            raise _bad("failure_threshold", "failure_threshold must be an int >= 1")
        for name, fn in (("health_check", health_check), ("close", close)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None")
        self._factory = factory
        self.max_size = max_size
        self.min_idle = min_idle
        self.max_idle_time = _opt_seconds("max_idle_time", max_idle_time)
        self.max_lifetime = _opt_seconds("max_lifetime", max_lifetime)
        self._health_check = health_check
        self.check_on_borrow_after = _opt_seconds("check_on_borrow_after", check_on_borrow_after)
        self._close_fn = close
        self.failure_window = _opt_seconds("failure_window", failure_window) or 0.0
        self.failure_threshold = failure_threshold
        self._timer = timer
        self._slots = _core.PoolSlots(max_size)
        self._lock = threading.Lock()
        self._idle: list[_Entry[T]] = []  # a stack: the most recently returned on top
        self._in_use: dict[int, _Entry[T]] = {}  # id(obj) -> entry
        self._closed = False
        self._failure_times: collections.deque[float] = collections.deque()
        self._run = 0  # failures in a row
        self._n = dict.fromkeys(
            ("created", "destroyed", "borrowed", "returned", "waits", "timeouts", "failures",
             "close_errors"), 0,
        )

    # ---- bookkeeping (no user code) ------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._n[key] += n

    def _failed(self) -> None:
        now = self._timer()
        with self._lock:
            self._n["failures"] += 1
            self._run += 1
            self._failure_times.append(now)

    def _succeeded(self) -> None:
        self._run = 0

    def _expired(self, e: _Entry[T], now: float) -> bool:
        return (self.max_idle_time is not None and now - e.last_used > self.max_idle_time) or (
            self.max_lifetime is not None and now - e.created > self.max_lifetime
        )

    def _needs_check(self, e: _Entry[T], now: float) -> bool:
        after = self.check_on_borrow_after or 0.0
        return self._health_check is not None and now - e.last_used > after

    def _pop_idle(self) -> _Entry[T] | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _push_idle(self, e: _Entry[T]) -> bool:
        """Back on the idle stack; False (caller closes it) once the pool is closed."""
        with self._lock:
            if self._closed:
                return False
            self._idle.append(e)
            return True

    def _lend(self, e: _Entry[T], created: bool = False) -> None:
        with self._lock:
            if created:
                self._n["created"] += 1
            self._n["borrowed"] += 1
            self._in_use[id(e.obj)] = e

    def _take_back(self, e: _Entry[T], failed: bool, counted: bool) -> bool:
        """Book a return; True when ``e`` may go back on the idle stack (its
        ``last_used`` is then set), False when the caller must close it."""
        with self._lock:
            self._in_use.pop(id(e.obj), None)
            self._n["returned"] += 1
        if failed:
            if counted:
                self._failed()
        else:
            self._succeeded()
        now = self._timer()
        if failed or (self.max_lifetime is not None and now - e.created > self.max_lifetime):
            return False
        e.last_used = now
        return True

    def _checked(self, ok: bool) -> bool:
        """Book a health check's verdict; returns it."""
        if ok:
            self._succeeded()
        else:
            self._failed()
        return ok

    def _made(self, obj: T, *, lend: bool) -> _Entry[T]:
        """Book a new object from the factory: lent out, or counted for the idle stack."""
        e = _Entry(obj, self._timer())
        self._succeeded()
        if lend:
            self._lend(e, created=True)
        else:
            self._count("created")
        return e

    def _take_expired(self) -> list[_Entry[T]]:
        now = self._timer()
        with self._lock:
            dead = [e for e in self._idle if self._expired(e, now)]
            if dead:
                self._idle = [e for e in self._idle if not self._expired(e, now)]
            return dead

    def _idle_shortfall(self) -> int:
        with self._lock:
            return 0 if self._closed else self.min_idle - len(self._idle)

    def _mark_closed(self) -> list[_Entry[T]]:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        self._slots.close()
        return idle

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("the pool is closed", code="pool.closed")

    def _timed_out(self, timeout: float) -> PoolTimeoutError:
        self._count("timeouts")
        return PoolTimeoutError(
            f"no pooled object became free within {timeout}s (max_size={self.max_size})",
            code="pool.timeout", timeout=timeout, max_size=self.max_size,
        )

    # ---- public, shared ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def state(self) -> PoolState:
        """HEALTHY / DEGRADED / FAILED from the recent failures."""
        now = self._timer()
        with self._lock:
            while self._failure_times and now - self._failure_times[0] > self.failure_window:
                self._failure_times.popleft()
            if self._run >= self.failure_threshold:
                return PoolState.FAILED
            return PoolState.DEGRADED if self._failure_times else PoolState.HEALTHY

    def stats(self) -> dict[str, Any]:
        """size (objects alive), idle, in_use, max_size, created, destroyed,
        borrowed, returned, waits, timeouts, failures, close_errors, closed, state."""
        state = self.state
        with self._lock:
            out: dict[str, Any] = dict(self._n)
            out.update(
                size=self._n["created"] - self._n["destroyed"], idle=len(self._idle),
                in_use=len(self._in_use), max_size=self.max_size, closed=self._closed,
            )
        out["state"] = state
        return out

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"{type(self).__name__}(size={s['size']}, idle={s['idle']}, in_use={s['in_use']}, "
            f"max_size={self.max_size}, state={s['state'].name}, closed={self._closed})"
        )


class ObjectPool(_PoolBase[T]):
    """A thread-safe pool of reusable objects (connections, clients, models).

    Example::

        pool = ObjectPool(lambda: redis.Redis(), max_size=8, min_idle=1,
                          health_check=lambda r: r.ping(), close=lambda r: r.close(),
                          max_idle_time=300)
        with pool.acquire(timeout=2) as r:
            r.get("key")
        pool.close()

    ``maintenance_interval`` (seconds) starts a daemon thread that calls
    :meth:`evict` periodically until the pool is closed (or collected).
    """

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        max_size: int,
        min_idle: int = 0,
        max_idle_time: float | None = None,
        max_lifetime: float | None = None,
        health_check: Callable[[T], Any] | None = None,
        check_on_borrow_after: float = 0.0,
        close: Callable[[T], Any] | None = None,
        failure_window: float = 60.0,
        failure_threshold: int = 5,
        maintenance_interval: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            factory, max_size=max_size, min_idle=min_idle, max_idle_time=max_idle_time,
            max_lifetime=max_lifetime, health_check=health_check,
            check_on_borrow_after=check_on_borrow_after, close=close,
            failure_window=failure_window, failure_threshold=failure_threshold, timer=timer,
        )
        self._stop = threading.Event()
        self._fill_min_idle()
        interval = _opt_seconds("maintenance_interval", maintenance_interval)
        if interval:
            threading.Thread(
                target=_maintain, args=(weakref.ref(self), self._stop, interval),
                name="amulet-pool-maintenance", daemon=True,
            ).start()

    def _make(self) -> T:
        obj: T = self._factory()
        if inspect.isawaitable(obj):
            if inspect.iscoroutine(obj):
                obj.close()
            raise TypeError("the factory returned an awaitable: use AsyncObjectPool")
        return obj

    def _destroy(self, e: _Entry[T]) -> None:
        self._count("destroyed")
        if self._close_fn is None:
            return
        try:
            self._close_fn(e.obj)
        except Exception:  # noqa: BLE001 - counted; the object is gone either way
            self._count("close_errors")

    def _healthy(self, e: _Entry[T]) -> bool:
        assert self._health_check is not None
        try:
            return bool(self._health_check(e.obj))
        except Exception:  # noqa: BLE001 - a raising health check is a failed one
            return False

    def _obtain(self) -> _Entry[T]:
        """With a slot held: an idle object that passes its checks, or a new one."""
        while (e := self._pop_idle()) is not None:
            now = self._timer()
            if self._expired(e, now):
                self._destroy(e)
                continue
            if self._needs_check(e, now):
                try:
                    ok = self._healthy(e)
                except BaseException:  # KeyboardInterrupt inside the check: re-raised
                    self._destroy(e)
                    raise
                if not self._checked(ok):
                    self._destroy(e)
                    continue
            self._lend(e)
            return e
        try:
            obj = self._make()
        except Exception:
            self._failed()
            raise
        return self._made(obj, lend=True)

    def _give_back(self, e: _Entry[T], failed: bool, counted: bool = True) -> None:
        try:
            if not (self._take_back(e, failed, counted) and self._push_idle(e)):
                self._destroy(e)
        finally:
            self._slots.release()

    @contextmanager
    def acquire(self, *, timeout: float | None = None) -> Iterator[T]:
        """Borrow an object for the ``with`` block; waits up to ``timeout``
        seconds (None: forever) for a free slot, then PoolTimeoutError.  An
        exception in the block closes the object instead of returning it."""
        t = _timeout_arg(timeout)
        self._check_open()
        if not self._slots.try_acquire():
            self._count("waits")
            try:
                self._slots.acquire(t, None)
            except PoolTimeoutError:
                raise self._timed_out(t) from None
        try:
            e = self._obtain()
        except BaseException:
            self._slots.release()
            raise
        failed, counted = True, True
        try:
            yield e.obj
            failed = False
        except BaseException as exc:
            counted = isinstance(exc, Exception)  # a cancellation/Ctrl-C is not the object's fault
            raise
        finally:
            self._give_back(e, failed, counted)

    def _fill_min_idle(self) -> None:
        while self._idle_shortfall() > 0 and self._slots.try_acquire():
            try:
                try:
                    obj = self._make()
                except Exception:  # noqa: BLE001 - counted: the pool state shows it
                    self._failed()
                    return
                e = self._made(obj, lend=False)
                if not self._push_idle(e):
                    self._destroy(e)
            finally:
                self._slots.release()

    def evict(self) -> int:
        """Close idle objects past ``max_idle_time``/``max_lifetime``, then make
        objects up to ``min_idle`` (factory errors count as failures and stop
        the top-up).  Returns the number of objects closed."""
        dead = self._take_expired()
        for e in dead:
            self._destroy(e)
        self._fill_min_idle()
        return len(dead)

    def close(self) -> None:
        """Close the idle objects now, borrowed ones when they are returned;
        acquire raises PoolClosedError from now on.  Idempotent."""
        self._stop.set()
        for e in self._mark_closed():
            self._destroy(e)

    def __enter__(self) -> ObjectPool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _maintain(ref: weakref.ref[ObjectPool[Any]], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        pool = ref()
        if pool is None or pool.closed:
            return
        with contextlib.suppress(Exception):  # a factory failure is counted in the stats
            pool.evict()
        del pool


_TIMEOUT = object()


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class AsyncObjectPool(_PoolBase[T]):
    """The asyncio pool: factory, health check and close may be ``async``.

    Example::

        pool = AsyncObjectPool(make_client, max_size=4, close=lambda c: c.aclose())
        async with pool.acquire(timeout=2) as client:
            await client.get("/health")
        await pool.aclose()

    Waiting for a slot never blocks the event loop, and cancelling a waiting
    or borrowing task never leaks a slot or an object.  Use one pool from one
    event loop.  ``min_idle`` is filled by ``await pool.evict()`` (and by the
    maintenance task every ``maintenance_interval`` seconds, started by the
    first acquire).
    """

    def __init__(
        self,
        factory: Callable[[], T | Awaitable[T]],
        *,
        max_size: int,
        min_idle: int = 0,
        max_idle_time: float | None = None,
        max_lifetime: float | None = None,
        health_check: Callable[[T], Any] | None = None,
        check_on_borrow_after: float = 0.0,
        close: Callable[[T], Any] | None = None,
        failure_window: float = 60.0,
        failure_threshold: int = 5,
        maintenance_interval: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            factory, max_size=max_size, min_idle=min_idle, max_idle_time=max_idle_time,
            max_lifetime=max_lifetime, health_check=health_check,
            check_on_borrow_after=check_on_borrow_after, close=close,
            failure_window=failure_window, failure_threshold=failure_threshold, timer=timer,
        )
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._interval = _opt_seconds("maintenance_interval", maintenance_interval)
        self._maintenance: asyncio.Task[None] | None = None

    # ---- slots ----------------------------------------------------------------------

    def _wake_next(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _release_slot(self) -> None:
        self._slots.release()
        self._wake_next()

    async def _wait_slot(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout < 0 else loop.time() + timeout
        while True:
            self._check_open()
            if self._slots.try_acquire():
                return
            fut: asyncio.Future[Any] = loop.create_future()
            self._waiters.append(fut)
            handle = None
            if deadline is not None:
                handle = loop.call_later(
                    max(0.0, deadline - loop.time()),
                    lambda f=fut: f.done() or f.set_result(_TIMEOUT),  # type: ignore[misc]
                )
            try:
                result = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled() and fut.result() is None:
                    self._wake_next()  # our wake-up goes to the next waiter
                raise
            finally:
                if handle is not None:
                    handle.cancel()
                if fut in self._waiters:
                    self._waiters.remove(fut)
            if result is _TIMEOUT:
                raise self._timed_out(timeout)

    # ---- objects ---------------------------------------------------------------------

    async def _run_close(self, obj: T) -> None:
        assert self._close_fn is not None
        try:
            await _maybe_await(self._close_fn(obj))
        except Exception:  # noqa: BLE001 - counted; the object is gone either way
            self._count("close_errors")

    async def _destroy(self, e: _Entry[T]) -> None:
        """Close e; if the caller is cancelled meanwhile, the close still
        finishes (and aclose() waits for it)."""
        self._count("destroyed")
        task = self._schedule_close(e)
        if task is not None:
            await asyncio.shield(task)

    async def _healthy(self, e: _Entry[T]) -> bool:
        assert self._health_check is not None
        try:
            return bool(await _maybe_await(self._health_check(e.obj)))
        except Exception:  # noqa: BLE001 - a raising health check is a failed one
            return False

    async def _obtain(self) -> _Entry[T]:
        while (e := self._pop_idle()) is not None:
            now = self._timer()
            if self._expired(e, now):
                await self._destroy(e)
                continue
            if self._needs_check(e, now):
                try:
                    ok = await self._healthy(e)
                except BaseException:  # cancelled mid-check: re-raised
                    if not self._push_idle(e):
                        self._count("destroyed")  # closed meanwhile; cannot await a close now
                        self._schedule_close(e)
                    raise
                if not self._checked(ok):
                    await self._destroy(e)
                    continue
            self._lend(e)
            return e
        try:
            obj = await _maybe_await(self._factory())
        except Exception:
            self._failed()
            raise
        return self._made(obj, lend=True)

    def _schedule_close(self, e: _Entry[T]) -> asyncio.Task[None] | None:
        """Start closing ``e`` in a task aclose() waits for (None: no close callback)."""
        if self._close_fn is None:
            return None
        task = asyncio.ensure_future(self._run_close(e.obj))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def _give_back(self, e: _Entry[T], failed: bool, counted: bool = True) -> None:
        if self._take_back(e, failed, counted) and self._push_idle(e):
            self._release_slot()
            return
        try:
            await self._destroy(e)
        finally:
            self._release_slot()

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[T]:
        """``async with pool.acquire(timeout=...) as obj`` (see ObjectPool.acquire)."""
        t = _timeout_arg(timeout)
        self._check_open()
        self._start_maintenance()
        if not self._slots.try_acquire():
            self._count("waits")
            await self._wait_slot(t)
        try:
            e = await self._obtain()
        except BaseException:
            self._release_slot()
            raise
        failed, counted = True, True
        try:
            yield e.obj
            failed = False
        except BaseException as exc:
            counted = isinstance(exc, Exception)  # a cancellation is not the object's fault
            raise
        finally:
            await self._give_back(e, failed, counted)

    def _start_maintenance(self) -> None:
        if self._interval and self._maintenance is None:
            self._maintenance = asyncio.ensure_future(self._maintain(self._interval))

    async def _maintain(self, interval: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a factory failure is counted in the stats
                await self.evict()

    async def _fill_min_idle(self) -> None:
        while self._idle_shortfall() > 0 and self._slots.try_acquire():
            try:
                try:
                    obj = await _maybe_await(self._factory())
                except Exception:  # noqa: BLE001 - counted: the pool state shows it
                    self._failed()
                    return
                e = self._made(obj, lend=False)
                if not self._push_idle(e):
                    await self._destroy(e)
            finally:
                self._release_slot()

    async def evict(self) -> int:
        """Close expired idle objects and top up to ``min_idle`` (see ObjectPool.evict)."""
        dead = self._take_expired()
        for e in dead:
            await self._destroy(e)
        await self._fill_min_idle()
        return len(dead)

    async def aclose(self) -> None:
        """Close the pool (see ObjectPool.close); waits for every close in flight."""
        idle = self._mark_closed()
        while self._waiters:  # waiters wake up and raise PoolClosedError
            self._wake_next()
        if self._maintenance is not None:
            self._maintenance.cancel()
        for e in idle:
            await self._destroy(e)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def __aenter__(self) -> AsyncObjectPool[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
