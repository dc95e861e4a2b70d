"""Thread-safe building blocks: AtomicCounter, ThreadSafeDict, ThreadSafeQueue.

The three classes are native (``amulet_native._core``) and exported as they are,
so CPython's fast method-call paths apply to them; this module adds what is
better written in Python: the asyncio side of :class:`ThreadSafeQueue`
(``aput``/``aget``, reached through the C methods of the same name) and the
``collections.abc.MutableMapping`` registration of :class:`ThreadSafeDict`.

Example::

    import amulet_native as an

    hits = an.AtomicCounter()
    hits.increment()                                  # lock-free, exact under threads

    models = an.ThreadSafeDict()
    model = models.get_or_create("resnet", load_model)  # load_model runs once per key

    jobs = an.ThreadSafeQueue(maxsize=64)             # drop-in for queue.Queue
    jobs.put(("resize", 42))
    item = await jobs.aget(timeout=5.0)               # from asyncio, loop never blocked
    jobs.task_done()
    await jobs.ajoin()                                # join() for asyncio
    jobs.close()                                      # waiters wake with QueueClosed

asyncio design: ``aget`` tries to take an item and, when the queue is empty,
registers a wake-up callback in the same atomic step, then awaits a future
that the next ``put`` (from any thread or task) resolves through
``loop.call_soon_threadsafe``.  Items only ever move inside those synchronous
steps, so cancelling ``aget`` never loses an item and cancelling ``aput``
never inserts twice; a wake-up consumed by a cancelled or timed-out waiter is
handed on to the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from functools import partial
from typing import Any

from ._core import AtomicCounter, ThreadSafeDict, ThreadSafeQueue
from .errors import ValidationError

__all__ = ["AtomicCounter", "ThreadSafeDict", "ThreadSafeQueue"]

MutableMapping.register(ThreadSafeDict)

_EMPTY: Any = object()  # sentinel of _get_or_register: "nothing there, registered"


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _wake(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[bool]) -> None:
    """The wake-up callback the queue calls after a put/get/close, from any thread."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    try:
        if running is loop:
            loop.call_soon(_resolve, fut, True)
        else:
            loop.call_soon_threadsafe(_resolve, fut, True)
    except RuntimeError:
        pass  # the loop is closed: nobody waits on this future any more


async def _wait(
    q: ThreadSafeQueue[Any],
    loop: asyncio.AbstractEventLoop,
    fut: asyncio.Future[bool],
    cb: Any,
    putter: bool,
    deadline: float | None,
) -> bool:
    """Awaits the wake-up; False once the deadline passed.  On cancellation (or
    any exception) the callback is withdrawn, and a wake-up it already received
    is passed on to the next waiter."""
    timer = None
    if deadline is not None:
        timer = loop.call_at(deadline, _resolve, fut, False)
    try:
        woken = await fut
    except BaseException:
        if not q._unregister(cb, putter):
            q._wake(putter)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if not woken and not q._unregister(cb, putter):
        q._wake(putter)
    return woken


def _deadline(loop: asyncio.AbstractEventLoop, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:  # also NaN
        raise ValidationError(
            "'timeout' must be a non-negative number", code="value.invalid", field="timeout"
        )
    return loop.time() + timeout


async def _aget(q: ThreadSafeQueue[Any], timeout: float | None = None) -> Any:
    loop = asyncio.get_running_loop()
    deadline = _deadline(loop, timeout)
    while True:
        fut: asyncio.Future[bool] = loop.create_future()
        cb = partial(_wake, loop, fut)
        item = q._get_or_register(cb, _EMPTY)
        if item is not _EMPTY:
            return item
        if not await _wait(q, loop, fut, cb, False, deadline):
            return q.get_nowait()  # last chance; raises queue.Empty (or QueueClosed)


async def _aput(q: ThreadSafeQueue[Any], item: Any, timeout: float | None = None) -> None:
    loop = asyncio.get_running_loop()
    deadline = _deadline(loop, timeout)
    while True:
        fut: asyncio.Future[bool] = loop.create_future()
        cb = partial(_wake, loop, fut)
        if q._put_or_register(item, cb):
            return
        if not await _wait(q, loop, fut, cb, True, deadline):
            q.put_nowait(item)  # last chance; raises queue.Full (or QueueClosed)
            return


async def _ajoin(q: ThreadSafeQueue[Any], timeout: float | None = None) -> bool:
    """Awaits until every item put has been ``task_done()``; False once the
    timeout passes.  Cancellation withdraws the wake-up callback."""
    loop = asyncio.get_running_loop()
    deadline = _deadline(loop, timeout)
    while True:
        fut: asyncio.Future[bool] = loop.create_future()
        cb = partial(_wake, loop, fut)
        if q._join_or_register(cb):
            return True
        timer = None if deadline is None else loop.call_at(deadline, _resolve, fut, False)
        try:
            woken = await fut
        finally:
            if timer is not None:
                timer.cancel()
            q._unregister_join(cb)  # no-op once task_done() has called it
        if not woken:
            return q.unfinished_tasks == 0

