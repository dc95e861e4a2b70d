"""Bulkheads (bounded concurrency on ObjectPool's native slot counter) and
async timeouts.  Re-exported by amulet_native.resilience."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, Self, cast

from . import _core
from ._resilience_args import (
    P,
    R,
    _bad,
    _count,
    _is_async,
    _seconds,
)
from .errors import (
    BulkheadFullError,
    OperationTimeoutError,
    PoolTimeoutError,
)

__all__ = ["Bulkhead", "timeout"]


# ---- bulkhead ------------------------------------------------------------------------------------


class Bulkhead:
    """At most ``max_concurrent`` calls at once; others wait up to ``max_wait``
    seconds (0 = fail at once, None = forever) and then get BulkheadFullError.

    Sync callers wait with the GIL released on ObjectPool's native slot
    counter; async callers wait on a future, never blocking the loop (one
    event loop per bulkhead for async use).  Decorator or context manager."""

    def __init__(
        self, max_concurrent: int, *, max_wait: float | None = 0.0, name: str = "bulkhead"
    ) -> None:
        self.max_concurrent = _count("max_concurrent", max_concurrent)
        self.max_wait = _seconds("max_wait", max_wait)
        self.name = name
        self._slots = _core.PoolSlots(self.max_concurrent)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.rejected = 0

    def _full(self) -> BulkheadFullError:
        self.rejected += 1
        return BulkheadFullError(
            f"bulkhead {self.name!r} is full ({self.max_concurrent} calls in flight)",
            name=self.name,
            max_concurrent=self.max_concurrent,
            max_wait=self.max_wait,
        )

    @property
    def in_flight(self) -> int:
        return int(self._slots.stats()[1])

    def acquire(self) -> None:
        if self._slots.try_acquire():
            return
        if self.max_wait == 0:
            raise self._full()
        try:
            ok = self._slots.acquire(-1.0 if self.max_wait is None else self.max_wait, None)
        except PoolTimeoutError:
            raise self._full() from None
        if not ok:  # pragma: no cover - no cancel event is passed
            raise self._full()

    def release(self) -> None:
        self._slots.release()
        self._pass_on()

    async def aacquire(self) -> None:
        if self._slots.try_acquire():
            return
        if self.max_wait == 0:
            raise self._full()
        loop = asyncio.get_running_loop()
        deadline = None if self.max_wait is None else loop.time() + self.max_wait
        while True:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                if deadline is None:
                    await fut
                else:
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if fut.done() and not fut.cancelled():
                    self._pass_on()
                raise self._full() from None
            except asyncio.CancelledError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                if fut.done() and not fut.cancelled():
                    self._pass_on()
                raise
            if self._slots.try_acquire():
                return

    def _pass_on(self) -> None:
        """Wake the first async waiter still waiting.  A release may come from
        a sync caller in another thread (or another loop): a future is only
        ever resolved in its own loop's thread, else the loop is never woken
        (and asyncio forbids it)."""
        while self._waiters:
            f = self._waiters.popleft()
            loop = f.get_loop()
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                try:
                    loop.call_soon_threadsafe(self._wake, f)
                except RuntimeError:  # that loop is closed: try the next waiter
                    continue
                return
            if not f.done():
                f.set_result(None)
                return

    def _wake(self, f: asyncio.Future[None]) -> None:
        # in f's loop: a waiter that gave up meanwhile passes the wake-up on
        if f.done():
            self._pass_on()
        else:
            f.set_result(None)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> Self:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if _is_async(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                await self.aacquire()
                try:
                    return await afn(*args, **kwargs)
                finally:
                    self.release()

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.acquire()
            try:
                return fn(*args, **kwargs)
            finally:
                self.release()

        return cast(Callable[P, R], wrapper)


# ---- timeout -------------------------------------------------------------------------------------


class timeout:
    """Cancel an async operation after ``seconds``; raises OperationTimeoutError
    (a TimeoutError with code ``timeout``).  ``async with timeout(2): ...`` or
    ``@timeout(2)`` on an ``async def``."""

    def __init__(self, seconds: float, *, operation: str | None = None) -> None:
        self.seconds = cast(float, _seconds("seconds", seconds, allow_none=False, zero=False))
        self.operation = operation
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._fired = False
        self._cancelling = 0

    async def __aenter__(self) -> Self:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() must be used inside a task")
        self._task = task
        self._fired = False
        # cancellations already requested: any beyond ours is someone else's
        self._cancelling = task.cancelling() if hasattr(task, "cancelling") else 0
        self._handle = asyncio.get_running_loop().call_later(self.seconds, self._fire)
        return self

    def _fire(self) -> None:
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and isinstance(exc, asyncio.CancelledError):
            task = self._task
            if (
                task is not None
                and hasattr(task, "uncancel")
                and task.uncancel() > self._cancelling
            ):
                return  # also cancelled from outside: that cancellation wins
            raise OperationTimeoutError(
                f"{self.operation or 'operation'} took longer than {self.seconds}s",
                seconds=self.seconds,
                operation=self.operation,
            ) from exc

    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not _is_async(fn):
            raise _bad(
                "resilience.invalid_target", "fn", "timeout() decorates async functions only"
            )
        seconds, op = self.seconds, self.operation or getattr(fn, "__qualname__", None)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            async with timeout(seconds, operation=op):
                return await fn(*args, **kwargs)

        return wrapper
