"""CircuitBreaker: every transition with an injected clock, the native and the
Python call paths, listeners, the registry, and half-open admission under 32
threads and 200 tasks (exactly ``half_open_calls`` admitted)."""

from __future__ import annotations

import asyncio
import pickle
import threading
import warnings
from typing import Any

import pytest

import amulet_native as an
from amulet_native import resilience as rs
from amulet_native.errors import CircuitOpenError, ResilienceWarning, ValidationError
from amulet_native.resilience import CircuitState


def st(b: rs.CircuitBreaker) -> CircuitState:
    return b.state  # a call, so the checker does not narrow the property


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom


def ok() -> str:
    return "ok"


def run(b: rs.CircuitBreaker, fn: Any) -> str:
    try:
        return str(b.call(fn))
    except Boom:
        return "boom"
    except CircuitOpenError:
        return "open"


def test_count_window_transitions() -> None:
    clock = Clock()
    seen: list[tuple[CircuitState, CircuitState]] = []
    b = rs.CircuitBreaker(
        "t-count", window=10, minimum_calls=4, wait_in_open=30, half_open_calls=2, clock=clock
    )
    b.add_listener(lambda br, old, new: seen.append((old, new)))
    assert st(b) == CircuitState.CLOSED
    for _ in range(3):
        assert run(b, fail) == "boom"
    assert st(b) == CircuitState.CLOSED  # below minimum_calls
    assert b.metrics().failure_rate == -1.0
    assert run(b, fail) == "boom"
    assert st(b) == CircuitState.OPEN
    assert seen == [(CircuitState.CLOSED, CircuitState.OPEN)]
    with pytest.raises(CircuitOpenError) as ei:
        b.call(ok)
    assert ei.value.code == "circuit.open" and ei.value.name == "t-count"
    assert ei.value.retry_after == pytest.approx(30.0)
    clock.t += 10
    assert run(b, ok) == "open"
    assert b.retry_after == pytest.approx(20.0)
    assert b.metrics().not_permitted == 2
    clock.t += 20  # wait_in_open elapsed: the next call is a trial
    assert run(b, ok) == "ok"
    assert st(b) == CircuitState.HALF_OPEN
    assert run(b, fail) == "boom"  # 1 of 2 failed: 50% >= 50% -> OPEN again
    assert st(b) == CircuitState.OPEN
    clock.t += 30
    assert run(b, ok) == "ok" and run(b, ok) == "ok"
    assert st(b) == CircuitState.CLOSED
    assert b.metrics().calls == 0  # a fresh window
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


def test_failure_rate_threshold_and_sliding() -> None:
    b = rs.CircuitBreaker("t-rate", window=10, minimum_calls=10, failure_rate=0.5, clock=Clock())
    for i in range(10):
        run(b, fail if i % 3 == 0 else ok)  # 4 of 10 fail: 40%
    assert st(b) == CircuitState.CLOSED
    assert b.metrics().failure_rate == pytest.approx(0.4)
    run(b, fail)  # slot 0 (a failure) replaced by a failure: still 40%
    run(b, fail)  # slot 1 (success) -> failure: 50% -> OPEN
    assert st(b) == CircuitState.OPEN


def test_time_window() -> None:
    clock = Clock(5000.0)
    b = rs.CircuitBreaker("t-time", window_type="time", window=10, minimum_calls=3, clock=clock)
    run(b, fail)
    clock.t += 6
    run(b, fail)
    clock.t += 6  # the first failure left the 10 s window
    run(b, ok)
    m = b.metrics()
    assert (m.calls, m.failures) == (2, 1)
    assert st(b) == CircuitState.CLOSED
    run(b, fail)  # 2 of 3 in the window
    assert st(b) == CircuitState.OPEN


def test_slow_calls_open_the_circuit() -> None:
    clock = Clock()

    def slow() -> str:
        clock.t += 2.0
        return "slow"

    b = rs.CircuitBreaker(
        "t-slow",
        window=4,
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate=0.75,
        clock=clock,
    )
    run(b, slow)
    run(b, ok)
    run(b, slow)
    assert st(b) == CircuitState.CLOSED
    run(b, slow)
    assert st(b) == CircuitState.OPEN
    assert b.metrics().slow == 3


def test_record_and_ignore() -> None:
    b = rs.CircuitBreaker(
        "t-rec", window=2, minimum_calls=2, record=(Boom,), ignore=KeyError, clock=Clock()
    )

    def key() -> None:
        raise KeyError

    def val() -> None:
        raise ValueError

    for fn in (key, key, key):
        with pytest.raises(KeyError):
            b.call(fn)
    assert b.metrics().calls == 0  # ignored: neither failure nor success
    for fn in (val, val):
        with pytest.raises(ValueError):
            b.call(fn)
    assert b.metrics().failures == 0 and b.metrics().calls == 2  # unlisted: success
    assert st(b) == CircuitState.CLOSED
    b2 = rs.CircuitBreaker("t-pred", window=2, minimum_calls=2, record=lambda e: "bad" in str(e))
    for _ in range(2):
        with pytest.raises(ValueError):
            b2.call(lambda: (_ for _ in ()).throw(ValueError("bad")))
    assert st(b2) == CircuitState.OPEN


def test_native_decorator_and_methods() -> None:
    b = rs.CircuitBreaker("t-native", window=4, minimum_calls=4, wait_in_open=60)

    @b
    def add(x: int, y: int = 1) -> int:
        """doc"""
        if x < 0:
            raise Boom
        return x + y

    class Svc:
        @b
        def m(self, x: int) -> tuple[Svc, int]:
            return self, x

    s = Svc()
    assert add(1) == 2 and add(1, y=5) == 6
    assert s.m(3) == (s, 3)
    assert (
        add.__name__ == "add"
        and add.__doc__ == "doc"
        and getattr(add, "__wrapped__", None) is not None
    )
    assert type(add).__name__ == "BreakerCall"
    for _ in range(4):
        with pytest.raises(Boom):
            add(-1)
        if st(b) == CircuitState.OPEN:
            break
    assert st(b) == CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        add(1)
    b.reset()
    assert st(b) == CircuitState.CLOSED and add(1) == 2
    b.force_open()
    with pytest.raises(CircuitOpenError) as ei:
        add(1)
    assert ei.value.retry_after is None and st(b) == CircuitState.FORCED_OPEN
    b.reset()


def test_context_manager_and_async() -> None:
    b = rs.CircuitBreaker("t-cm", window=2, minimum_calls=2, failure_rate=1.0)
    with b:
        pass
    with pytest.raises(Boom), b:
        raise Boom

    @b
    async def co(x: int) -> int:
        if x < 0:
            raise Boom
        return x

    async def main() -> None:
        assert await co(4) == 4
        async with b:
            pass
        with pytest.raises(Boom):
            await co(-1)

    asyncio.run(main())
    m = b.metrics()
    assert m.total_calls == 5 and m.total_failures == 2


def test_cancellation_is_not_counted() -> None:
    b = rs.CircuitBreaker("t-cancel", window=2, minimum_calls=1)

    @b
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        t = asyncio.create_task(slow())
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())

    @b
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert b.metrics().calls == 0 and st(b) == CircuitState.CLOSED


def test_raising_listener_warns_and_state_is_intact() -> None:
    b = rs.CircuitBreaker("t-listener", window=1, minimum_calls=1)

    def bad(br: Any, old: Any, new: Any) -> None:
        raise RuntimeError("listener bug")

    b.add_listener(bad)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(Boom):
            b.call(fail)
    assert any(issubclass(x.category, ResilienceWarning) for x in w)
    assert st(b) == CircuitState.OPEN
    assert b.metrics().transitions == 1


def test_registry_and_errors_pickle() -> None:
    b = rs.CircuitBreaker("t-registry")
    assert an.breakers()["t-registry"] is b
    e = CircuitOpenError("x", name="n", retry_after=1.5)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.code, e2.name, e2.retry_after) == ("circuit.open", "n", 1.5)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"failure_rate": 0}, "resilience.invalid_rate"),
        ({"failure_rate": 1.5}, "resilience.invalid_rate"),
        ({"slow_call_rate": float("nan")}, "resilience.invalid_rate"),
        ({"window": 0}, "resilience.invalid_count"),
        ({"minimum_calls": -1}, "resilience.invalid_count"),
        ({"half_open_calls": 0}, "resilience.invalid_count"),
        ({"wait_in_open": -1}, "resilience.invalid_duration"),
        ({"wait_in_open": float("nan")}, "resilience.invalid_duration"),
        ({"window_type": "sliding"}, "resilience.invalid_window"),
        ({"record": 42}, "resilience.invalid_on"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as ei:
        rs.CircuitBreaker("bad", **kwargs)
    assert ei.value.code == code


def _half_open(name: str, n: int) -> rs.CircuitBreaker:
    b = rs.CircuitBreaker(name, window=1, minimum_calls=1, wait_in_open=0.0, half_open_calls=n)
    b.force_open()
    b._transition(CircuitState.OPEN)  # OPEN with wait 0: the next call half-opens
    return b


def _hammer_half_open(b: rs.CircuitBreaker, threads: int, tries: int) -> tuple[int, int]:
    """threads x tries calls at a HALF_OPEN breaker; an admitted trial holds its
    permit until every thread has either been admitted or refused `tries`
    times.  Returns (admitted, threads refused every time)."""
    gate = threading.Event()
    start = threading.Barrier(threads)
    admitted: list[int] = []
    finished: list[int] = []
    lock = threading.Lock()

    def trial() -> None:
        with lock:
            admitted.append(1)
        gate.wait(30)

    def worker() -> None:
        start.wait()
        for _ in range(tries):
            try:
                b.call(trial)
                return
            except CircuitOpenError:
                pass
        with lock:
            finished.append(1)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for _ in range(3000):  # wait (not a timing assertion) until every thread is accounted for
        with lock:
            if len(finished) + len(admitted) >= threads:
                break
        threading.Event().wait(0.01)
    with lock:
        result = (len(admitted), len(finished))
    gate.set()
    for t in pool:
        t.join(30)
    return result


def test_half_open_admits_exactly_n_under_32_threads() -> None:
    for round_ in range(5):
        b = _half_open(f"t-ho-threads-{round_}", 4)
        assert _hammer_half_open(b, 32, 20) == (4, 28)
        assert st(b) == CircuitState.CLOSED  # the 4 trials succeeded


def test_half_open_admits_exactly_n_under_200_tasks() -> None:
    b = _half_open("t-ho-tasks", 7)
    admitted = 0

    async def main() -> None:
        gate = asyncio.Event()

        @b
        async def trial() -> None:
            nonlocal admitted
            admitted += 1
            await gate.wait()

        async def one() -> str:
            try:
                await trial()
                return "ok"
            except CircuitOpenError:
                return "open"

        tasks = [asyncio.create_task(one()) for _ in range(200)]
        await asyncio.sleep(0.05)
        gate.set()
        results = await asyncio.gather(*tasks)
        assert results.count("ok") == 7 and results.count("open") == 193

    asyncio.run(main())
    assert admitted == 7
