"""error_context: operation context attached to exceptions, one structured
log record per error, and error statistics by (operation, code).
Re-exported by amulet_native.resilience."""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

from ._resilience_args import (
    P,
    R,
    _add_note,
    _bad,
    _is_async,
    _is_cancellation,
    _seconds,
    log,
)
from .errors import (
    AmuletError,
)

__all__ = ["error_context", "error_stats"]


# ---- error context and statistics --------------------------------------------------------------------

_ctx_stack: contextvars.ContextVar[tuple[tuple[str, Mapping[str, Any]], ...]] = (
    contextvars.ContextVar("amulet_error_context", default=())
)


@dataclass
class _ErrKey:
    count: int = 0
    last_seen: float = 0.0
    times: deque[float] = field(default_factory=lambda: deque(maxlen=10000))


_errors: dict[tuple[str, str], _ErrKey] = {}
_errors_lock = threading.Lock()


def _error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, AmuletError) else type(exc).__name__


def _count_error(operation: str, exc: BaseException) -> None:
    key = (operation, _error_code(exc))
    now = time.time()
    with _errors_lock:
        e = _errors.get(key)
        if e is None:
            e = _errors[key] = _ErrKey()
        e.count += 1
        e.last_seen = now
        e.times.append(time.monotonic())


def error_stats(
    *, window: float = 60.0, reset: bool = False
) -> dict[tuple[str, str], dict[str, float]]:
    """Errors seen by ``error_context`` per (operation, code or type name):
    ``count``, ``last_seen`` (wall time), ``rate`` (per second over the last
    ``window`` seconds).  ``reset=True`` clears them after reading."""
    w = cast(float, _seconds("window", window, allow_none=False, zero=False))
    now = time.monotonic()
    with _errors_lock:
        out = {
            k: {
                "count": v.count,
                "last_seen": v.last_seen,
                "rate": sum(1 for t in v.times if t > now - w) / w,
            }
            for k, v in _errors.items()
        }
        if reset:
            _errors.clear()
    return out


class error_context:
    """Attach ``operation`` and ``context`` to any exception leaving the block,
    log it once as a structured record, and count it by (operation, code)::

        with error_context("predict", image_id=42):
            model(x)

    AmuletError gets the keys in ``.context`` (``operation`` too; existing
    keys are kept); other exceptions get a note.  Nested contexts add their
    keys; the innermost logs (logger ``amulet_native.resilience``, with
    ``operation``, ``operations``, ``error_code`` and the context as extra
    fields) and counts.  Per task and per thread (contextvars).  Also a
    decorator for sync and async functions."""

    def __init__(self, operation: str, /, **context: Any) -> None:
        if not isinstance(operation, str) or not operation:
            raise _bad("resilience.invalid_name", "operation", "operation must be a non-empty str")
        self.operation = operation
        self.context = context

    # No token kept on the instance: one error_context object may be entered
    # by several tasks or threads at once, each in its own context; leaving
    # pops this context's innermost frame.
    def __enter__(self) -> Self:
        _ctx_stack.set((*_ctx_stack.get(), (self.operation, self.context)))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = _ctx_stack.get()
        _ctx_stack.set(stack[:-1])
        if exc is None or _is_cancellation(exc):
            return
        self._attach(exc, stack)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, exc, tb)

    def _attach(self, exc: BaseException, stack: tuple[tuple[str, Mapping[str, Any]], ...]) -> None:
        seen: list[str] = (
            exc.__dict__.setdefault("_amulet_operations", []) if hasattr(exc, "__dict__") else []
        )
        first = not seen
        seen.insert(0, self.operation)
        if isinstance(exc, AmuletError):
            exc.context.setdefault("operation", self.operation)
            for k, v in self.context.items():
                exc.context.setdefault(k, v)
        else:
            detail = ", ".join(f"{k}={v!r}" for k, v in self.context.items())
            _add_note(exc, f"in operation {self.operation!r}" + (f" ({detail})" if detail else ""))
        if first:
            _count_error(self.operation, exc)
            merged: dict[str, Any] = {}
            for _, ctx in stack:
                merged.update(ctx)
            extra = {
                "operation": self.operation,
                "operations": [op for op, _ in stack],
                "error_code": _error_code(exc),
                "error_context": merged,
            }
            log.error("%s failed: %s: %s", self.operation, type(exc).__name__, exc, extra=extra)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        op, ctx = self.operation, self.context
        if _is_async(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with error_context(op, **ctx):
                    return await afn(*args, **kwargs)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with error_context(op, **ctx):
                return fn(*args, **kwargs)

        return cast(Callable[P, R], wrapper)
