"""ObjectPool and AsyncObjectPool: bounds, exclusivity, discard on error,
health checks, eviction, state, close, Ctrl-C, and no leaked object after
10,000 failed or cancelled acquisitions.

Objects are counted by their factory and close callback (``Tracker``): at
any moment ``made - closed`` is the number of live objects, which must equal
``stats()["size"]``, never exceed ``max_size``, and be 0 after close().  Time
for idle/lifetime/health/state logic comes from a ``FakeTimer``; no test
sleeps to make time pass and none asserts on durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import run_threads

import amulet_native as an


class FakeTimer:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Conn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.busy = False
        self.closed = False
        self.healthy = True


class Tracker:
    """Factory and close callback that count live objects and the peak."""

    def __init__(self, fail: Callable[[int], bool] = lambda n: False) -> None:
        self.lock = threading.Lock()
        self.made = 0
        self.closed = 0
        self.peak = 0
        self.fail = fail
        self.calls = 0

    @property
    def live(self) -> int:
        return self.made - self.closed

    def factory(self) -> Conn:
        with self.lock:
            self.calls += 1
            if self.fail(self.calls):
                raise ConnectionError(f"factory failure {self.calls}")
            self.made += 1
            self.peak = max(self.peak, self.live)
            return Conn(self.made)

    def close(self, c: Conn) -> None:
        assert not c.closed, "closed twice"
        c.closed = True
        with self.lock:
            self.closed += 1


def check_accounting(pool: Any, tr: Tracker) -> None:
    s = pool.stats()
    assert s["size"] == tr.live == s["created"] - s["destroyed"]
    assert s["created"] == tr.made
    assert s["size"] == s["idle"] + s["in_use"]
    assert s["size"] <= pool.max_size


# ---- ObjectPool -----------------------------------------------------------------------


def test_reuse_and_stats() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=2, close=tr.close)
    with pool.acquire() as a:
        first = a
        assert pool.stats()["in_use"] == 1
    with pool.acquire() as b:
        assert b is first  # reused, not remade
    s = pool.stats()
    assert (s["created"], s["borrowed"], s["returned"], s["idle"], s["in_use"]) == (1, 2, 2, 1, 0)
    assert s["state"] is an.PoolState.HEALTHY and s["max_size"] == 2
    check_accounting(pool, tr)
    pool.close()
    assert tr.live == 0 and pool.stats()["size"] == 0
    assert "ObjectPool(" in repr(pool)


def test_never_exceeds_max_size_and_never_shares(fast_switch: None) -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=3, close=tr.close)
    guard = threading.Lock()
    inside = [0]
    peak = [0]

    def work(_: int) -> None:
        for _ in range(150):
            with pool.acquire(timeout=30) as c:
                assert not c.busy, "handed to two borrowers"
                c.busy = True
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0)
                with guard:
                    inside[0] -= 1
                c.busy = False

    run_threads(24, work)
    assert tr.peak <= 3 and peak[0] <= 3
    s = pool.stats()
    assert s["borrowed"] == s["returned"] == 24 * 150
    assert s["waits"] > 0 and s["timeouts"] == 0
    check_accounting(pool, tr)
    pool.close()
    assert tr.live == 0


def test_exception_in_block_discards_the_object() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=2, close=tr.close)
    with pytest.raises(ValueError), pool.acquire() as c:
        raise ValueError("broken connection")
    assert c.closed and tr.live == 0
    assert pool.stats()["failures"] == 1 and pool.state is an.PoolState.DEGRADED
    with pool.acquire() as c2:
        assert c2 is not c
    check_accounting(pool, tr)


def test_timeout() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=1, close=tr.close)
    with pool.acquire():
        with pytest.raises(an.PoolTimeoutError) as info, pool.acquire(timeout=0.05):
            pass
        e = info.value
        assert isinstance(e, TimeoutError) and e.code == "pool.timeout"
        assert e.context == {"timeout": 0.05, "max_size": 1}
        with pytest.raises(an.PoolTimeoutError), pool.acquire(timeout=0):
            pass
    s = pool.stats()
    assert s["timeouts"] == 2 and s["waits"] == 2
    check_accounting(pool, tr)


def test_waiter_gets_the_returned_object() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=1, close=tr.close)
    got: list[Conn] = []
    with pool.acquire() as c:
        t = threading.Thread(target=lambda: got.append(_borrow(pool)))
        t.start()
        deadline = time.monotonic() + 10
        while pool._slots.stats()[2] == 0:  # the waiter is blocked in C
            assert time.monotonic() < deadline
            time.sleep(0.001)
    t.join()
    assert got == [c] and tr.made == 1


def _borrow(pool: an.ObjectPool[Conn]) -> Conn:
    with pool.acquire(timeout=30) as c:
        return c


def test_health_check_on_borrow_after_idle() -> None:
    tr = Tracker()
    clock = FakeTimer()
    checked: list[int] = []

    def check(c: Conn) -> bool:
        checked.append(c.n)
        if c.n == 2:
            raise OSError("ping failed")
        return c.healthy

    pool = an.ObjectPool(tr.factory, max_size=3, close=tr.close, health_check=check,
                         check_on_borrow_after=10, timer=clock)
    with pool.acquire() as c1, pool.acquire() as c2, pool.acquire() as c3:
        pass
    # returned in order c3, c2, c1: c1 is on top of the idle stack
    with pool.acquire() as c:
        assert c is c1 and checked == []  # idle 0 s: not checked
    clock.now += 11
    c1.healthy = False
    with pool.acquire() as c:
        # c1 fails its check, c2's check raises: both closed; c3 passes
        assert c is c3
    assert checked == [1, 2, 3]
    assert c1.closed and c2.closed and not c3.closed
    assert pool.stats()["failures"] == 2 and pool.state is an.PoolState.DEGRADED
    clock.now += 11
    c3.healthy = False
    with pool.acquire() as c:
        assert c.n == 4  # every idle object failed: a new one
    check_accounting(pool, tr)


def test_idle_and_lifetime_eviction_and_min_idle() -> None:
    tr = Tracker()
    clock = FakeTimer()
    pool = an.ObjectPool(tr.factory, max_size=4, min_idle=2, max_idle_time=30,
                         max_lifetime=100, close=tr.close, timer=clock)
    assert pool.stats()["idle"] == 2 and tr.made == 2  # min_idle made up front
    clock.now += 31
    assert pool.evict() == 2  # both idle too long
    assert pool.stats()["idle"] == 2 and tr.made == 4 and tr.closed == 2  # topped up
    # idle eviction on borrow
    clock.now += 31
    with pool.acquire() as c:
        assert c.n == 5
    assert tr.closed == 4
    # lifetime eviction on return
    with pool.acquire() as c:
        clock.now += 101
    assert c.closed
    check_accounting(pool, tr)
    pool.close()
    assert tr.live == 0


def test_state_transitions() -> None:
    clock = FakeTimer()
    fail = [True]
    tr = Tracker(fail=lambda n: fail[0])
    pool = an.ObjectPool(tr.factory, max_size=2, close=tr.close, failure_window=60,
                         failure_threshold=3, timer=clock)
    assert pool.state is an.PoolState.HEALTHY
    for i in range(3):
        with pytest.raises(ConnectionError), pool.acquire():
            pass
        assert pool.state is (an.PoolState.FAILED if i == 2 else an.PoolState.DEGRADED)
    assert pool.stats()["failures"] == 3 and pool._slots.stats()[1] == 0  # no slot leaked
    fail[0] = False
    with pool.acquire():
        pass
    assert pool.stats()["state"] is an.PoolState.DEGRADED  # recovered, failures still recent
    clock.now += 61
    assert pool.stats()["state"] is an.PoolState.HEALTHY
    check_accounting(pool, tr)


def test_close() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=2, close=tr.close)
    errors: list[BaseException] = []
    with pool.acquire() as a:
        with pool.acquire():
            pass
        with pool.acquire() as b:
            # a waiter blocked on the full pool is woken by close()
            def wait() -> None:
                try:
                    _borrow(pool)
                except an.PoolClosedError as e:
                    errors.append(e)

            t = threading.Thread(target=wait)
            t.start()
            deadline = time.monotonic() + 10
            while pool._slots.stats()[2] == 0:
                assert time.monotonic() < deadline
                time.sleep(0.001)
            pool.close()
            t.join()
            assert not a.closed and not b.closed  # in use: closed on return
        assert b.closed
    assert a.closed and tr.live == 0
    assert len(errors) == 1 and errors[0].code == "pool.closed"
    assert isinstance(errors[0], RuntimeError)
    with pytest.raises(an.PoolClosedError), pool.acquire():
        pass
    pool.close()  # idempotent
    assert pool.closed and pool.stats()["size"] == 0


def test_close_errors_are_counted() -> None:
    def bad_close(c: Conn) -> None:
        raise OSError("close failed")

    pool = an.ObjectPool(lambda: Conn(0), max_size=1, close=bad_close)
    with pytest.raises(KeyError), pool.acquire():
        raise KeyError("x")
    assert pool.stats()["close_errors"] == 1 and pool.stats()["size"] == 0


def test_ten_thousand_failed_acquisitions_leak_nothing() -> None:
    tr = Tracker(fail=lambda n: n % 3 == 0)
    clock = FakeTimer()
    pool = an.ObjectPool(tr.factory, max_size=2, close=tr.close, timer=clock,
                         health_check=lambda c: c.n % 2 == 0, check_on_borrow_after=5)
    outcomes = {"factory": 0, "block": 0, "timeout": 0, "ok": 0}
    holding = contextlib.ExitStack()
    for i in range(10_000):
        clock.now += 3 if i % 2 else 0
        if i % 500 == 0:  # fill the pool for a while: acquisitions time out
            for _ in range(pool.max_size):
                with contextlib.suppress(ConnectionError):
                    holding.enter_context(pool.acquire())
        elif i % 500 == 100:
            holding.close()
        try:
            with pool.acquire(timeout=0):
                if i % 4 == 0:
                    raise RuntimeError("boom")
                outcomes["ok"] += 1
        except ConnectionError:
            outcomes["factory"] += 1
        except RuntimeError:
            outcomes["block"] += 1
        except an.PoolTimeoutError:
            outcomes["timeout"] += 1
        check_accounting(pool, tr)
    holding.close()
    assert all(outcomes.values()), outcomes
    pool.close()
    assert tr.live == 0 and pool._slots.stats()[1] == 0


def test_bad_arguments() -> None:
    tr = Tracker()
    for kw in ({"max_size": 0}, {"max_size": -1}, {"max_size": True}, {"max_size": 2, "min_idle": 3},
               {"max_size": 2, "max_idle_time": -1}, {"max_size": 2, "failure_threshold": 0},
               {"max_size": 2, "check_on_borrow_after": float("nan")}):
        with pytest.raises(an.ValidationError):
            an.ObjectPool(tr.factory, **kw)
    with pytest.raises(TypeError):
        an.ObjectPool(42, max_size=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        an.ObjectPool(tr.factory, max_size=1, close=3)  # type: ignore[arg-type]
    pool = an.ObjectPool(tr.factory, max_size=1)
    for t in (-1, float("nan")):
        with pytest.raises(an.ValidationError), pool.acquire(timeout=t):
            pass

    async def coro_factory() -> Conn:
        return Conn(0)

    apool: an.ObjectPool[Any] = an.ObjectPool(coro_factory, max_size=1)
    with pytest.raises(TypeError, match="AsyncObjectPool"), apool.acquire():
        pass
    assert apool._slots.stats()[1] == 0


def test_ctrl_c_reaches_a_blocked_borrower() -> None:
    pool = an.ObjectPool(lambda: Conn(0), max_size=1)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    with pool.acquire():
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt), pool.acquire(timeout=60):
                pass
        finally:
            timer.cancel()
        assert pool._slots.stats()[1:3] == (1, 0)  # no slot taken, no waiter left
    with pool.acquire(timeout=1):
        pass


def test_background_maintenance() -> None:
    tr = Tracker()
    pool = an.ObjectPool(tr.factory, max_size=2, min_idle=1, max_idle_time=0,
                         close=tr.close, maintenance_interval=0.01)
    first = pool.stats()["created"]
    deadline = time.monotonic() + 20
    while tr.closed < 3:  # idle objects keep expiring and being replaced
        assert time.monotonic() < deadline, "maintenance thread did not run"
        time.sleep(0.005)
    assert tr.made > first
    pool.close()
    time.sleep(0.03)
    assert tr.live == 0


# ---- AsyncObjectPool ------------------------------------------------------------------


class AsyncTracker(Tracker):
    async def afactory(self) -> Conn:
        await asyncio.sleep(0)
        return self.factory()

    async def aclose(self, c: Conn) -> None:
        await asyncio.sleep(0)
        self.close(c)


def test_async_basic_and_exclusive() -> None:
    tr = AsyncTracker()

    async def main() -> None:
        pool = an.AsyncObjectPool(tr.afactory, max_size=3, close=tr.aclose)

        async def work() -> None:
            for _ in range(20):
                async with pool.acquire(timeout=30) as c:
                    assert not c.busy
                    c.busy = True
                    await asyncio.sleep(0)
                    c.busy = False

        await asyncio.gather(*(work() for _ in range(30)))
        s = pool.stats()
        assert s["borrowed"] == s["returned"] == 600 and s["waits"] > 0
        assert tr.peak <= 3
        check_accounting(pool, tr)
        await pool.aclose()
        assert tr.live == 0
        with pytest.raises(an.PoolClosedError):
            async with pool.acquire():
                pass

    asyncio.run(main())


def test_async_timeout_and_discard() -> None:
    tr = AsyncTracker()

    async def main() -> None:
        async with an.AsyncObjectPool(tr.factory, max_size=1, close=tr.close) as pool:
            async with pool.acquire():
                with pytest.raises(an.PoolTimeoutError):
                    async with pool.acquire(timeout=0.02):
                        pass
            with pytest.raises(ZeroDivisionError):
                async with pool.acquire() as c:
                    1 / 0  # noqa: B018
            assert c.closed and pool.state is an.PoolState.DEGRADED
            assert pool.stats()["timeouts"] == 1
        assert tr.live == 0

    asyncio.run(main())


def test_async_health_check_and_evict() -> None:
    tr = AsyncTracker()
    clock = FakeTimer()

    async def check(c: Conn) -> bool:
        await asyncio.sleep(0)
        return c.healthy

    async def main() -> None:
        pool = an.AsyncObjectPool(tr.afactory, max_size=2, min_idle=1, max_idle_time=50,
                                  health_check=check, check_on_borrow_after=5,
                                  close=tr.aclose, timer=clock)
        assert await pool.evict() == 0 and pool.stats()["idle"] == 1
        async with pool.acquire() as c:
            pass
        clock.now += 10
        c.healthy = False
        async with pool.acquire() as c2:
            assert c2 is not c and c.closed
        clock.now += 51
        assert await pool.evict() == 1 and pool.stats()["idle"] == 1
        check_accounting(pool, tr)
        await pool.aclose()
        assert tr.live == 0

    asyncio.run(main())


def test_async_waiting_does_not_block_the_loop() -> None:
    async def main() -> None:
        pool = an.AsyncObjectPool(lambda: Conn(0), max_size=1)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        async with pool.acquire():
            waiter = asyncio.create_task(_aborrow(pool))
            while ticks < 50:
                await asyncio.sleep(0)
            assert not waiter.done()
        await waiter
        t.cancel()

    asyncio.run(main())


async def _aborrow(pool: an.AsyncObjectPool[Conn], timeout: float | None = 30) -> None:
    async with pool.acquire(timeout=timeout):
        await asyncio.sleep(0)


def test_async_ten_thousand_cancelled_acquisitions_leak_nothing() -> None:
    tr = AsyncTracker(fail=lambda n: n % 7 == 0)
    clock = FakeTimer()

    async def check(c: Conn) -> bool:
        await asyncio.sleep(0)
        return c.n % 3 != 0

    async def main() -> None:
        pool = an.AsyncObjectPool(tr.afactory, max_size=2, close=tr.aclose,
                                  health_check=check, check_on_borrow_after=1, timer=clock)

        async def user(i: int) -> None:
            async with pool.acquire(timeout=None if i % 5 else 0.001):
                for _ in range(i % 3):
                    await asyncio.sleep(0)
                if i % 11 == 0:
                    raise RuntimeError("in block")

        done = 0
        for batch in range(100):
            clock.now += 2
            tasks = [asyncio.create_task(user(i)) for i in range(100)]
            # cancel at different points: waiting, in the factory, in the
            # health check, in the block, or in the close callback
            for _ in range(batch % 4):
                await asyncio.sleep(0)
            for i, task in enumerate(tasks):
                if (i + batch) % 3:
                    task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            done += len(results)
            for r in results:
                assert r is None or isinstance(
                    r, (asyncio.CancelledError, RuntimeError, ConnectionError,
                        an.PoolTimeoutError)
                ), r
            await asyncio.sleep(0)
            assert pool._slots.stats()[1] == 0  # every slot came back
            while pool._closing:  # closes still finishing after a cancellation
                await asyncio.sleep(0)
            check_accounting(pool, tr)
        assert done == 10_000
        await pool.aclose()
        assert tr.live == 0

    asyncio.run(main())


def test_cancelled_borrowers_do_not_mark_the_pool_failed() -> None:
    """A task cancelled inside ``async with pool.acquire()`` (a client that
    disconnected) discards the object it held, but that is not a failure of
    the pooled resource: the pool's state must stay HEALTHY."""

    async def main() -> None:
        closed: list[object] = []
        pool: an.AsyncObjectPool[object] = an.AsyncObjectPool(
            object, max_size=2, failure_threshold=3, close=closed.append
        )
        inside = asyncio.Event()

        async def borrower() -> None:
            async with pool.acquire():
                inside.set()
                await asyncio.sleep(60)

        for _ in range(10):
            inside.clear()
            t = asyncio.ensure_future(borrower())
            await inside.wait()
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
        stats = pool.stats()
        assert stats["failures"] == 0 and pool.state is an.PoolState.HEALTHY
        assert stats["in_use"] == 0 and len(closed) == stats["destroyed"] == 10
        await pool.aclose()

    asyncio.run(main())
