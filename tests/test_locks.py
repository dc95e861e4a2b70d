"""LockManager and thread_safe_operation: exclusion, recursion, semaphores,
timeouts, acquire_many, deadlock detection, statistics, Ctrl-C, asyncio.

Real threads and a real event loop throughout; ``sys.setswitchinterval(1e-6)``
forces interleavings so that an unprotected read-modify-write would lose
updates.  No timing assertions: waits are bounded by generous timeouts whose
expiry would fail the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import run_threads, switch_often

import amulet_native as an
from amulet_native.locks import default_manager

THREADS = 16


def wait_until(cond: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    end = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.001)


def holder(lm: an.LockManager, name: str, **kw: Any) -> tuple[threading.Thread, threading.Event]:
    """A thread holding `name` until the returned event is set."""
    taken, done = threading.Event(), threading.Event()

    def run() -> None:
        with lm.acquire(name, **kw):
            taken.set()
            done.wait(30)

    t = threading.Thread(target=run)
    t.start()
    assert taken.wait(10)
    return t, done


# ---- threads ---------------------------------------------------------------------


def test_mutual_exclusion(fast_switch: None) -> None:
    lm = an.LockManager()
    box = [0]

    def work(_: int) -> None:
        for _ in range(300):
            with lm.acquire("counter"):
                v = box[0]
                time.sleep(0) if v % 50 == 0 else None
                box[0] = v + 1

    run_threads(THREADS, work)
    assert box[0] == THREADS * 300
    s = lm.stats("counter")
    assert s["acquisitions"] == THREADS * 300
    assert s["holders"] == 0 and s["owner"] is None and s["waiters"] == 0


def test_unprotected_counter_does_lose_updates(fast_switch: None) -> None:
    """The control for test_mutual_exclusion: the same loop without the lock
    is racy here, so the exact count above means something."""
    box = [0]

    def work(_: int) -> None:
        for _ in range(300):
            v = box[0]
            time.sleep(0) if v % 50 == 0 else None
            box[0] = v + 1

    for _ in range(5):
        box[0] = 0
        run_threads(THREADS, work)
        if box[0] != THREADS * 300:
            return
    pytest.skip("no lost update observed without the lock (scheduler too kind)")


def test_rlock_recursion() -> None:
    lm = an.LockManager()
    with lm.acquire("r", kind="rlock"):
        with lm.acquire("r", kind="rlock"), lm.acquire("r", kind="rlock"):
            assert lm.stats("r")["depth"] == 3
        assert lm.stats("r")["depth"] == 1
        got: list[BaseException] = []

        def other() -> None:
            try:
                lm.acquire("r", kind="rlock", timeout=0)
            except an.LockTimeoutError as e:
                got.append(e)

        run_threads(1, lambda _: other())
        assert len(got) == 1  # still held by this thread
    assert lm.stats("r")["holders"] == 0
    with lm.acquire("r", kind="rlock", timeout=0):
        pass


def test_rlock_recursion_threads(fast_switch: None) -> None:
    lm = an.LockManager()
    box = [0]

    def work(_: int) -> None:
        for i in range(100):
            with lm.acquire("re", kind="rlock"):
                with lm.acquire("re", kind="rlock"):
                    v = box[0]
                    box[0] = v + 1
                assert lm.stats("re")["owner"] == threading.get_ident() or i < 0

    run_threads(THREADS, work)
    assert box[0] == THREADS * 100


def test_semaphore_never_over_admits(fast_switch: None) -> None:
    lm = an.LockManager()
    guard = threading.Lock()
    inside = [0]
    peak = [0]

    def work(_: int) -> None:
        for _ in range(100):
            with lm.acquire("gpu", kind="semaphore", permits=3):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0)
                with guard:
                    inside[0] -= 1

    run_threads(24, work)
    assert 1 <= peak[0] <= 3
    s = lm.stats("gpu")
    assert s["kind"] == "semaphore" and s["permits"] == 3 and s["holders"] == 0
    assert s["acquisitions"] == 2400


def test_timeout_error() -> None:
    lm = an.LockManager()
    t, done = holder(lm, "db")
    try:
        with pytest.raises(an.LockTimeoutError) as info:
            lm.acquire("db", timeout=0.05)
        e = info.value
        assert isinstance(e, TimeoutError) and isinstance(e, an.AmuletError)
        assert e.code == "lock.timeout"
        assert e.context == {"name": "db", "timeout": 0.05}
        assert e.name == "db" and e.timeout == 0.05
        with pytest.raises(an.LockTimeoutError):
            lm.acquire("db", timeout=0)
        s = lm.stats("db")
        assert s["timeouts"] == 2 and s["contended"] == 2 and s["holders"] == 1
        assert s["wait_total"] > 0 and s["wait_max"] > 0
    finally:
        done.set()
        t.join()


def test_contention_statistics() -> None:
    lm = an.LockManager()
    t, done = holder(lm, "x")
    waited = threading.Event()

    def waiter() -> None:
        with lm.acquire("x", timeout=30):
            waited.set()

    w = threading.Thread(target=waiter)
    w.start()
    wait_until(lambda: lm.stats("x")["waiters"] == 1, "the waiter")
    done.set()
    t.join()
    w.join()
    assert waited.is_set()
    s = lm.stats("x")
    assert s["acquisitions"] == 2 and s["contended"] == 1 and s["timeouts"] == 0
    assert s["wait_total"] > 0 and s["wait_max"] == pytest.approx(s["wait_total"])
    assert set(lm.stats()) == {"x"}
    with pytest.raises(KeyError):
        lm.stats("missing")
    assert "x" in lm and "missing" not in lm and len(lm) == 1


def test_kind_is_fixed_by_first_use() -> None:
    lm = an.LockManager()
    with lm.acquire("a"):
        pass
    with pytest.raises(an.ValidationError) as info:
        lm.acquire("a", kind="rlock")
    assert info.value.code == "lock.kind"
    assert info.value.context["kind"] == "lock" and info.value.field == "kind"
    with lm.acquire("s", kind="semaphore", permits=2):
        pass
    with pytest.raises(an.ValidationError) as info:
        lm.acquire("s", kind="semaphore", permits=3)
    assert info.value.code == "lock.kind" and info.value.context["permits"] == 2


def test_release_not_held() -> None:
    lm = an.LockManager()
    with pytest.raises(an.LockReleaseError) as info:
        lm.release("never")
    assert isinstance(info.value, RuntimeError) and info.value.code == "lock.not_held"
    h = lm.acquire("a")
    errors: list[an.LockReleaseError] = []

    def other() -> None:
        try:
            lm.release("a")  # held by the main thread, not this one
        except an.LockReleaseError as e:
            errors.append(e)

    run_threads(1, lambda _: other())
    assert len(errors) == 1 and errors[0].context == {"name": "a"}
    h.release()
    with pytest.raises(an.LockReleaseError):
        h.release()
    with pytest.raises(an.LockReleaseError):
        lm.release("a")


def test_bad_arguments() -> None:
    lm = an.LockManager()
    with pytest.raises(TypeError):
        lm.acquire(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        lm.acquire(None)  # type: ignore[arg-type]
    for kw in ({"kind": "mutex"}, {"timeout": -1}, {"timeout": float("nan")},
               {"kind": "semaphore", "permits": 0}, {"kind": "lock", "permits": 2},
               {"kind": "semaphore", "permits": True}):
        with pytest.raises(an.ValidationError):
            lm.acquire("x", **kw)
    with pytest.raises(an.ValidationError):
        an.LockManager(max_names=-1)
    with pytest.raises(TypeError):
        lm.acquire_many(["a", 3])  # type: ignore[list-item]
    assert lm.stats() == {}  # nothing half-registered by a refused call


def test_unicode_and_empty_names() -> None:
    lm = an.LockManager()
    for name in ("", "ünïcødé", "a\x00b", "x" * 10_000):
        with lm.acquire(name):
            assert lm.stats(name)["holders"] == 1
    assert set(lm.stats()) == {"", "ünïcødé", "a\x00b", "x" * 10_000}


def test_acquire_many_orders_and_never_deadlocks(fast_switch: None) -> None:
    lm = an.LockManager(detect_deadlocks=True)
    box = [0]

    def work(i: int) -> None:
        names = ["alpha", "beta", "gamma"] if i % 2 else ["gamma", "beta", "alpha"]
        for _ in range(100):
            with lm.acquire_many(names, timeout=30) as h:
                assert h.names == ("alpha", "beta", "gamma")
                v = box[0]
                box[0] = v + 1

    run_threads(THREADS, work)
    assert box[0] == THREADS * 100
    for n in ("alpha", "beta", "gamma"):
        s = lm.stats(n)
        assert s["holders"] == 0 and s["deadlocks"] == 0 and s["timeouts"] == 0


def test_acquire_many_all_or_nothing() -> None:
    lm = an.LockManager()
    t, done = holder(lm, "b")
    try:
        with pytest.raises(an.LockTimeoutError) as info:
            lm.acquire_many(["c", "a", "b", "a"], timeout=0.05)
        assert info.value.name == "b"
        assert lm.stats("a")["holders"] == 0  # taken first, then given back
        assert "c" not in lm  # never reached
    finally:
        done.set()
        t.join()
    with lm.acquire_many(["c", "a", "b"], timeout=1) as h:
        assert h.names == ("a", "b", "c")
        assert all(lm.stats(n)["holders"] == 1 for n in "abc")
    assert all(lm.stats(n)["holders"] == 0 for n in "abc")


def _cycle(lm: an.LockManager, k: int) -> an.DeadlockError:
    """Threads 1..k-1: thread i holds Li and waits for L(i+1 mod k); the main
    thread holds L0 and closes the cycle by waiting for L1."""
    names = [f"L{i}" for i in range(k)]
    main = lm.acquire("L0")
    results: dict[int, BaseException | None] = {}
    go = [threading.Event() for _ in range(k)]

    def chain(i: int) -> None:
        with lm.acquire(names[i]):
            go[i].set()
            try:
                with lm.acquire(names[(i + 1) % k], timeout=30):
                    results[i] = None
            except an.AmuletError as e:
                results[i] = e

    threads = []
    for i in range(k - 1, 0, -1):  # from the end, so each finds its next lock held
        t = threading.Thread(target=chain, args=(i,))
        t.start()
        threads.append(t)
        assert go[i].wait(10)
        nxt = names[(i + 1) % k]
        wait_until(lambda nxt=nxt: bool(lm.stats(nxt)["waiters"] == 1), "chain")  # type: ignore[misc]
    try:
        with pytest.raises(an.DeadlockError) as info:
            lm.acquire("L1", timeout=30)
    finally:
        main.release()
        for t in threads:
            t.join(30)
    assert all(results[i] is None for i in range(1, k))  # the chain drained normally
    return info.value


@pytest.mark.parametrize("k", [2, 3])
def test_deadlock_detection_cycles(k: int) -> None:
    lm = an.LockManager(detect_deadlocks=True)
    e = _cycle(lm, k)
    assert e.code == "lock.deadlock" and isinstance(e, RuntimeError)
    assert e.name == "L1"
    cycle = e.cycle
    assert [name for _, name in cycle] == [f"L{(i + 1) % k}" for i in range(k)]
    owners = [owner for owner, _ in cycle]
    assert owners[0] == threading.get_ident() and len(set(owners)) == k
    assert lm.stats("L1")["deadlocks"] == 1


def test_no_false_deadlock_without_cycle() -> None:
    lm = an.LockManager(detect_deadlocks=True)
    # a chain (main -> A held by t1, t1 waits for B held by t2) is not a cycle
    t2, done2 = holder(lm, "B")
    started = threading.Event()

    def t1_run() -> None:
        with lm.acquire("A"):
            started.set()
            with lm.acquire("B", timeout=30):
                pass

    t1 = threading.Thread(target=t1_run)
    t1.start()
    assert started.wait(10)
    wait_until(lambda: lm.stats("B")["waiters"] == 1, "t1 waiting")
    with pytest.raises(an.LockTimeoutError):
        lm.acquire("A", timeout=0.05)
    done2.set()
    t1.join()
    t2.join()
    with lm.acquire("A", timeout=1):
        pass
    # rlock re-entry and semaphores never count as cycles
    with lm.acquire("r", kind="rlock"), lm.acquire("r", kind="rlock"):
        pass
    with lm.acquire("s", kind="semaphore", permits=1), pytest.raises(an.LockTimeoutError):
        lm.acquire("s", kind="semaphore", permits=1, timeout=0.01)


def test_self_deadlock_on_plain_lock() -> None:
    lm = an.LockManager(detect_deadlocks=True)
    with lm.acquire("a"), pytest.raises(an.DeadlockError) as info:
        lm.acquire("a")  # would wait forever without detection
    assert info.value.cycle == [(threading.get_ident(), "a")]
    plain = an.LockManager()
    with plain.acquire("a"), pytest.raises(an.LockTimeoutError):
        plain.acquire("a", timeout=0.01)


def test_ctrl_c_reaches_a_blocked_acquire() -> None:
    lm = an.LockManager()
    t, done = holder(lm, "busy")
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            lm.acquire("busy", timeout=60)  # without signal delivery: 60 s, then LockTimeoutError
        s = lm.stats("busy")
        assert s["waiters"] == 0 and s["holders"] == 1
    finally:
        timer.cancel()
        done.set()
        t.join()
    with lm.acquire("busy", timeout=1):
        pass


def test_bounded_registry() -> None:
    lm = an.LockManager(max_names=50)
    keep = lm.acquire("kept")
    for i in range(5000):
        with lm.acquire(f"name-{i}"):
            pass
        assert len(lm) <= 50
    assert lm.stats("kept")["holders"] == 1  # a held name is never dropped
    keep.release()
    forever = an.LockManager(max_names=0)
    for i in range(2000):
        with forever.acquire(f"name-{i}"):
            pass
    assert len(forever) == 2000


def test_thread_safe_operation_sync(fast_switch: None) -> None:
    lm = an.LockManager()
    box = [0]

    @an.thread_safe_operation("inc", manager=lm, timeout=30)
    def inc(n: int) -> int:
        """Increment."""
        v = box[0]
        time.sleep(0) if v % 40 == 0 else None
        box[0] = v + n
        return box[0]

    @an.thread_safe_operation("inc", manager=lm)
    def inc_twice() -> None:
        inc(1)  # nested: the decorator's default kind is rlock
        inc(1)

    def work(_: int) -> None:
        for _ in range(50):
            inc_twice()

    run_threads(THREADS, work)
    assert box[0] == THREADS * 100
    assert inc.__name__ == "inc" and inc.__doc__ == "Increment."
    assert lm.stats("inc")["kind"] == "rlock"
    # the default manager
    @an.thread_safe_operation("default-op")
    def op() -> str:
        return "ok"

    assert op() == "ok" and "default-op" in default_manager()


# ---- asyncio -------------------------------------------------------------------------


def test_async_mutual_exclusion_between_tasks() -> None:
    lm = an.LockManager()
    box = [0]

    async def work() -> None:
        for _ in range(30):
            async with lm.acquire_async("shared", timeout=30):
                v = box[0]
                await asyncio.sleep(0)  # another task would interleave here
                box[0] = v + 1

    async def main() -> None:
        await asyncio.gather(*(work() for _ in range(8)))

    asyncio.run(main())
    assert box[0] == 240
    s = lm.stats("shared")
    assert s["holders"] == 0 and s["contended"] > 0


def test_async_wait_does_not_block_the_loop() -> None:
    lm = an.LockManager()
    t, done = holder(lm, "slow")

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        waiter = asyncio.create_task(_take(lm, "slow"))
        while ticks < 20:  # the loop keeps running while the waiter waits
            await asyncio.sleep(0.001)
        assert not waiter.done()
        done.set()
        await waiter
        tick_task.cancel()
        return ticks

    assert asyncio.run(main()) >= 20
    t.join()


async def _take(lm: an.LockManager, name: str, **kw: Any) -> None:
    async with lm.acquire_async(name, timeout=30, **kw):
        pass


def test_async_timeout_and_rlock_per_task() -> None:
    lm = an.LockManager()

    async def main() -> None:
        async with lm.acquire_async("r", kind="rlock"):
            async with lm.acquire_async("r", kind="rlock"):  # same task: re-entry
                assert lm.stats("r")["depth"] == 2
                other = asyncio.create_task(_take(lm, "r", kind="rlock"))
                await asyncio.sleep(0.05)
                assert not other.done()  # another task waits
            assert not other.done()
        await other
        async with lm.acquire_async("m"):
            with pytest.raises(an.LockTimeoutError):
                await _take_timeout(lm, "m", 0.05)

    asyncio.run(main())
    assert lm.stats("r")["holders"] == 0 and lm.stats("m")["holders"] == 0


async def _take_timeout(lm: an.LockManager, name: str, timeout: float) -> None:
    async with lm.acquire_async(name, timeout=timeout):
        pass


def test_async_cancellation_never_leaves_the_lock_held() -> None:
    lm = an.LockManager()

    async def main() -> None:
        async with lm.acquire_async("c"):
            tasks = [asyncio.create_task(_take(lm, "c")) for _ in range(50)]
            await asyncio.sleep(0.02)
            for i, task in enumerate(tasks):
                if i % 2:
                    task.cancel()
            # cancel the rest at random moments while the lock is handed around
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # helper threads notice their cancel event within a slice
        for _ in range(400):
            s = lm.stats("c")
            if s["holders"] == 0 and s["waiters"] == 0:
                break
            await asyncio.sleep(0.01)
        s = lm.stats("c")
        assert s["holders"] == 0 and s["waiters"] == 0
        async with lm.acquire_async("c", timeout=1):
            pass

    asyncio.run(main())


def test_thread_safe_operation_async() -> None:
    lm = an.LockManager()
    box = [0]

    @an.thread_safe_operation("ainc", manager=lm, timeout=30)
    async def ainc() -> int:
        v = box[0]
        await asyncio.sleep(0)
        box[0] = v + 1
        return box[0]

    async def main() -> list[int]:
        return await asyncio.gather(*(ainc() for _ in range(100)))

    results = asyncio.run(main())
    assert box[0] == 100 and sorted(results) == list(range(1, 101))


def test_async_deadlock_between_tasks() -> None:
    lm = an.LockManager(detect_deadlocks=True)

    async def main() -> None:
        a_held, b_held = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with lm.acquire_async("A"):
                a_held.set()
                await b_held.wait()
                async with lm.acquire_async("B", timeout=30):
                    pass

        t = asyncio.create_task(first())
        await a_held.wait()
        async with lm.acquire_async("B"):
            b_held.set()
            while lm.stats("B")["waiters"] == 0:
                await asyncio.sleep(0.001)
            with pytest.raises(an.DeadlockError):
                async with lm.acquire_async("A", timeout=30):
                    pass
        await t

    asyncio.run(main())


def test_handle_released_concurrently_releases_exactly_once() -> None:
    """16 threads race to release one handle: exactly one succeeds, the others
    get LockReleaseError, and the lock ends free (never released twice)."""
    with switch_often():
        lm = an.LockManager()
        for _ in range(50):
            h = lm.acquire("shared", kind="semaphore", permits=2)
            other = lm.acquire("shared", kind="semaphore", permits=2)
            barrier = threading.Barrier(16)
            ok: list[int] = []
            errors: list[BaseException] = []

            def release(
                h: an.locks.LockHandle = h,
                barrier: threading.Barrier = barrier,
                ok: list[int] = ok,
                errors: list[BaseException] = errors,
            ) -> None:
                barrier.wait()
                try:
                    h.release()
                    ok.append(1)
                except an.LockReleaseError as e:
                    errors.append(e)

            threads = [threading.Thread(target=release) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(ok) == 1 and len(errors) == 15 and not h.held
            assert lm.stats("shared")["holders"] == 1  # other's permit untouched
            other.release()
