"""Retries with budgets, circuit breakers, bulkheads, timeouts and error context.

The layer every service wraps its model calls and outbound requests in, with
the hot paths native:

    from amulet_native import resilience as rs

    budget = rs.RetryBudget(ratio=0.2, name="model")      # retries <= 20% of calls
    breaker = rs.CircuitBreaker("model", failure_rate=0.5, wait_in_open=10)

    @rs.retry(on=ConnectionError, attempts=4, budget=budget)
    @breaker
    def predict(x): ...

    with rs.error_context("predict", image_id=42):
        predict(x)

- ``retry`` only retries what ``on`` lists; waits are exponential with full
  jitter by default, bounded by ``attempts`` and a total ``timeout``, and an
  exception's ``retry_after`` (an HTTP 429/503) is honoured.  A successful call
  of a decorated sync function is one native vectorcall (``_core.RetryCall``):
  the Python engine below only runs after an exception.
- ``RetryBudget`` (Finagle/Envoy): retries allowed <= ratio x recent requests +
  a floor, shared by name; a spent budget raises the original error at once.
- ``CircuitBreaker``: resilience4j semantics with the state machine and the
  window in C (``csrc/core/ops/breaker.c``); the decorated sync call is a
  native ``_core.BreakerCall``.
- ``Bulkhead`` bounds concurrent calls on ObjectPool's native slot counter;
  ``timeout`` cancels an async operation; ``error_context`` attaches context
  to exceptions, logs them once and counts them (``error_stats``).
- Tests turn waiting off with ``testing(no_wait=True)`` (or retries with
  ``testing(enabled=False)``) instead of mocking ``time.sleep``.

Cancellation (``asyncio.CancelledError``, ``KeyboardInterrupt``) is never
retried and never counted as a failure of a dependency.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import inspect
import logging
import math
import random
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, cast, overload

from . import _core
from .errors import (
    AmuletError,
    BulkheadFullError,
    CircuitOpenError,
    OperationTimeoutError,
    PoolTimeoutError,
    ResilienceWarning,
    ValidationError,
)

__all__ = [
    "Bulkhead",
    "CircuitBreaker",
    "CircuitState",
    "RedisBreakerStore",
    "RetryBudget",
    "RetryStatistics",
    "backoff",
    "breakers",
    "error_context",
    "error_stats",
    "retry",
    "retry_on_failure",
    "retry_stats",
    "retrying",
    "testing",
    "timeout",
]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

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


def _is_cancellation(exc: BaseException) -> bool:
    return not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError)


def _add_note(exc: BaseException, note: str) -> None:
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(note)
    else:  # Python 3.10
        notes = list(getattr(exc, "__notes__", []))
        notes.append(note)
        setattr(exc, "__notes__", notes)  # noqa: B010 - no add_note before 3.11


def _warn_hook(what: str, exc: BaseException) -> None:
    warnings.warn(f"{what} raised {type(exc).__name__}: {exc}", ResilienceWarning, stacklevel=3)


# ---- the testing switch -------------------------------------------------------------------


@dataclass(frozen=True)
class _TestMode:
    enabled: bool
    attempts: int | None
    no_wait: bool


_test_mode: _TestMode | None = None
_test_lock = threading.Lock()


class testing:
    """Switch retries into test mode, at once, for the whole process.

    ``testing(enabled=False)`` turns retrying off (one attempt);
    ``testing(attempts=2)`` caps the attempts; ``no_wait=True`` (the default)
    skips every wait.  Use it as a function (until ``testing.off()``) or as a
    context manager (restored on exit)::

        with rs.testing(attempts=3):
            ...   # retries happen, without sleeping
    """

    def __init__(
        self, enabled: bool = True, *, attempts: int | None = None, no_wait: bool = True
    ) -> None:
        global _test_mode
        if attempts is not None:
            _count("attempts", attempts)
        with _test_lock:
            self._previous = _test_mode
            _test_mode = _TestMode(bool(enabled), attempts, bool(no_wait))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        global _test_mode
        with _test_lock:
            _test_mode = self._previous

    @staticmethod
    def off() -> None:
        """Leave test mode."""
        global _test_mode
        with _test_lock:
            _test_mode = None

    @staticmethod
    def active() -> bool:
        return _test_mode is not None


# ---- waits ------------------------------------------------------------------------------


_JITTERS = ("full", "equal", "decorrelated", None)


class backoff:
    """Exponential backoff: the n-th wait is ``min(max, initial * multiplier**(n-1))``
    with jitter ``"full"`` (uniform in [0, w], the default: AWS's advice against
    synchronised retries), ``"equal"`` (w/2 + uniform [0, w/2]),
    ``"decorrelated"`` (uniform [initial, 3 x previous wait], capped) or None."""

    __slots__ = ("_rng", "initial", "jitter", "max", "multiplier")

    def __init__(
        self,
        initial: float = 0.1,
        max: float = 10.0,
        multiplier: float = 2.0,
        jitter: str | None = "full",
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = cast(float, _seconds("initial", initial, allow_none=False))
        self.max = cast(float, _seconds("max", max, allow_none=False))
        if (
            isinstance(multiplier, bool)
            or not isinstance(multiplier, (int, float))
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            raise _bad(
                "resilience.invalid_wait",
                "multiplier",
                f"multiplier must be a finite number >= 1, got {multiplier!r}",
            )
        if jitter not in _JITTERS:
            raise _bad(
                "resilience.invalid_wait",
                "jitter",
                f"jitter must be one of {_JITTERS}, got {jitter!r}",
            )
        if self.max < self.initial:
            raise _bad("resilience.invalid_wait", "max", "max must be >= initial")
        self.multiplier = float(multiplier)
        self.jitter = jitter
        self._rng = rng or random.Random()

    def __call__(self, state: RetryState) -> float:
        n = state.attempt  # 1 after the first failure
        if self.jitter == "decorrelated":
            prev = state.last_wait if state.last_wait > 0 else self.initial
            return min(self.max, self._rng.uniform(self.initial, prev * 3))
        try:
            w = min(self.max, self.initial * self.multiplier ** (n - 1))
        except OverflowError:
            w = self.max
        if self.jitter == "full":
            return self._rng.uniform(0, w)
        if self.jitter == "equal":
            return w / 2 + self._rng.uniform(0, w / 2)
        return w

    def __repr__(self) -> str:
        return f"backoff(initial={self.initial}, max={self.max}, multiplier={self.multiplier}, jitter={self.jitter!r})"


WaitSpec = float | int | backoff | Callable[["RetryState"], float] | None


def _wait_fn(wait: WaitSpec) -> Callable[[RetryState], float]:
    if wait is None:
        return lambda s: 0.0
    if isinstance(wait, (int, float)) and not isinstance(wait, bool):
        fixed = cast(float, _seconds("wait", wait, allow_none=False))
        return lambda s: fixed
    if callable(wait):
        return wait
    raise _bad(
        "resilience.invalid_wait",
        "wait",
        f"wait must be seconds, backoff(...) or a callable, got {wait!r}",
    )


def _retry_after(exc: BaseException) -> float | None:
    """Seconds an exception asks to wait (``retry_after`` attribute or context key)."""
    v = getattr(exc, "retry_after", None)
    if v is None and isinstance(exc, AmuletError):
        v = exc.context.get("retry_after")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return None


# ---- retry budgets ------------------------------------------------------------------------


_budgets: dict[str, RetryBudget] = {}
_budgets_lock = threading.Lock()


class RetryBudget:
    """Finagle/Envoy retry budget: retries are allowed while those of the last
    ``ttl`` seconds stay under ``ratio`` x the requests of the same period plus
    ``min_per_second`` x ``ttl``.  Every call deposits, every retry withdraws.

    ``RetryBudget(..., name="model")`` is shared: a second construction with the
    same name returns the first object (its settings win), so every function
    retrying against one dependency spends one budget.  The counts are native
    (``_core.RetryBudget``); a call deposits with one atomic add."""

    _native: Any
    _clock: Clock | None
    name: str | None

    def __new__(  # noqa: PYI034 - a named budget returns the shared object
        cls,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        ttl: float = 10.0,
        *,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> RetryBudget:
        if name is not None:
            with _budgets_lock:
                found = _budgets.get(name)
                if found is not None:
                    return found
                self = cls._make(ratio, min_per_second, ttl, name, clock)
                _budgets[name] = self
                return self
        return cls._make(ratio, min_per_second, ttl, name, clock)

    @classmethod
    def _make(
        cls, ratio: float, min_per_second: float, ttl: float, name: str | None, clock: Clock | None
    ) -> RetryBudget:
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not (0 <= ratio <= 1000)
        ):
            raise _bad(
                "resilience.invalid_rate", "ratio", f"ratio must be in [0, 1000], got {ratio!r}"
            )
        mps = cast(float, _seconds("min_per_second", min_per_second, allow_none=False))
        ttl_s = cast(float, _seconds("ttl", ttl, allow_none=False, zero=False))
        if ttl_s > 3600:
            raise _bad("resilience.invalid_duration", "ttl", "ttl must be <= 3600 s")
        self = object.__new__(cls)
        self.name = name
        self.ratio = float(ratio)
        self.min_per_second = mps
        self.ttl = ttl_s
        self._clock = clock
        self._native = _core.RetryBudget(float(ratio), mps, max(1, math.ceil(ttl_s)))
        return self

    ratio: float
    min_per_second: float
    ttl: float

    def _now_ns(self) -> int | None:
        return None if self._clock is None else int(self._clock() * 1e9)

    def deposit(self) -> None:
        """Count one request (done by ``retry`` on every call)."""
        self._native.deposit(self._now_ns())

    def withdraw(self) -> bool:
        """Take one retry: True if the budget allows it (and counts it)."""
        return bool(self._native.withdraw(self._now_ns()))

    def stats(self) -> dict[str, float]:
        """Requests and retries over the last ttl, refusals since creation, balance."""
        q, r, refused, balance = self._native.stats(self._now_ns())
        return {"requests": q, "retries": r, "refused": refused, "balance": balance}

    def __repr__(self) -> str:
        return f"RetryBudget(ratio={self.ratio}, min_per_second={self.min_per_second}, ttl={self.ttl}, name={self.name!r})"


# ---- retry: statistics --------------------------------------------------------------------


@dataclass
class RetryStatistics:
    """Statistics of one finished (or running) retried call."""

    name: str
    attempts: int = 0
    waited: float = 0.0
    elapsed: float = 0.0
    outcome: str = "running"  # success | gave_up | deadline | budget | not_retryable | disabled


@dataclass
class _NameStats:
    python_calls: int = 0
    retries: int = 0
    give_ups: int = 0
    budget_exhausted: int = 0
    wrappers: list[Any] = field(default_factory=list)  # RetryCall objects (native call counts)


_stats: dict[str, _NameStats] = {}
_stats_lock = threading.Lock()


def _name_stats(name: str) -> _NameStats:
    with _stats_lock:
        s = _stats.get(name)
        if s is None:
            s = _stats[name] = _NameStats()
        return s


def _bump(name: str, attr: str) -> None:
    s = _name_stats(name)
    with _stats_lock:
        setattr(s, attr, getattr(s, attr) + 1)


def retry_stats(name: str | None = None) -> dict[str, Any]:
    """Process-wide counters per retry name: ``calls``, ``attempts`` (calls +
    retries), ``retries``, ``give_ups``, ``budget_exhausted``.  With ``name``,
    that name's dict; without, a dict of all of them."""

    def one(s: _NameStats) -> dict[str, int]:
        calls = s.python_calls + sum(w.calls for w in s.wrappers)
        return {
            "calls": calls,
            "attempts": calls + s.retries,
            "retries": s.retries,
            "give_ups": s.give_ups,
            "budget_exhausted": s.budget_exhausted,
        }

    with _stats_lock:
        if name is not None:
            s = _stats.get(name)
            return one(s) if s is not None else one(_NameStats())
        return {k: one(v) for k, v in _stats.items()}


# ---- retry: the engine --------------------------------------------------------------------


@dataclass
class RetryState:
    """What hooks and wait callables see: the state of one call, never shared."""

    name: str
    attempt: int  # attempts made so far
    start: float
    last_exception: BaseException | None = None
    last_result: Any = None
    last_wait: float = 0.0
    waited: float = 0.0
    statistics: RetryStatistics = field(default_factory=lambda: RetryStatistics(""))


class _Policy:
    """The immutable configuration of a retry, and its decisions."""

    def __init__(
        self,
        on: ExcSpec,
        attempts: int,
        timeout: float | None,
        wait: WaitSpec,
        retry_if_result: Callable[[Any], bool] | None,
        before_sleep: Callable[[RetryState], object] | None,
        budget: RetryBudget | str | None,
        name: str | None,
        clock: Clock | None,
        sleep: Callable[[float], object] | None,
        asleep: Callable[[float], Awaitable[object]] | None,
    ) -> None:
        self.retryable = _exc_predicate("on", on)
        self.attempts = _count("attempts", attempts)
        self.timeout = _seconds("timeout", timeout, zero=False)
        self.wait = _wait_fn(wait)
        if retry_if_result is not None and not callable(retry_if_result):
            raise _bad(
                "resilience.invalid_hook", "retry_if_result", "retry_if_result must be callable"
            )
        if before_sleep is not None and not callable(before_sleep):
            raise _bad("resilience.invalid_hook", "before_sleep", "before_sleep must be callable")
        self.retry_if_result = retry_if_result
        self.before_sleep = before_sleep
        if isinstance(budget, str):
            budget = RetryBudget(name=budget)
        if budget is not None and not isinstance(budget, RetryBudget):
            raise _bad(
                "resilience.invalid_budget",
                "budget",
                "budget must be a RetryBudget, a budget name or None",
            )
        self.budget = budget
        self.name = name or "retry"
        self.clock: Clock = clock or time.monotonic
        self.sleep: Callable[[float], object] = sleep or time.sleep
        self.asleep: Callable[[float], Awaitable[object]] = asleep or asyncio.sleep
        self.custom_clock = clock is not None

    def start(self) -> RetryState:
        st = RetryState(self.name, 0, self.clock())
        st.statistics = RetryStatistics(self.name)
        return st

    def _finish(self, st: RetryState, outcome: str) -> None:
        s = st.statistics
        s.attempts = st.attempt
        s.waited = st.waited
        s.elapsed = self.clock() - st.start
        s.outcome = outcome

    def give_up(self, st: RetryState, exc: BaseException, outcome: str, why: str) -> BaseException:
        self._finish(st, outcome)
        if outcome != "not_retryable":
            _bump(self.name, "give_ups")
            _add_note(
                exc,
                f"{self.name}: gave up after {st.attempt} attempt{'s' if st.attempt != 1 else ''} over {st.statistics.elapsed:.3f}s ({why})",
            )
        return exc

    def next_wait(
        self, st: RetryState, exc: BaseException | None
    ) -> tuple[float | None, BaseException | None]:
        """After a failed attempt (exc, or a rejected result): (seconds to wait,
        None) to retry, or (None, the exception to raise) / (None, None) to stop."""
        if exc is not None and (_is_cancellation(exc) or not self.retryable(exc)):
            if exc is not None and not _is_cancellation(exc):
                self._finish(st, "not_retryable")
            return None, exc
        mode = _test_mode
        limit = self.attempts
        if mode is not None:
            if not mode.enabled:
                limit = 1
            elif mode.attempts is not None:
                limit = mode.attempts
        if st.attempt >= limit:
            if exc is None:
                self._finish(st, "gave_up")
                _bump(self.name, "give_ups")
                return None, None
            return None, self.give_up(
                st,
                exc,
                "disabled" if limit == 1 and mode is not None and not mode.enabled else "gave_up",
                f"attempts={limit}",
            )
        wait = self.wait(st)
        if not (isinstance(wait, (int, float)) and math.isfinite(wait) and wait >= 0):
            raise _bad("resilience.invalid_wait", "wait", f"the wait callable returned {wait!r}")
        after = _retry_after(exc) if exc is not None else None
        if after is not None:
            wait = max(wait, after)
        if self.timeout is not None:
            remaining = st.start + self.timeout - self.clock()
            if remaining <= 0 or (after is not None and after >= remaining):
                if exc is None:
                    self._finish(st, "deadline")
                    return None, None
                return None, self.give_up(st, exc, "deadline", f"timeout={self.timeout}s")
            wait = min(wait, remaining)
        if self.budget is not None and not self.budget.withdraw():
            _bump(self.name, "budget_exhausted")
            if exc is None:
                self._finish(st, "budget")
                return None, None
            return None, self.give_up(st, exc, "budget", "retry budget exhausted")
        _bump(self.name, "retries")
        if mode is not None and mode.no_wait:
            wait = 0.0
        st.last_wait = wait
        st.waited += wait
        if self.before_sleep is not None:
            try:
                self.before_sleep(st)
            except Exception as hook_exc:  # noqa: BLE001 - a hook never breaks the retry
                _warn_hook("before_sleep", hook_exc)
        return wait, None

    # -- sync ------------------------------------------------------------------

    def run_sync(
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None,
        first: BaseException | None = None,
    ) -> R:
        st = self.start()
        kw = kwargs or {}
        if first is not None:
            st.attempt = 1
            st.last_exception = first
            wait, exc = self.next_wait(st, first)
            if wait is None:
                raise cast(BaseException, exc)
            if wait > 0:
                self.sleep(wait)
        else:
            _bump(self.name, "python_calls")
            if self.budget is not None:
                self.budget.deposit()
        while True:
            st.attempt += 1
            try:
                result = fn(*args, **kw)
            except BaseException as e:  # noqa: BLE001 - classified by next_wait
                st.last_exception = e
                wait, exc = self.next_wait(st, e)
                if wait is None:
                    raise cast(BaseException, exc)
                if wait > 0:
                    self.sleep(wait)
                continue
            if self.retry_if_result is not None and self.retry_if_result(result):
                st.last_result = result
                wait, _ = self.next_wait(st, None)
                if wait is None:
                    return result
                if wait > 0:
                    self.sleep(wait)
                continue
            self._finish(st, "success")
            return result

    async def run_async(
        self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> R:
        st = self.start()
        _bump(self.name, "python_calls")
        if self.budget is not None:
            self.budget.deposit()
        while True:
            st.attempt += 1
            try:
                result = await fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - classified by next_wait
                st.last_exception = e
                wait, exc = self.next_wait(st, e)
                if wait is None:
                    raise cast(BaseException, exc)
                if wait > 0:
                    await self.asleep(wait)
                continue
            if self.retry_if_result is not None and self.retry_if_result(result):
                st.last_result = result
                wait, _ = self.next_wait(st, None)
                if wait is None:
                    return result
                if wait > 0:
                    await self.asleep(wait)
                continue
            self._finish(st, "success")
            return result


def _qualname(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or ""
    qn = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{mod}.{qn}" if mod else str(qn)


def retry(
    on: ExcSpec = Exception,
    *,
    attempts: int = 3,
    timeout: float | None = None,
    wait: WaitSpec = None,
    retry_if_result: Callable[[Any], bool] | None = None,
    before_sleep: Callable[[RetryState], object] | None = None,
    budget: RetryBudget | str | None = None,
    name: str | None = None,
    clock: Clock | None = None,
    sleep: Callable[[float], object] | None = None,
    asleep: Callable[[float], Awaitable[object]] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Retry a function (sync or ``async def``) on the exceptions ``on`` lists.

    ``attempts`` (>= 1) and ``timeout`` (total seconds, monotonic) bound it;
    ``wait`` defaults to ``backoff()`` (exponential, full jitter); an exception
    with ``retry_after`` is honoured, capped by the deadline; ``budget`` caps
    the share of retries.  When it gives up, the last exception is raised as
    itself with a note saying how many attempts over how long.  ``name``
    (default: the function's qualified name) keys ``retry_stats()``::

        @retry(on=(ConnectionError, TimeoutError), attempts=5, timeout=30)
        def fetch(url: str) -> bytes: ...
    """
    policy_args = (
        on,
        attempts,
        timeout,
        backoff() if wait is None else wait,
        retry_if_result,
        before_sleep,
        budget,
    )
    # validate now (bad arguments fail at decoration time)
    _Policy(*policy_args, name, clock, sleep, asleep)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        policy = _Policy(*policy_args, name or _qualname(fn), clock, sleep, asleep)
        stats = _name_stats(policy.name)
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await policy.run_async(afn, args, kwargs)

            async_wrapper.retry_policy = policy  # type: ignore[attr-defined]
            return cast(Callable[P, R], async_wrapper)
        native_budget = None
        if policy.budget is not None:
            if policy.budget._clock is not None:
                return _python_wrapper(fn, policy)
            native_budget = policy.budget._native
        if retry_if_result is not None or policy.custom_clock:
            return _python_wrapper(fn, policy)
        # the fast path: one native call on success, the engine on failure
        engine = functools.partial(_engine_after_first_failure, policy, fn)
        wrapper = _core.RetryCall(fn, engine, native_budget)
        functools.update_wrapper(wrapper, fn)
        setattr(wrapper, "retry_policy", policy)  # noqa: B010 - the wrapper's __dict__
        with _stats_lock:
            stats.wrappers.append(wrapper)
        return cast(Callable[P, R], wrapper)

    return decorate


def _engine_after_first_failure(
    policy: _Policy,
    fn: Callable[..., Any],
    first: BaseException,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
) -> Any:
    return policy.run_sync(fn, args, kwargs, first)


def _python_wrapper(fn: Callable[P, R], policy: _Policy) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return policy.run_sync(fn, args, kwargs)

    wrapper.retry_policy = policy  # type: ignore[attr-defined]
    return cast(Callable[P, R], wrapper)


def retry_on_failure(
    max_retries: int = 3, delay: float = 1.0, *, on: ExcSpec = Exception
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The original system's decorator: up to ``max_retries`` retries (so
    ``max_retries + 1`` attempts) with exponential backoff from ``delay``."""
    _count("max_retries", max_retries, minimum=0)
    d = cast(float, _seconds("delay", delay, allow_none=False))
    return retry(
        on=on,
        attempts=max_retries + 1,
        wait=backoff(initial=d, max=max(d, d * 2**max_retries), jitter=None) if d > 0 else 0.0,
    )


# ---- retrying: an iterator of attempts ------------------------------------------------------


class Attempt:
    """One attempt of ``retrying``: a context manager that records its outcome."""

    def __init__(self, owner: retrying, number: int) -> None:
        self._owner = owner
        self.number = number

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self._owner._exit(exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self._owner._exit(exc)


class retrying:
    """Retry a block::

        for attempt in retrying(on=ConnectionError, attempts=3):
            with attempt:
                data = fetch()

    (``async for`` too).  ``statistics`` holds this call's numbers once done.
    Takes the same arguments as ``retry``."""

    def __init__(
        self,
        on: ExcSpec = Exception,
        *,
        attempts: int = 3,
        timeout: float | None = None,
        wait: WaitSpec = None,
        before_sleep: Callable[[RetryState], object] | None = None,
        budget: RetryBudget | str | None = None,
        name: str = "retrying",
        clock: Clock | None = None,
        sleep: Callable[[float], object] | None = None,
        asleep: Callable[[float], Awaitable[object]] | None = None,
    ) -> None:
        self._policy = _Policy(
            on,
            attempts,
            timeout,
            backoff() if wait is None else wait,
            None,
            before_sleep,
            budget,
            name,
            clock,
            sleep,
            asleep,
        )
        self._state = self._policy.start()
        self._pending: tuple[float | None, BaseException | None] | None = None
        self._done = False
        self._started = False

    @property
    def statistics(self) -> RetryStatistics:
        return self._state.statistics

    def _begin(self) -> None:
        if not self._started:
            self._started = True
            _bump(self._policy.name, "python_calls")
            if self._policy.budget is not None:
                self._policy.budget.deposit()

    def _exit(self, exc: BaseException | None) -> bool:
        st = self._state
        if exc is None:
            self._policy._finish(st, "success")
            self._done = True
            return False
        st.last_exception = exc
        wait, _err = self._policy.next_wait(st, exc)
        if wait is None:
            self._done = True
            return False  # propagate (the note is already on it)
        self._pending = (wait, None)
        return True

    def _next_attempt(self) -> Attempt | None:
        if self._done:
            return None
        self._begin()
        self._state.attempt += 1
        return Attempt(self, self._state.attempt)

    def __iter__(self) -> Iterator[Attempt]:
        while True:
            if self._pending is not None:
                wait = self._pending[0] or 0.0
                self._pending = None
                if wait > 0:
                    self._policy.sleep(wait)
            a = self._next_attempt()
            if a is None:
                return
            yield a
            if self._pending is None and not self._done:
                self._done = True  # the body left the `with` by break/return

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        while True:
            if self._pending is not None:
                wait = self._pending[0] or 0.0
                self._pending = None
                if wait > 0:
                    await self._policy.asleep(wait)
            a = self._next_attempt()
            if a is None:
                return
            yield a
            if self._pending is None and not self._done:
                self._done = True


# ---- circuit breaker ------------------------------------------------------------------------


class CircuitState(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2
    FORCED_OPEN = 3


@dataclass(frozen=True)
class BreakerConfig:
    """The immutable configuration of a breaker (its state lives in C)."""

    failure_rate: float
    slow_call_rate: float
    slow_call_duration: float | None
    window: int
    window_type: str
    minimum_calls: int
    wait_in_open: float
    half_open_calls: int


@dataclass(frozen=True)
class BreakerMetrics:
    name: str
    state: CircuitState
    calls: int  # in the window (HALF_OPEN: the trial calls so far)
    failures: int
    slow: int
    failure_rate: float  # -1.0 until minimum_calls were recorded
    slow_call_rate: float
    not_permitted: int
    total_calls: int
    total_failures: int
    transitions: int
    store_errors: int


_breakers: weakref.WeakValueDictionary[str, CircuitBreaker] = weakref.WeakValueDictionary()
_breakers_lock = threading.Lock()


def breakers() -> dict[str, CircuitBreaker]:
    """Every live breaker by name (``{name: breaker}``; ``breaker.state`` each)."""
    with _breakers_lock:
        return dict(_breakers)


Listener = Callable[["CircuitBreaker", CircuitState, CircuitState], object]


class CircuitBreaker:
    """A resilience4j-style circuit breaker with its state machine in C.

    CLOSED -> OPEN when, over the sliding ``window`` (outcomes for
    ``window_type="count"``, seconds for ``"time"``) and once ``minimum_calls``
    were recorded, the failure rate reaches ``failure_rate`` or the share of
    calls slower than ``slow_call_duration`` reaches ``slow_call_rate``;
    OPEN -> HALF_OPEN after ``wait_in_open`` seconds; in HALF_OPEN exactly
    ``half_open_calls`` trial calls go through and decide CLOSED or OPEN.

    Exceptions matching ``record`` (types or a predicate; default Exception)
    are failures, those matching ``ignore`` are neither failure nor success,
    any other exception counts as a success; cancellations are never counted.

    Use it as a decorator (sync: a native wrapper; async), as a context manager
    (``with breaker:`` / ``async with breaker:``) or ``breaker.call(fn, ...)``.
    A refused call raises ``CircuitOpenError`` without calling anything."""

    def __init__(
        self,
        name: str,
        *,
        failure_rate: float = 0.5,
        slow_call_rate: float = 1.0,
        slow_call_duration: float | None = None,
        window: int = 100,
        window_type: str = "count",
        minimum_calls: int | None = None,
        wait_in_open: float = 30.0,
        half_open_calls: int = 5,
        record: ExcSpec = Exception,
        ignore: ExcSpec = (),
        listeners: tuple[Listener, ...] | list[Listener] = (),
        clock: Clock | None = None,
        store: RedisBreakerStore | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise _bad("resilience.invalid_name", "name", "name must be a non-empty str")
        if window_type not in ("count", "time"):
            raise _bad(
                "resilience.invalid_window",
                "window_type",
                f"window_type must be 'count' or 'time', got {window_type!r}",
            )
        win = _count("window", window, maximum=100000)
        mc = _count(
            "minimum_calls",
            minimum_calls
            if minimum_calls is not None
            else min(win, 10)
            if window_type == "count"
            else 10,
        )
        slow = _seconds("slow_call_duration", slow_call_duration, zero=False)
        self.config = BreakerConfig(
            _rate("failure_rate", failure_rate),
            _rate("slow_call_rate", slow_call_rate),
            slow,
            win,
            window_type,
            mc,
            cast(float, _seconds("wait_in_open", wait_in_open, allow_none=False)),
            _count("half_open_calls", half_open_calls, maximum=10000),
        )
        self.name = name
        self._record = _exc_predicate("record", record)
        self._ignore = _exc_predicate("ignore", ignore) if ignore != () else (lambda e: False)
        self._listeners: list[Listener] = list(listeners)
        self._clock = clock
        c = self.config
        self._native = _core.Breaker(
            c.failure_rate,
            c.slow_call_rate,
            int((c.slow_call_duration or 0) * 1e9),
            c.window,
            c.window_type == "time",
            c.minimum_calls,
            int(c.wait_in_open * 1e9),
            c.half_open_calls,
        )
        self._tickets: contextvars.ContextVar[tuple[tuple[int, int], ...]] = contextvars.ContextVar(
            f"breaker:{name}", default=()
        )
        self.store = store
        self._store_errors = 0
        self._next_sync = 0.0
        if store is not None:
            store._attach(self)
        with _breakers_lock:
            _breakers[name] = self

    # -- clock and store ---------------------------------------------------------

    def _now_ns(self) -> int | None:
        return None if self._clock is None else int(self._clock() * 1e9)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.monotonic()

    def _sync(self) -> None:
        if self.store is not None:
            now = self._now()
            if now >= self._next_sync:
                self._next_sync = now + self.store.sync_interval
                self.store._pull(self)

    # -- state -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        self._sync()
        if (
            self._native.state == CircuitState.OPEN
            and self._native.retry_after_ns(self._now_ns()) == 0
        ):
            # due for a trial: report it as resilience4j does once a call arrives
            return CircuitState.OPEN
        return CircuitState(self._native.state)

    def metrics(self) -> BreakerMetrics:
        st, calls, fails, slow, np_, tc, tf, tr, _ = self._native.metrics(self._now_ns())
        enough = calls >= self.config.minimum_calls or st == CircuitState.HALF_OPEN and calls > 0
        return BreakerMetrics(
            self.name,
            CircuitState(st),
            calls,
            fails,
            slow,
            fails / calls if enough and calls else -1.0,
            slow / calls if enough and calls else -1.0,
            np_,
            tc,
            tf,
            tr,
            self._store_errors,
        )

    @property
    def retry_after(self) -> float | None:
        """Seconds until a trial call is let through (None when forced open)."""
        ns = self._native.retry_after_ns(self._now_ns())
        return None if ns >= 2**63 - 1 else ns / 1e9

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(breaker, old_state, new_state)`` after every transition,
        outside any lock; an exception in it is turned into a ResilienceWarning."""
        self._listeners.append(fn)

    def _on_transition(self, code: int, *, publish: bool = True) -> None:
        if code < 0:
            return
        old, new = CircuitState(code >> 4), CircuitState(code & 0xF)
        if publish and self.store is not None:
            self.store._push(self, old, new)
        log.info(
            "circuit %s: %s -> %s",
            self.name,
            old.name,
            new.name,
            extra={"breaker": self.name, "old_state": old.name, "new_state": new.name},
        )
        for fn in list(self._listeners):
            try:
                fn(self, old, new)
            except Exception as exc:  # noqa: BLE001 - a listener never breaks the breaker
                _warn_hook(f"breaker {self.name!r} listener {fn!r}", exc)

    def _transition(self, to: CircuitState, from_state: int = -1) -> None:
        self._on_transition(self._native.transition(int(to), self._now_ns(), from_state))

    def force_open(self) -> None:
        """Refuse every call until ``reset()``."""
        self._transition(CircuitState.FORCED_OPEN)

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        self._transition(CircuitState.CLOSED)

    # -- the call protocol -------------------------------------------------------

    def _reject(self) -> CircuitOpenError:
        ra = self.retry_after
        st = CircuitState(self._native.state)
        return CircuitOpenError(
            f"circuit {self.name!r} is {st.name.lower()}",
            name=self.name,
            retry_after=ra,
            state=st.name,
        )

    def _native_reject(self) -> None:
        raise self._reject()

    def _acquire(self) -> tuple[int, int]:
        self._sync()
        now = self._now_ns()
        ticket, tr = self._native.acquire(now)
        if tr >= 0:
            self._on_transition(tr)
        if ticket < 0:
            raise self._reject()
        return ticket, (now if now is not None else time.monotonic_ns())

    def _finish(self, ticket: int, start_ns: int, exc: BaseException | None) -> None:
        now = self._now_ns()
        end = now if now is not None else time.monotonic_ns()
        if exc is not None and (_is_cancellation(exc) or self._ignore(exc)):
            self._native.release(ticket)
            return
        failed = exc is not None and self._record(exc)
        self._on_transition(self._native.record(ticket, failed, end - start_ns, now))

    def _native_error(self, ticket: int, exc: BaseException, duration_ns: int) -> None:
        if _is_cancellation(exc) or self._ignore(exc):
            self._native.release(ticket)
        else:
            self._on_transition(self._native.record(ticket, self._record(exc), duration_ns, None))
        raise exc

    def call(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Call ``fn(*args, **kwargs)`` through the breaker."""
        ticket, start = self._acquire()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._finish(ticket, start, exc)
            raise
        self._finish(ticket, start, None)
        return result

    async def acall(self, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any) -> R:
        ticket, start = self._acquire()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._finish(ticket, start, exc)
            raise
        self._finish(ticket, start, None)
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.acall(afn, *args, **kwargs)

            return cast(Callable[P, R], async_wrapper)
        if self._clock is not None or self.store is not None:

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self.call(fn, *args, **kwargs)

            return cast(Callable[P, R], wrapper)
        w = _core.BreakerCall(
            self._native, fn, self._on_transition, self._native_reject, self._native_error
        )
        functools.update_wrapper(w, fn)
        setattr(w, "breaker", self)  # noqa: B010 - the wrapper's __dict__
        return cast(Callable[P, R], w)

    def __enter__(self) -> Self:
        t = self._acquire()
        self._tickets.set((*self._tickets.get(), t))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = self._tickets.get()
        self._tickets.set(stack[:-1])
        self._finish(stack[-1][0], stack[-1][1], exc)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, exc, tb)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {CircuitState(self._native.state).name}>"


# ---- shared breaker state in Redis -------------------------------------------------------------

# KEYS[1] = the breaker's hash.  ARGV: to_state, now (Redis server time is not
# used: the callers' wall clocks are NTP-synchronised hosts of one service),
# from_state (-1 = any).  One transition, atomically: OPEN keeps the first
# opener's time when several processes open at once.  Returns {state, epoch,
# opened_at}.
_TRANSITION_LUA = """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'opened_at')
local state = tonumber(h[1]) or 0
local epoch = tonumber(h[2]) or 0
local opened = h[3] or '0'
local to = tonumber(ARGV[1])
local from = tonumber(ARGV[3])
if (state ~= to or not h[1]) and (from < 0 or from == state) then
  epoch = epoch + 1
  if to == 1 or to == 3 then opened = ARGV[2] end
  redis.call('HSET', KEYS[1], 'state', to, 'epoch', epoch, 'opened_at', opened)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  state = to
end
return {state, epoch, opened}
"""


class RedisBreakerStore:
    """Share breaker state across workers and hosts through Redis.

    Every transition runs one atomic Lua script on ``{prefix}{name}`` (so two
    breakers of different names never share a key, and the OPEN time is the
    first opener's, shared by all); breakers pull the shared state at most
    every ``sync_interval`` seconds.  When Redis is unreachable the breaker
    keeps working on its local state and counts the failure
    (``metrics().store_errors``); it catches up by itself when Redis returns.
    Each process runs its own half-open trial calls."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "amulet:breaker:",
        sync_interval: float = 0.2,
        socket_timeout: float = 0.25,
        ttl: int = 86400,
        client: Any = None,
    ) -> None:
        self.prefix = prefix
        self.sync_interval = cast(float, _seconds("sync_interval", sync_interval, allow_none=False))
        self.ttl = ttl
        if client is None:
            try:
                import redis
            except ImportError as e:  # pragma: no cover - depends on the extra
                raise ImportError(
                    "RedisBreakerStore needs the redis client: pip install 'amulet_native[redis]'"
                ) from e
            client = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        self._client = client
        self._script = client.register_script(_TRANSITION_LUA)
        self._epochs: dict[str, int] = {}
        self._unpublished: set[str] = set()  # names whose last transition did not reach Redis
        self.errors = 0

    def _key(self, b: CircuitBreaker) -> str:
        return f"{self.prefix}{b.name}"

    def _attach(self, b: CircuitBreaker) -> None:
        self._pull(b)

    def _failed(self, b: CircuitBreaker, exc: BaseException) -> None:
        self.errors += 1
        b._store_errors += 1
        log.warning(
            "breaker %s: Redis unreachable (%s); using local state", b.name, type(exc).__name__
        )

    def _apply(self, b: CircuitBreaker, state: int, epoch: int, opened_at: float) -> None:
        self._epochs[b.name] = epoch
        local = b._native.state
        if state != local:
            code = b._native.transition(state, b._now_ns(), -1)
            if state in (CircuitState.OPEN, CircuitState.FORCED_OPEN) and opened_at > 0:
                mono = b._now() - (time.time() - opened_at)
                b._native.set_opened_at(int(mono * 1e9))
            b._on_transition(code, publish=False)

    def _pull(self, b: CircuitBreaker) -> None:
        if b.name in self._unpublished:
            # Redis missed our last transition: ours is the newer state
            st = CircuitState(b._native.state)
            self._push(b, st, st)
            return
        try:
            st, ep, op = self._client.hmget(self._key(b), "state", "epoch", "opened_at")
        except Exception as exc:  # noqa: BLE001 - any client error: stay local
            self._failed(b, exc)
            return
        if st is None:
            return
        epoch = int(ep or 0)
        if epoch > self._epochs.get(b.name, 0):
            self._apply(b, int(st), epoch, float(op or 0))

    def _push(self, b: CircuitBreaker, old: CircuitState, new: CircuitState) -> None:
        try:
            st, ep, op = self._script(
                keys=[self._key(b)], args=[int(new), repr(time.time()), -1, self.ttl]
            )
        except Exception as exc:  # noqa: BLE001 - any client error: stay local
            self._unpublished.add(b.name)
            self._failed(b, exc)
            return
        self._unpublished.discard(b.name)
        self._epochs[b.name] = int(ep)
        if int(st) == int(new) and new in (CircuitState.OPEN, CircuitState.FORCED_OPEN):
            mono = b._now() - (time.time() - float(op))
            b._native.set_opened_at(int(mono * 1e9))


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
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

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
        while self._waiters:
            f = self._waiters.popleft()
            if not f.done():
                f.set_result(None)
                return

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
        if inspect.iscoroutinefunction(fn):
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

    async def __aenter__(self) -> Self:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("timeout() must be used inside a task")
        self._task = task
        self._fired = False
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
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
            raise OperationTimeoutError(
                f"{self.operation or 'operation'} took longer than {self.seconds}s",
                seconds=self.seconds,
                operation=self.operation,
            ) from exc

    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        if not inspect.iscoroutinefunction(fn):
            raise _bad(
                "resilience.invalid_target", "fn", "timeout() decorates async functions only"
            )
        seconds, op = self.seconds, self.operation or getattr(fn, "__qualname__", None)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            async with timeout(seconds, operation=op):
                return await fn(*args, **kwargs)

        return wrapper


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
        self._tokens: list[contextvars.Token[tuple[tuple[str, Mapping[str, Any]], ...]]] = []

    def __enter__(self) -> Self:
        self._tokens.append(_ctx_stack.set((*_ctx_stack.get(), (self.operation, self.context))))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack = _ctx_stack.get()
        _ctx_stack.reset(self._tokens.pop())
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
        if inspect.iscoroutinefunction(fn):
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


# keep names used only in annotations importable for users
_ = (Generic, overload)
