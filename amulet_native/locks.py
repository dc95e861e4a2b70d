"""Named locks created on first use: :class:`LockManager` and the
:func:`thread_safe_operation` decorator.

The registry lives in C (``csrc/core/sync/lockmgr.c``): a name maps to a ``lock``,
an ``rlock`` or a ``semaphore`` of ``permits`` slots, fixed by its first use.
Waits release the GIL and run in 50 ms slices, so Ctrl-C reaches the main
thread promptly, and ``acquire_async`` waits on a helper thread without
blocking the event loop.

Owners: a lock is held by a thread (``threading.get_ident()``) or, when taken
with ``acquire_async``, by the asyncio task that took it, so an ``rlock``
re-enters per task and another task of the same loop waits.  Releasing a lock
the caller does not hold raises :class:`~amulet_native.errors.LockReleaseError`
(a ``RuntimeError``, like ``threading.Lock``).  Semaphores do not track owners:
any holder may release a permit.

Deadlock detection (``detect_deadlocks=True``) walks the wait-for graph each
time a wait starts: "owner waits for name, held by owner ..."; a wait that
would close a cycle raises :class:`~amulet_native.errors.DeadlockError` in the
thread that would close it.  Semaphores end the walk (their holders are not
tracked), so cycles through a semaphore are not detected.  A ``lock`` taken
twice by the same owner is a cycle of one.  ``acquire_many`` prevents cycles
instead: it takes the names in one global (sorted) order, all or nothing.

Memory: with ``max_names`` (default 10,000), registering a new name when that
many exist first drops every name that is free and has no waiter (losing its
counters and its fixed kind); ``max_names=0`` keeps names forever.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal, ParamSpec, TypeVar, cast

from . import _core
from .errors import ValidationError

__all__ = ["LockHandle", "LockKind", "LockManager", "default_manager", "thread_safe_operation"]

LockKind = Literal["lock", "rlock", "semaphore"]
_KINDS: dict[str, int] = {"lock": 0, "rlock": 1, "semaphore": 2}

P = ParamSpec("P")
R = TypeVar("R")

# Tokens of asyncio tasks: above every thread id (pthread_t values are
# user-space addresses, below 2**48), one per task for its lifetime.
_task_tokens: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
_next_token = itertools.count(1 << 62)
_token_lock = threading.Lock()


def _task_token() -> int:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("acquire_async() must be awaited inside an asyncio task")
    with _token_lock:
        token = _task_tokens.get(task)
        if token is None:
            token = _task_tokens[task] = next(_next_token)
    return token


def _timeout_arg(timeout: float | None) -> float:
    if timeout is None:
        return -1.0
    t = float(timeout)
    if not t >= 0.0:  # also catches NaN
        raise ValidationError(
            f"timeout must be None or >= 0, got {timeout!r}", code="value.invalid",
            field="timeout",
        )
    return t


def _kind_arg(kind: str, permits: int) -> tuple[int, int]:
    k = _KINDS.get(kind)
    if k is None:
        raise ValidationError(
            f"kind must be 'lock', 'rlock' or 'semaphore', got {kind!r}", code="value.invalid",
            field="kind",
        )
    if isinstance(permits, bool) or not isinstance(permits, int) or permits < 1:
        raise ValidationError(
            f"permits must be an int >= 1, got {permits!r}", code="value.invalid", field="permits"
        )
    if k != 2 and permits != 1:
        raise ValidationError(
            f"permits applies to semaphores only (kind={kind!r})", code="value.invalid",
            field="permits",
        )
    return k, permits


#: One acquisition (of one or several names): ``names``, ``held``,
#: ``release()`` (LockReleaseError the second time) and the context-manager
#: protocol.  Implemented in C so ``with lm.acquire(name):`` stays cheap.
LockHandle = _core.LockHold


class LockManager:
    """Named locks created on first use, with contention statistics.

    Example::

        lm = LockManager(detect_deadlocks=True)
        with lm.acquire("model:resnet", timeout=5):
            reload_model()
        with lm.acquire("gpu", kind="semaphore", permits=2):
            run_inference()
        with lm.acquire_many(["a", "b"], timeout=1):   # sorted order, all or nothing
            move(a, b)
        lm.stats("gpu")["contended"]
    """

    def __init__(self, *, detect_deadlocks: bool = False, max_names: int = 10_000) -> None:
        if isinstance(max_names, bool) or not isinstance(max_names, int) or max_names < 0:
            raise ValidationError(
                f"max_names must be an int >= 0, got {max_names!r}", code="value.invalid",
                field="max_names",
            )
        self._native = _core.LockManager(bool(detect_deadlocks), max_names)
        self.detect_deadlocks = bool(detect_deadlocks)
        self.max_names = max_names

    # ---- threads --------------------------------------------------------------

    def acquire(
        self,
        name: str,
        *,
        timeout: float | None = None,
        kind: LockKind = "lock",
        permits: int = 1,
    ) -> LockHandle:
        """Acquire ``name`` now (for the calling thread) and return a handle that
        releases it; use it as ``with lm.acquire(name): ...``.

        Raises LockTimeoutError after ``timeout`` seconds (None: wait forever),
        DeadlockError (with ``detect_deadlocks``), ValidationError(code
        "lock.kind") if ``name`` exists with another kind or permit count."""
        return self._native.hold(name, kind, permits, timeout)

    def acquire_many(
        self,
        names: Iterable[str],
        *,
        timeout: float | None = None,
        kind: LockKind = "lock",
        permits: int = 1,
    ) -> LockHandle:
        """Acquire every name (duplicates once) in sorted order, so two callers
        can never hold parts of each other's set: deadlock prevention.  All or
        nothing: on a timeout (one deadline for the whole set) or any other
        error the names already taken are released before the error propagates."""
        k, p = _kind_arg(kind, permits)
        t = _timeout_arg(timeout)
        wanted = sorted(set(names))
        for n in wanted:
            if not isinstance(n, str):
                raise TypeError(f"lock name must be str, not {type(n).__name__}")
        deadline = None if t < 0 else time.monotonic() + t
        taken: list[str] = []
        try:
            for n in wanted:
                remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
                self._native.acquire(n, k, p, 0, remaining, None)
                taken.append(n)
        except BaseException:
            for n in reversed(taken):
                self._native.release(n, 0)
            raise
        return self._native.adopt(tuple(taken), 0)

    def release(self, name: str) -> None:
        """Release one hold of ``name`` by the calling thread (LockReleaseError
        if it holds none).  Prefer the handle returned by :meth:`acquire`."""
        self._native.release(name, 0)

    # ---- asyncio ---------------------------------------------------------------

    @asynccontextmanager
    async def acquire_async(
        self,
        name: str,
        *,
        timeout: float | None = None,
        kind: LockKind = "lock",
        permits: int = 1,
    ) -> AsyncIterator[LockHandle]:
        """``async with lm.acquire_async(name): ...`` - the lock is owned by the
        current task; waiting happens on a helper thread, never blocking the
        loop.  Cancelling the waiting task stops the wait and never leaves the
        lock held."""
        handle = await self._acquire_async(name, _timeout_arg(timeout), *_kind_arg(kind, permits))
        try:
            yield handle
        finally:
            handle.release()

    async def _acquire_async(self, name: str, timeout: float, kind: int, permits: int) -> LockHandle:
        token = _task_token()
        native = self._native
        if native.try_acquire(name, kind, permits, token):
            return native.adopt((name,), token)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        cancel = threading.Event()

        def settle(ok: bool, exc: BaseException | None) -> None:  # on the loop
            if fut.cancelled():
                if ok:
                    native.release(name, token)
            elif exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(ok)

        def wait() -> None:  # on the helper thread
            ok, err = False, None
            try:
                ok = native.acquire(name, kind, permits, token, timeout, cancel)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                err = e
            try:
                loop.call_soon_threadsafe(settle, ok, err)
            except RuntimeError:  # the loop is closed: nobody will use the lock
                if ok:
                    native.release(name, token)

        threading.Thread(target=wait, name=f"amulet-lock-wait:{name}", daemon=True).start()
        try:
            ok = await fut
        except asyncio.CancelledError:
            cancel.set()
            # The wait may have succeeded just before the cancellation landed.
            if fut.done() and not fut.cancelled() and fut.exception() is None and fut.result():
                native.release(name, token)
            raise
        if not ok:  # the event was set although this task was not cancelled
            raise asyncio.CancelledError()
        return native.adopt((name,), token)

    # ---- statistics ------------------------------------------------------------

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Contention statistics: for one name (KeyError if unknown) a dict with
        kind, permits, holders, owner, depth, waiters, acquisitions, contended,
        timeouts, deadlocks, wait_total, wait_max (seconds); without a name,
        {name: that dict} for every registered name."""
        if name is None:
            return self._native.all_stats()
        s = self._native.stats(name)
        if s is None:
            raise KeyError(name)
        return s

    def __len__(self) -> int:
        """Names currently registered."""
        return len(self._native)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._native.stats(name) is not None

    def __repr__(self) -> str:
        return (
            f"LockManager(names={len(self)}, detect_deadlocks={self.detect_deadlocks}, "
            f"max_names={self.max_names})"
        )


_default: LockManager | None = None
_default_lock = threading.Lock()


def default_manager() -> LockManager:
    """The process-wide LockManager used by :func:`thread_safe_operation`."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LockManager()
        return _default


def thread_safe_operation(
    name: str,
    *,
    manager: LockManager | None = None,
    timeout: float | None = None,
    kind: LockKind = "rlock",
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: run the function while holding the named lock (of
    ``manager``, by default :func:`default_manager`).  Works on plain and on
    ``async def`` functions (those acquire with ``acquire_async``, so waiting
    never blocks the event loop).  The default kind is ``rlock`` so decorated
    functions may call each other.

    Example::

        @thread_safe_operation("model-reload", timeout=30)
        def reload_model() -> None: ...

        @thread_safe_operation("quota")
        async def charge(user: str) -> None: ...
    """
    _timeout_arg(timeout)
    _kind_arg(kind, 1)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def awrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                mgr = manager if manager is not None else default_manager()
                async with mgr.acquire_async(name, timeout=timeout, kind=kind):
                    return await afn(*args, **kwargs)

            return cast(Callable[P, R], awrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            mgr = manager if manager is not None else default_manager()
            with mgr.acquire(name, timeout=timeout, kind=kind):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
