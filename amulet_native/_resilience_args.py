"""Argument checks and shared helpers of the resilience layer (resilience.py,
breaker.py, bulkhead.py, error_tracking.py): every bad argument becomes a
ValidationError with a stable ``resilience.*`` code at construction."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from .errors import (
    ResilienceWarning,
    ValidationError,
)

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("amulet_native.resilience")

Clock = Callable[[], float]
ExcTypes = type[BaseException] | tuple[type[BaseException], ...]
ExcSpec = ExcTypes | Callable[[BaseException], bool]


# ---- validation -------------------------------------------------------------------------


def _bad(code: str, field_name: str, message: str) -> ValidationError:
    return ValidationError(message, code=code, field=field_name)


def _seconds(
    name: str, value: float | None, *, allow_none: bool = True, zero: bool = True
) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise _bad("resilience.invalid_duration", name, f"{name} must be a number of seconds")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(
            "resilience.invalid_duration",
            name,
            f"{name} must be a number, not {type(value).__name__}",
        )
    v = float(value)
    if math.isnan(v) or v < 0 or (not zero and v == 0) or math.isinf(v):
        raise _bad(
            "resilience.invalid_duration",
            name,
            f"{name} must be finite and {'>=' if zero else '>'} 0, got {value!r}",
        )
    return v


def _rate(name: str, value: float, *, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _bad("resilience.invalid_rate", name, f"{name} must be a number in [0, 1]")
    if not ((0 <= value <= 1) if zero else (0 < value <= 1)):
        raise _bad(
            "resilience.invalid_rate",
            name,
            f"{name} must be in {'[0' if zero else '(0'}, 1], got {value!r}",
        )
    return float(value)


def _count(name: str, value: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f" and <= {maximum}" if maximum is not None else ""
        raise _bad(
            "resilience.invalid_count",
            name,
            f"{name} must be an int >= {minimum}{bound}, got {value!r}",
        )
    return value


def _exc_predicate(name: str, on: ExcSpec) -> Callable[[BaseException], bool]:
    if isinstance(on, type) and issubclass(on, BaseException):
        return lambda e: isinstance(e, on)
    if isinstance(on, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in on
    ):
        return lambda e: isinstance(e, on)
    if callable(on):
        return cast(Callable[[BaseException], bool], on)
    raise _bad(
        "resilience.invalid_on", name, f"{name} must be exception types or a predicate, got {on!r}"
    )


def _is_async(fn: object) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one (a
    sync wrapper would return its coroutine unawaited: nothing retried or
    counted)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's, not callable()
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _is_cancellation(exc: BaseException) -> bool:
    return not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError)


def _add_note(exc: BaseException, note: str) -> None:
    """Best effort: an exception that refuses notes (``__notes__`` not a list,
    a read-only attribute) is raised unannotated, never replaced."""
    add = getattr(exc, "add_note", None)
    try:
        if add is not None:
            add(note)
        else:  # Python 3.10
            notes = list(getattr(exc, "__notes__", []))
            notes.append(note)
            setattr(exc, "__notes__", notes)  # noqa: B010 - no add_note before 3.11
    except Exception:  # noqa: BLE001, S110 - the original exception matters more
        pass


def _warn_hook(what: str, exc: BaseException) -> None:
    warnings.warn(f"{what} raised {type(exc).__name__}: {exc}", ResilienceWarning, stacklevel=3)
