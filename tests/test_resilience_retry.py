"""retry / retrying / RetryBudget: semantics without real sleeps (the testing
switch, an injected clock and sleep), jitter bounds, deadlines, Retry-After,
per-call state, statistics, and the budget capping retries under a 100%
failing dependency."""

from __future__ import annotations

import asyncio
import statistics
import threading
from typing import Any

import pytest

import amulet_native as an
from amulet_native import resilience as rs
from amulet_native.errors import ValidationError


class FakeTime:
    """An injected clock whose sleep advances it (no real waiting)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s

    async def asleep(self, s: float) -> None:
        self.sleep(s)


class Flaky:
    def __init__(self, failures: int, exc: type[BaseException] = ConnectionError) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc

    def __call__(self, x: int = 0) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"fail {self.calls}")
        return x + 1


@pytest.fixture(autouse=True)
def _no_wait() -> Any:
    with rs.testing(no_wait=True):
        yield


def test_retries_listed_exceptions_until_success() -> None:
    f = Flaky(2)
    g = an.retry(on=ConnectionError, attempts=3)(f)
    assert g(4) == 5 and f.calls == 3
    assert type(g).__name__ == "RetryCall"  # the native success path


def test_unlisted_exception_propagates_at_once() -> None:
    f = Flaky(2, exc=KeyError)
    g = an.retry(on=ConnectionError, attempts=5)(f)
    with pytest.raises(KeyError) as ei:
        g()
    assert f.calls == 1
    assert not getattr(ei.value, "__notes__", [])


def test_gives_up_with_the_last_exception_and_a_note() -> None:
    f = Flaky(10)
    g = an.retry(on=ConnectionError, attempts=4, name="t-giveup")(f)
    with pytest.raises(ConnectionError, match="fail 4") as ei:
        g()
    assert f.calls == 4
    assert "gave up after 4 attempts" in ei.value.__notes__[-1]
    s = an.retry_stats("t-giveup")
    assert s["calls"] == 1 and s["retries"] == 3 and s["give_ups"] == 1 and s["attempts"] == 4


def test_predicate_on() -> None:
    f = Flaky(1, exc=ValueError)
    g = an.retry(on=lambda e: "fail" in str(e), attempts=2)(f)
    assert g() == 1 and f.calls == 2


def test_testing_switch_disables_and_caps() -> None:
    f = Flaky(5)
    g = an.retry(on=ConnectionError, attempts=10)(f)
    with rs.testing(enabled=False):
        with pytest.raises(ConnectionError):
            g()
        assert f.calls == 1
    with rs.testing(attempts=2):
        with pytest.raises(ConnectionError):
            g()
        assert f.calls == 3
    rs.testing(attempts=3)  # as a function: stays on
    try:
        f.calls = 0
        with pytest.raises(ConnectionError):
            g()
        assert f.calls == 3
    finally:
        rs.testing.off()
    rs.testing(no_wait=True)  # back to the fixture's mode for the rest


def test_waits_follow_the_strategy_with_injected_sleep() -> None:
    ft = FakeTime()
    with rs.testing(no_wait=False):
        g = an.retry(
            on=ConnectionError,
            attempts=5,
            wait=rs.backoff(initial=1, max=5, jitter=None),
            clock=ft.clock,
            sleep=ft.sleep,
        )(Flaky(4))
        assert g() == 1
    assert ft.sleeps == [1, 2, 4, 5]
    ft2 = FakeTime()
    with rs.testing(no_wait=False):
        g = an.retry(on=ConnectionError, attempts=3, wait=0.25, clock=ft2.clock, sleep=ft2.sleep)(
            Flaky(2)
        )
        g()
    assert ft2.sleeps == [0.25, 0.25]
    ft3 = FakeTime()
    with rs.testing(no_wait=False):
        g = an.retry(
            on=ConnectionError,
            attempts=3,
            wait=lambda s: s.attempt * 10.0,
            clock=ft3.clock,
            sleep=ft3.sleep,
        )(Flaky(2))
        g()
    assert ft3.sleeps == [10.0, 20.0]


def test_deadline_is_honoured() -> None:
    ft = FakeTime()
    f = Flaky(100)
    with rs.testing(no_wait=False):
        g = an.retry(
            on=ConnectionError, attempts=100, timeout=10, wait=3.0, clock=ft.clock, sleep=ft.sleep
        )(f)
        with pytest.raises(ConnectionError) as ei:
            g()
    assert ft.t - 100.0 <= 10.0 + 1e-9
    assert sum(ft.sleeps) <= 10.0
    assert ft.sleeps[-1] == pytest.approx(1.0)  # capped by the deadline
    assert "timeout=10" in ei.value.__notes__[-1]


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("429")
        self.retry_after = retry_after


def test_retry_after_is_honoured_and_capped_by_the_deadline() -> None:
    ft = FakeTime()
    calls = []

    def fn() -> str:
        calls.append(ft.t)
        if len(calls) == 1:
            raise RateLimited(7.0)
        return "ok"

    with rs.testing(no_wait=False):
        g = an.retry(on=RateLimited, attempts=3, wait=0.1, clock=ft.clock, sleep=ft.sleep)(fn)
        assert g() == "ok"
    assert ft.sleeps == [7.0]
    # an AmuletError's context works too, and a Retry-After past the deadline gives up
    ft2 = FakeTime()
    n = [0]

    def fn2() -> None:
        n[0] += 1
        raise an.NetworkError("busy", context={"retry_after": 60.0})

    with rs.testing(no_wait=False):
        g2 = an.retry(on=an.NetworkError, attempts=5, timeout=30, clock=ft2.clock, sleep=ft2.sleep)(
            fn2
        )
        with pytest.raises(an.NetworkError):
            g2()
    assert n[0] == 1 and ft2.sleeps == []


def test_jitter_bounds_statistically() -> None:
    st = rs.RetryState("x", attempt=3, start=0.0)
    full = rs.backoff(initial=1, max=100, multiplier=2, jitter="full")
    xs = [full(st) for _ in range(20000)]
    assert min(xs) >= 0 and max(xs) <= 4.0
    assert statistics.mean(xs) == pytest.approx(2.0, rel=0.05)  # uniform [0, 4]
    eq = rs.backoff(initial=1, max=100, jitter="equal")
    ys = [eq(st) for _ in range(20000)]
    assert min(ys) >= 2.0 and max(ys) <= 4.0
    assert statistics.mean(ys) == pytest.approx(3.0, rel=0.05)
    dec = rs.backoff(initial=1, max=5, jitter="decorrelated")
    st.last_wait = 2.0
    zs = [dec(st) for _ in range(20000)]
    assert min(zs) >= 1.0 and max(zs) <= 5.0
    capped = rs.backoff(initial=1, max=3, jitter=None)
    assert capped(rs.RetryState("x", attempt=50, start=0)) == 3.0


def test_state_is_per_call_under_threads() -> None:
    barrier = threading.Barrier(8)
    local = threading.local()

    @an.retry(on=ConnectionError, attempts=3, name="t-percall")
    def fn(i: int) -> int:
        n = getattr(local, "n", 0) + 1
        local.n = n
        if n == 1:
            barrier.wait(10)
            raise ConnectionError
        return i

    out: dict[int, int] = {}

    def run(i: int) -> None:
        out[i] = fn(i)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert out == {i: i for i in range(8)}
    assert an.retry_stats("t-percall")["retries"] == 8


def test_retry_if_result_and_methods_and_async() -> None:
    vals = iter([None, None, 3])
    g = an.retry(on=(), attempts=5, retry_if_result=lambda r: r is None)(lambda: next(vals))
    assert g() == 3

    class Api:
        def __init__(self) -> None:
            self.f = Flaky(1)

        @an.retry(on=ConnectionError)
        def get(self, x: int) -> int:
            return self.f(x)

    assert Api().get(1) == 2

    f = Flaky(2)

    @an.retry(on=ConnectionError, attempts=3)
    async def co(x: int) -> int:
        await asyncio.sleep(0)
        return f(x)

    assert asyncio.run(co(1)) == 2 and f.calls == 3


def test_cancellation_is_never_retried() -> None:
    n = [0]

    @an.retry(on=BaseException, attempts=5)
    def ki() -> None:
        n[0] += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ki()
    assert n[0] == 1

    @an.retry(on=BaseException, attempts=5)
    async def cancelled() -> None:
        n[0] += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    assert n[0] == 2


def test_retrying_sync_and_async() -> None:
    f = Flaky(2)
    r = rs.retrying(on=ConnectionError, attempts=3)
    for attempt in r:
        with attempt:
            value = f(1)
    assert value == 2 and f.calls == 3
    assert r.statistics.attempts == 3 and r.statistics.outcome == "success"
    with pytest.raises(ConnectionError) as ei:
        for attempt in rs.retrying(on=ConnectionError, attempts=2):
            with attempt:
                Flaky(5)()
    assert "gave up after 2" in ei.value.__notes__[-1]

    async def main() -> int:
        g = Flaky(1)
        async for attempt in rs.retrying(on=ConnectionError):
            async with attempt:
                return g(5)
        return -1

    assert asyncio.run(main()) == 6


def test_hook_that_raises_warns() -> None:
    def hook(state: rs.RetryState) -> None:
        raise RuntimeError("hook bug")

    g = an.retry(on=ConnectionError, attempts=2, before_sleep=hook)(Flaky(1))
    with pytest.warns(an.ResilienceWarning):
        assert g() == 1


def test_retry_on_failure_original_name() -> None:
    f = Flaky(3)
    assert an.retry_on_failure(max_retries=3, delay=0.01)(f)() == 1 and f.calls == 4


def test_budget_caps_retries_under_a_failing_dependency() -> None:
    ft = FakeTime()
    budget = an.RetryBudget(ratio=0.2, min_per_second=0, ttl=10, clock=ft.clock)
    dep = Flaky(10**9)
    g = an.retry(
        on=ConnectionError,
        attempts=5,
        budget=budget,
        name="t-budget",
        clock=ft.clock,
        sleep=ft.sleep,
    )(dep)
    requests = 500
    for _ in range(requests):
        with pytest.raises(ConnectionError):
            g()
        ft.t += 0.01  # 500 calls over 5 s, inside one ttl
    retries = dep.calls - requests
    assert retries <= 0.2 * requests + 1
    assert retries >= 0.2 * requests - 5
    s = an.retry_stats("t-budget")
    assert s["budget_exhausted"] > 0 and s["retries"] == retries
    # without a budget the same load makes 4 retries per call
    assert budget.stats()["refused"] == s["budget_exhausted"]


def test_budget_shared_by_name_and_native_path() -> None:
    a = an.RetryBudget(ratio=0.1, min_per_second=0, name="t-shared")
    b = an.RetryBudget(ratio=0.9, name="t-shared")
    assert a is b and b.ratio == 0.1
    dep = Flaky(10**9)
    g = an.retry(on=ConnectionError, attempts=3, budget="t-shared")(dep)
    for _ in range(100):
        with pytest.raises(ConnectionError):
            g()
    assert dep.calls - 100 <= 11


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"attempts": 0}, "resilience.invalid_count"),
        ({"attempts": -1}, "resilience.invalid_count"),
        ({"timeout": float("nan")}, "resilience.invalid_duration"),
        ({"timeout": -1}, "resilience.invalid_duration"),
        ({"wait": float("nan")}, "resilience.invalid_duration"),
        ({"wait": "soon"}, "resilience.invalid_wait"),
        ({"on": 3}, "resilience.invalid_on"),
        ({"budget": 3}, "resilience.invalid_budget"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(ValidationError) as ei:
        an.retry(**({"on": ConnectionError} | kwargs))
    assert ei.value.code == code


def test_bad_backoff_and_budget() -> None:
    with pytest.raises(ValidationError):
        rs.backoff(initial=float("nan"))
    with pytest.raises(ValidationError):
        rs.backoff(jitter="random")
    with pytest.raises(ValidationError):
        an.RetryBudget(ratio=-0.1)
    with pytest.raises(ValidationError):
        an.RetryBudget(ttl=0)


def test_native_wrappers_do_not_leak_references() -> None:
    import gc
    import sys

    arg = object()

    @an.retry(on=ConnectionError, attempts=2)
    def retried(x: object, *, k: object = None) -> None:
        raise ConnectionError

    breaker = an.CircuitBreaker("t-refs", failure_rate=1.0, window=10**4, minimum_calls=10**4)

    @breaker
    def guarded(x: object, *, k: object = None) -> object:
        if k is None:
            raise KeyError
        return x

    before = sys.getrefcount(arg)
    for _ in range(500):
        with pytest.raises(ConnectionError):
            retried(arg, k=arg)
        with pytest.raises(KeyError):
            guarded(arg)
        assert guarded(arg, k=arg) is arg
    gc.collect()
    assert sys.getrefcount(arg) <= before + 2  # the last exception's frames, at most


def test_grpc_style_throttle() -> None:
    throttle = an.RetryThrottle(max_tokens=10, token_ratio=0.5, name="t-throttle")
    assert an.RetryThrottle(name="t-throttle") is throttle
    dep = Flaky(10**9)
    g = an.retry(on=ConnectionError, attempts=5, budget=throttle, name="t-throttle")(dep)
    with pytest.raises(ConnectionError) as ei:
        g()
    # 10 tokens: failures take 1 each; retries stop once tokens <= 5
    assert dep.calls == 5 and throttle.tokens == 5.0
    with pytest.raises(ConnectionError) as ei:
        g()
    assert dep.calls == 6  # no retry at all now
    assert "throttled" in ei.value.__notes__[-1]
    ok = an.retry(on=ConnectionError, budget=throttle)(lambda: 1)
    for _ in range(4):
        ok()  # each success earns 0.5 back
    assert throttle.tokens == 6.0 and throttle.allow()  # 5 - 1 + 4 x 0.5
    with pytest.raises(ValidationError):
        an.RetryThrottle(max_tokens=0)


def test_deadline_counts_the_first_attempt() -> None:
    ft = FakeTime()
    n = [0]

    def slow_then_fail() -> None:
        n[0] += 1
        ft.t += 11.0  # the first attempt alone outlasts the 10 s deadline
        raise ConnectionError

    with rs.testing(no_wait=False):
        g = an.retry(on=ConnectionError, attempts=5, timeout=10, clock=ft.clock, sleep=ft.sleep)(
            slow_then_fail
        )
        with pytest.raises(ConnectionError):
            g()
    assert n[0] == 1


def test_a_total_timeout_starts_the_clock_before_the_first_attempt() -> None:
    # the native wrapper only enters Python at the first failure, which would
    # start the deadline late: with a timeout the Python wrapper is used
    assert type(an.retry(on=ConnectionError, timeout=5)(Flaky(0))).__name__ == "function"
    assert type(an.retry(on=ConnectionError)(Flaky(0))).__name__ == "RetryCall"
