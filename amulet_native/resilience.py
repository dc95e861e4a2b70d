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

This module holds the retry side (the testing switch, waits, budgets, the
engine, ``retrying``); the breaker lives in breaker.py, the bulkhead and
timeout in bulkhead.py, error context in error_tracking.py, the argument
checks in _resilience_args.py.  Import them all from here.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Self, cast

from . import _core
from ._resilience_args import (
    Clock,
    ExcSpec,
    P,
    R,
    _add_note,
    _bad,
    _count,
    _exc_predicate,
    _is_async,
    _is_cancellation,
    _seconds,
    _warn_hook,
)
from .breaker import (
    BreakerConfig,
    BreakerMetrics,
    CircuitBreaker,
    CircuitState,
    RedisBreakerStore,
    breakers,
)
from .bulkhead import Bulkhead, timeout
from .error_tracking import error_context, error_stats
from .errors import (
    AmuletError,
    BulkheadFullError,
    CircuitOpenError,
    OperationTimeoutError,
)

__all__ = [
    "BreakerConfig",
    "BreakerMetrics",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "OperationTimeoutError",
    "RedisBreakerStore",
    "RetryBudget",
    "RetryState",
    "RetryStatistics",
    "RetryThrottle",
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


class RetryThrottle:
    """gRPC-style retry throttling (gRFC A6): a token count starts at
    ``max_tokens``; every failed attempt takes one token, every success gives
    ``token_ratio`` back (never above ``max_tokens``); retries are allowed only
    while the count is above ``max_tokens / 2``.  So a dependency that keeps
    failing stops being retried after ``max_tokens / 2`` failures, and a
    recovering one earns its retries back through successes.  Pass it as
    ``retry(budget=...)``; shared by name like RetryBudget.  (Calls through a
    throttle take the Python path: every success has to be reported.)"""

    _shared: ClassVar[dict[str, RetryThrottle]] = {}

    def __new__(  # noqa: PYI034 - a named throttle returns the shared object
        cls, max_tokens: float = 10.0, token_ratio: float = 0.1, *, name: str | None = None
    ) -> RetryThrottle:
        with _budgets_lock:
            if name is not None and name in cls._shared:
                return cls._shared[name]
            if (
                isinstance(max_tokens, bool)
                or not isinstance(max_tokens, (int, float))
                or not (0 < max_tokens <= 1000)
            ):
                raise _bad(
                    "resilience.invalid_count", "max_tokens", "max_tokens must be in (0, 1000]"
                )
            if (
                isinstance(token_ratio, bool)
                or not isinstance(token_ratio, (int, float))
                or not (0 < token_ratio <= max_tokens)
            ):
                raise _bad(
                    "resilience.invalid_rate",
                    "token_ratio",
                    "token_ratio must be in (0, max_tokens]",
                )
            self = object.__new__(cls)
            self.max_tokens = float(max_tokens)
            self.token_ratio = float(token_ratio)
            self.tokens = float(max_tokens)
            self.name = name
            self._lock = threading.Lock()
            if name is not None:
                cls._shared[name] = self
            return self

    max_tokens: float
    token_ratio: float
    tokens: float
    name: str | None
    _lock: threading.Lock

    def success(self) -> None:
        with self._lock:
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def failure(self) -> None:
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1.0)

    def allow(self) -> bool:
        with self._lock:
            return self.tokens > self.max_tokens / 2

    def __repr__(self) -> str:
        return f"RetryThrottle(max_tokens={self.max_tokens}, token_ratio={self.token_ratio}, tokens={self.tokens:.2f})"


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
        budget: RetryBudget | RetryThrottle | str | None,
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
        if budget is not None and not isinstance(budget, (RetryBudget, RetryThrottle)):
            raise _bad(
                "resilience.invalid_budget",
                "budget",
                "budget must be a RetryBudget, a RetryThrottle, a budget name or None",
            )
        self.throttle = budget if isinstance(budget, RetryThrottle) else None
        self.budget = budget if isinstance(budget, RetryBudget) else None
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
        if outcome == "success" and self.throttle is not None:
            self.throttle.success()

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
        if exc is not None and self.throttle is not None:
            self.throttle.failure()
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
            if exc is not None and after > threading.TIMEOUT_MAX:
                # no sleep can honour it (time.sleep would raise OverflowError)
                return None, self.give_up(st, exc, "gave_up", f"retry_after={after:g}s")
        if self.timeout is not None:
            remaining = st.start + self.timeout - self.clock()
            if remaining <= 0 or (after is not None and after >= remaining):
                if exc is None:
                    self._finish(st, "deadline")
                    return None, None
                return None, self.give_up(st, exc, "deadline", f"timeout={self.timeout}s")
            wait = min(wait, remaining)
        if self.throttle is not None and not self.throttle.allow():
            _bump(self.name, "budget_exhausted")
            if exc is None:
                self._finish(st, "budget")
                return None, None
            return None, self.give_up(st, exc, "budget", "retries throttled")
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
    on: ExcSpec,
    *,
    attempts: int = 3,
    timeout: float | None = None,
    wait: WaitSpec = None,
    retry_if_result: Callable[[Any], bool] | None = None,
    before_sleep: Callable[[RetryState], object] | None = None,
    budget: RetryBudget | RetryThrottle | str | None = None,
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
        if _is_async(fn):
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
        # The native wrapper starts the engine (and so the clock) at the first
        # failure: a total timeout must count the first attempt too, and a
        # throttle or a result check must see every success.
        python_path = (
            retry_if_result is not None
            or policy.custom_clock
            or policy.throttle is not None
            or policy.timeout is not None
        )
        if python_path:
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

    def __init__(self, owner: _Run, number: int) -> None:
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
        on: ExcSpec,
        *,
        attempts: int = 3,
        timeout: float | None = None,
        wait: WaitSpec = None,
        before_sleep: Callable[[RetryState], object] | None = None,
        budget: RetryBudget | RetryThrottle | str | None = None,
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
        self._state = self._policy.start()  # the latest loop's (statistics)

    @property
    def statistics(self) -> RetryStatistics:
        return self._state.statistics

    def _run(self) -> _Run:
        # every loop over this object is a new call: its own state, clock
        # start and attempts (the object may be reused, even concurrently)
        run = _Run(self._policy)
        self._state = run.state
        return run

    def __iter__(self) -> Iterator[Attempt]:
        run = self._run()
        while True:
            if run.pending is not None:
                wait = run.pending
                run.pending = None
                if wait > 0:
                    self._policy.sleep(wait)
            a = run.next_attempt()
            if a is None:
                return
            yield a
            if run.pending is None and not run.done:
                run.done = True  # the body left the `with` by break/return

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        run = self._run()
        while True:
            if run.pending is not None:
                wait = run.pending
                run.pending = None
                if wait > 0:
                    await self._policy.asleep(wait)
            a = run.next_attempt()
            if a is None:
                return
            yield a
            if run.pending is None and not run.done:
                run.done = True


class _Run:
    """One loop over a ``retrying``: the state of that call only."""

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        self.state = policy.start()
        self.pending: float | None = None
        self.done = False
        _bump(policy.name, "python_calls")
        if policy.budget is not None:
            policy.budget.deposit()

    def _exit(self, exc: BaseException | None) -> bool:
        st = self.state
        if exc is None:
            self.policy._finish(st, "success")
            self.done = True
            return False
        st.last_exception = exc
        wait, _err = self.policy.next_wait(st, exc)
        if wait is None:
            self.done = True
            return False  # propagate (the note is already on it)
        self.pending = wait
        return True

    def next_attempt(self) -> Attempt | None:
        if self.done:
            return None
        self.state.attempt += 1
        return Attempt(self, self.state.attempt)
