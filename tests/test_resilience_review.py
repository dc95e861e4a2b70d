"""Adversarial review of the resilience layer (issue 17): each test pins a
defect found in review and fixed on branch review-17."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from amulet_native import resilience as rs
from amulet_native.errors import CircuitOpenError, ResilienceWarning
from amulet_native.resilience import CircuitState


class Boom(Exception):
    pass


def _fail() -> None:
    raise Boom


def test_native_breaker_success_that_reopens_keeps_wait_in_open() -> None:
    # The native wrapper skips the clock on a closed breaker without slow
    # calls; a success completing a failed half-open trial used to open the
    # circuit "at time 0", so the next call was let through at once.
    b = rs.CircuitBreaker("review-ho-reopen", failure_rate=0.5, half_open_calls=2, wait_in_open=60)
    flaky = iter([Boom(), None])

    @b
    def call() -> str:
        e = next(flaky)
        if e is not None:
            raise e
        return "ok"

    b._transition(CircuitState.HALF_OPEN)
    with pytest.raises(Boom):
        call()
    assert call() == "ok"  # completes the trial: 1 of 2 failed -> OPEN again
    assert b.state == CircuitState.OPEN
    ra = b.retry_after
    assert ra is not None and ra > 30
    with pytest.raises(CircuitOpenError):
        call()


def test_native_breaker_success_reaching_minimum_calls_opens_with_real_time() -> None:
    b = rs.CircuitBreaker("review-min-open", failure_rate=0.5, minimum_calls=2, wait_in_open=60)
    outcomes = iter([Boom(), None, None])

    @b
    def call() -> str:
        e = next(outcomes)
        if e is not None:
            raise e
        return "ok"

    with pytest.raises(Boom):
        call()
    assert call() == "ok"  # 2 calls, 1 failure: 50% -> OPEN
    assert b.state == CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        call()


@pytest.mark.parametrize("which", ["record", "ignore"])
@pytest.mark.parametrize("native", [True, False])
def test_breaker_predicate_raising_never_leaks_a_half_open_permit(which: str, native: bool) -> None:
    calls = {"n": 0}

    def bad(e: BaseException) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("predicate bug")
        return isinstance(e, Boom)

    kw: dict[str, Any] = {which: bad}
    b = rs.CircuitBreaker(f"review-pred-{which}-{native}", half_open_calls=1, wait_in_open=60, **kw)
    guarded = b(_fail) if native else (lambda: b.call(_fail))
    b._transition(CircuitState.HALF_OPEN)
    with pytest.raises(Boom), pytest.warns(ResilienceWarning, match="predicate"):
        guarded()  # the original error, not the predicate's
    # the permit was handed back (or the outcome recorded): the breaker is not
    # stuck refusing every call in HALF_OPEN forever
    try:
        guarded()
    except Boom:
        pass
    except CircuitOpenError:
        assert b.state != CircuitState.HALF_OPEN, "half-open permit leaked"


def test_retrying_object_reused_runs_the_body_again() -> None:
    # State lived on the retrying object: a second loop over it ran nothing.
    r = rs.retrying(on=Boom, attempts=3, wait=0)
    ran = []
    for _ in range(2):
        for attempt in r:
            with attempt:
                ran.append(attempt.number)
    assert ran == [1, 1]
    assert r.statistics.outcome == "success"


def test_retrying_deadline_starts_with_the_loop_not_construction() -> None:
    now = [0.0]
    r = rs.retrying(on=Boom, attempts=5, timeout=10, wait=0, clock=lambda: now[0])
    now[0] = 100.0  # constructed long before the loop starts
    n = 0
    with pytest.raises(Boom):
        for attempt in r:
            with attempt:
                n += 1
                raise Boom
    assert n == 5


def test_error_context_instance_shared_by_tasks() -> None:
    # One error_context object entered by two interleaving tasks: the tokens
    # were kept on the instance, so a task reset the other task's token.
    ctx = rs.error_context("review-shared")
    entered, first_left = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with ctx:
            await entered.wait()
        first_left.set()

    async def second() -> None:
        async with ctx:
            entered.set()
            await first_left.wait()  # the first task leaves before this one

    async def main() -> None:
        t1 = asyncio.create_task(first())
        await asyncio.sleep(0)
        t2 = asyncio.create_task(second())
        await asyncio.gather(t1, t2)

    asyncio.run(main())


def test_bulkhead_release_from_a_thread_wakes_an_async_waiter_safely() -> None:
    # A sync caller (a worker thread) releasing while an async caller waits:
    # the waiter's future was resolved from the foreign thread (asyncio
    # forbids it; in debug mode it raises, otherwise the loop may never wake).
    bh = rs.Bulkhead(1, max_wait=None, name="review-threads")
    bh.acquire()
    errors: list[BaseException] = []

    def release_later() -> None:
        while not bh._waiters:  # an async caller is waiting
            threading.Event().wait(0.001)
        try:
            bh.release()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        th = threading.Thread(target=release_later)
        th.start()
        await asyncio.wait_for(bh.aacquire(), 10)  # hangs without the fix
        bh.release()
        await loop.run_in_executor(None, th.join)

    asyncio.run(main(), debug=True)
    assert errors == []
    assert bh.in_flight == 0


def test_timeout_never_swallows_an_outer_cancellation() -> None:
    # The deadline fires and the task is also cancelled from outside: the
    # cancellation must propagate (as asyncio.timeout does), not turn into an
    # OperationTimeoutError that callers may catch and carry on after.
    async def body() -> None:
        async with rs.timeout(0.01):
            time.sleep(0.05)  # noqa: ASYNC251 - the deadline passes while the body blocks
            await asyncio.sleep(0)  # the due timer is queued behind this step
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # and someone cancels the task
            await asyncio.sleep(10)

    async def main() -> None:
        t = asyncio.create_task(body())
        with pytest.raises(asyncio.CancelledError):
            await t

    asyncio.run(main())


def test_timeout_alone_still_raises_operation_timeout() -> None:
    async def main() -> None:
        with pytest.raises(rs.OperationTimeoutError):
            async with rs.timeout(0.01):
                await asyncio.sleep(10)

    asyncio.run(main())


class _AsyncCallable:
    """An object whose __call__ is ``async def`` (a common client shape)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls < 3:
            raise Boom
        return "ok"


def test_retry_detects_an_async_callable_object() -> None:
    # The native sync wrapper returned the coroutine at once: the exception
    # raised when it was awaited was never retried.
    target = _AsyncCallable()
    wrapped: Any = rs.retry(on=Boom, attempts=3, wait=0)(target)
    assert asyncio.run(wrapped()) == "ok"
    assert target.calls == 3


def test_breaker_counts_failures_of_an_async_callable_object() -> None:
    target = _AsyncCallable()
    b = rs.CircuitBreaker("review-async-callable", minimum_calls=1, failure_rate=1.0)
    wrapped: Any = b(target)
    with pytest.raises(Boom):
        asyncio.run(wrapped())
    assert b.state == CircuitState.OPEN


class _TupleNotes(Exception):
    """An exception whose __notes__ is not a list (add_note() refuses it)."""

    def __init__(self) -> None:
        super().__init__("odd")
        setattr(self, "__notes__", ("set by a library",))  # noqa: B010 - not a list on purpose


def test_error_context_never_replaces_an_exception_it_cannot_annotate() -> None:
    with pytest.raises(_TupleNotes), rs.error_context("review-notes", k=1):
        raise _TupleNotes


def test_retry_give_up_never_replaces_an_exception_it_cannot_annotate() -> None:
    @rs.retry(on=_TupleNotes, attempts=2, wait=0)
    def f() -> None:
        raise _TupleNotes

    with pytest.raises(_TupleNotes):
        f()


class _Throttled(Exception):
    retry_after = 1e300  # a hostile or broken Retry-After header


def test_retry_after_beyond_any_sleep_raises_the_original_error() -> None:
    # Without a timeout the wait was max(backoff, retry_after) and
    # time.sleep(1e300) raised OverflowError in place of the caller's error.
    calls = []

    @rs.retry(on=_Throttled, attempts=3, wait=0)
    def f() -> None:
        calls.append(1)
        raise _Throttled

    with pytest.raises(_Throttled) as info:
        f()
    assert len(calls) == 1
    assert any("retry_after" in n for n in getattr(info.value, "__notes__", []))


def test_metrics_rates_when_minimum_calls_exceeds_a_count_window() -> None:
    # The core caps minimum_calls at the count window's size (and decides on
    # it); metrics() compared with the uncapped value and reported -1 forever.
    b = rs.CircuitBreaker("review-mc-window", window=4, minimum_calls=10, failure_rate=1.0)
    for _ in range(3):
        b.call(lambda: None)
    with pytest.raises(Boom):
        b.call(_fail)
    m = b.metrics()
    assert m.calls == 4
    assert m.failure_rate == 0.25


def test_time_window_seconds_floor_below_zero() -> None:
    # An injected clock below 0: -0.5 s and 0.5 s were both "second 0" (C
    # division truncates), so the window held one second too many.
    now = [-1.5]
    b = rs.CircuitBreaker(
        "review-tw-neg", window=2, window_type="time", minimum_calls=100, clock=lambda: now[0]
    )
    for t in (-1.5, -0.5, 0.5):
        now[0] = t
        b.call(lambda: None)
    assert b.metrics().calls == 2  # seconds -1 and 0 only
