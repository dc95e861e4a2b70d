"""Circuit breakers with resilience4j semantics, the state machine and the
sliding window in C (csrc/core/ops/breaker.c), and their shared state in
Redis.  Public names are re-exported by amulet_native.resilience."""

from __future__ import annotations

import contextvars
import enum
import functools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

from . import _core
from ._resilience_args import (
    Clock,
    ExcSpec,
    P,
    R,
    _bad,
    _count,
    _exc_predicate,
    _is_async,
    _is_cancellation,
    _rate,
    _seconds,
    _warn_hook,
    log,
)
from .errors import (
    CircuitOpenError,
)

__all__ = [
    "BreakerConfig",
    "BreakerMetrics",
    "CircuitBreaker",
    "CircuitState",
    "RedisBreakerStore",
    "breakers",
]


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


_FOREVER_NS = 2**63 - 1  # retry_after_ns of a forced-open breaker

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
        self._reject_text = {
            int(st): (f"circuit {name!r} is {st.name.lower().replace('_', ' ')}", st.name)
            for st in CircuitState
        }
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
        c = self.config
        # the core caps minimum_calls at a count window's size: so do the rates
        minimum = min(c.minimum_calls, c.window) if c.window_type == "count" else c.minimum_calls
        enough = calls >= minimum or st == CircuitState.HALF_OPEN and calls > 0
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
        return None if ns >= _FOREVER_NS else ns / 1e9

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
        # The refusal is the hot path of an open circuit: build the error
        # without AmuletError.__init__'s keyword validation (the fields are
        # known), with the messages made once per breaker.
        state = self._native.state
        ns = self._native.retry_after_ns(self._now_ns())
        msg, state_name = self._reject_text[state]
        e = CircuitOpenError.__new__(CircuitOpenError, msg)
        e.message = msg
        e.code = "circuit.open"
        e.context = {
            "name": self.name,
            "retry_after": None if ns >= _FOREVER_NS else ns / 1e9,
            "state": state_name,
        }
        return e

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

    def _classify(self, exc: BaseException) -> bool | None:
        """True = a failure, False = a success, None = no outcome (cancelled,
        ignored, or a record/ignore predicate that raised: warned, and the
        permit handed back, so a buggy predicate never leaks a trial permit
        nor replaces the call's own exception)."""
        if _is_cancellation(exc):
            return None
        try:
            if self._ignore(exc):
                return None
            return bool(self._record(exc))
        except Exception as pred_exc:  # noqa: BLE001 - a predicate never breaks the breaker
            _warn_hook(f"breaker {self.name!r} record/ignore predicate", pred_exc)
            return None

    def _finish(self, ticket: int, start_ns: int, exc: BaseException | None) -> None:
        now = self._now_ns()
        end = now if now is not None else time.monotonic_ns()
        failed = False if exc is None else self._classify(exc)
        if failed is None:
            self._native.release(ticket)
            return
        self._on_transition(self._native.record(ticket, failed, end - start_ns, now))

    def _native_error(self, ticket: int, exc: BaseException, duration_ns: int) -> None:
        failed = self._classify(exc)
        if failed is None:
            self._native.release(ticket)
        else:
            self._on_transition(self._native.record(ticket, failed, duration_ns, None))
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
        if _is_async(fn):
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
