"""ThreadSafeQueue from asyncio: aput/aget never block the event loop, work
across tasks, threads and several loops, honour timeouts and close(), and
stay exact under cancellation (a cancelled aget never loses an item, a
cancelled aput never inserts twice)."""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from collections import Counter
from typing import Any

import pytest

import amulet_native as an


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join()


def test_aput_aget_roundtrip_and_order() -> None:
    async def main() -> list[int]:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        for i in range(5):
            await q.aput(i)
        return [await q.aget() for _ in range(5)]

    assert run(main()) == [0, 1, 2, 3, 4]


def test_aget_waits_without_blocking_the_loop() -> None:
    async def main() -> tuple[int, int]:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            for _ in range(20):
                ticks += 1
                await asyncio.sleep(0)
            await q.aput(99)

        waiter = asyncio.create_task(q.aget())
        await ticker()
        return await waiter, ticks

    assert run(main()) == (99, 20)


def test_aput_waits_for_space() -> None:
    async def main() -> list[int]:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
        await q.aput(1)
        blocked = asyncio.create_task(q.aput(2))
        await asyncio.sleep(0.01)
        assert not blocked.done() and q.qsize() == 1
        first = await q.aget()
        await asyncio.wait_for(blocked, 5)
        return [first, await q.aget()]

    assert run(main()) == [1, 2]


def test_timeouts() -> None:
    async def main() -> None:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.02)
        await q.aput(1, timeout=0)
        with pytest.raises(queue.Full):
            await q.aput(2, timeout=0.02)
        with pytest.raises(ValueError):
            await q.aget(timeout=-1)
        assert await q.aget(timeout=0) == 1
        assert q.stats()["waiting"] == 0  # timed-out waiters withdrew their callbacks

    run(main())


def test_close_wakes_async_waiters() -> None:
    async def main() -> list[str]:
        empty: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        full: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
        await full.aput(0)
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(empty.aget()) for _ in range(3)]
        tasks += [asyncio.create_task(full.aput(1)) for _ in range(3)]
        await asyncio.sleep(0.01)
        empty.close()
        full.close()
        out = []
        for t in tasks:
            try:
                await t
                out.append("ok")
            except an.QueueClosed:
                out.append("closed")
        assert await full.aget() == 0  # still drainable
        with pytest.raises(an.QueueClosed):
            await full.aget()
        return out

    assert run(main()) == ["closed"] * 6


@pytest.mark.parametrize("maxsize", [0, 4])
@pytest.mark.parametrize("kind", ["fifo", "lifo", "priority"])
def test_many_tasks_nothing_lost(kind: Any, maxsize: int) -> None:
    async def main() -> None:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize, kind=kind)
        got: list[int] = []

        async def producer(p: int) -> None:
            for i in range(200):
                await q.aput(p * 1000 + i)
                if i % 10 == 0:
                    await asyncio.sleep(0)

        async def consumer() -> None:
            while True:
                try:
                    got.append(await q.aget())
                except an.QueueClosed:
                    return

        consumers = [asyncio.create_task(consumer()) for _ in range(8)]
        await asyncio.gather(*(producer(p) for p in range(8)))
        q.close()
        await asyncio.gather(*consumers)
        assert sorted(got) == sorted(p * 1000 + i for p in range(8) for i in range(200))

    run(main())


def test_threads_and_tasks_mixed() -> None:
    """Thread producers + task consumers on one queue, and task producers +
    thread consumers on another, at the same time."""
    to_tasks: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=8)
    to_threads: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=8)
    thread_got: list[int] = []
    lock = threading.Lock()

    def thread_producer(p: int) -> None:
        for i in range(300):
            to_tasks.put(p * 1000 + i)

    def thread_consumer() -> None:
        while True:
            try:
                item = to_threads.get()
            except an.QueueClosed:
                return
            with lock:
                thread_got.append(item)

    async def main() -> list[int]:
        producers = [threading.Thread(target=thread_producer, args=(p,)) for p in range(4)]
        consumers = [threading.Thread(target=thread_consumer) for _ in range(4)]
        for t in producers + consumers:
            t.start()
        got: list[int] = []

        async def task_consumer() -> None:
            while True:
                try:
                    got.append(await to_tasks.aget())
                except an.QueueClosed:
                    return

        async def task_producer(p: int) -> None:
            for i in range(300):
                await to_threads.aput(p * 1000 + i)

        tc = [asyncio.create_task(task_consumer()) for _ in range(4)]
        await asyncio.gather(*(task_producer(p) for p in range(4)))
        to_threads.close()
        await asyncio.get_running_loop().run_in_executor(None, join_all, producers)
        to_tasks.close()
        await asyncio.gather(*tc)
        await asyncio.get_running_loop().run_in_executor(None, join_all, consumers)
        return got

    expected = sorted(p * 1000 + i for p in range(4) for i in range(300))
    assert sorted(run(main())) == expected
    assert sorted(thread_got) == expected


def test_two_event_loops_share_a_queue() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=2)
    results: dict[str, Any] = {}

    def loop_a() -> None:
        async def produce() -> None:
            for i in range(500):
                await q.aput(i)

        asyncio.run(produce())

    def loop_b() -> None:
        async def consume() -> list[int]:
            return [await q.aget(timeout=30) for _ in range(500)]

        results["b"] = asyncio.run(consume())

    ta, tb = threading.Thread(target=loop_a), threading.Thread(target=loop_b)
    ta.start()
    tb.start()
    ta.join(60)
    tb.join(60)
    assert results["b"] == list(range(500))


def test_cancelled_aget_never_loses_an_item() -> None:
    async def main() -> None:
        rng = random.Random(3)
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        got: list[int] = []
        n = 600

        async def getter() -> None:
            got.append(await q.aget())

        pending: set[asyncio.Task[None]] = set()
        for i in range(n):
            pending.add(asyncio.create_task(getter()))
            if rng.random() < 0.5:
                await asyncio.sleep(0)
            q.put(i)  # from the loop thread, synchronously
            for t in list(pending):
                if not t.done() and rng.random() < 0.3:
                    t.cancel()
            await asyncio.sleep(0)
            pending = {t for t in pending if not t.done()}
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        leftover = []
        while not q.empty():
            leftover.append(q.get_nowait())
        assert sorted(got + leftover) == list(range(n))
        assert q.stats()["waiting"] == 0

    run(main())


def test_cancelled_aget_passes_its_wakeup_on() -> None:
    """Two getters wait; one put wakes one of them; cancelling that one before
    it runs must not strand the item: the other getter receives it."""

    async def main() -> int:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        a = asyncio.create_task(q.aget())
        b = asyncio.create_task(q.aget())
        await asyncio.sleep(0.01)
        q.put(7)  # wakes a (first registered)
        a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a
        return await asyncio.wait_for(b, 5)

    assert run(main()) == 7


def test_cancelled_aput_never_inserts_twice() -> None:
    async def main() -> None:
        rng = random.Random(5)
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=2)
        sent: list[int] = []
        n = 500

        async def putter(i: int) -> None:
            await q.aput(i)
            sent.append(i)

        tasks = []
        got: list[int] = []
        for i in range(n):
            tasks.append(asyncio.create_task(putter(i)))
            await asyncio.sleep(0)
            if rng.random() < 0.4:
                tasks[rng.randrange(len(tasks))].cancel()
            if rng.random() < 0.6:
                try:
                    got.append(q.get_nowait())
                except queue.Empty:
                    pass
        await asyncio.sleep(0)
        while True:
            live = [t for t in tasks if not t.done()]
            try:
                got.append(q.get_nowait())
            except queue.Empty:
                if not live:
                    break
                await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert Counter(got) == Counter(sent)  # exactly the completed puts, once each
        assert max(Counter(got).values()) == 1

    run(main())


def test_ajoin_waits_for_task_done_without_blocking_the_loop() -> None:
    """ajoin() is the asyncio join(): it returns True once every item put has
    been marked done (by threads or tasks), False when its timeout passes, and
    a cancelled ajoin leaves no callback behind."""

    async def main() -> None:
        q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
        assert await q.ajoin() is True  # nothing unfinished
        for i in range(20):
            q.put(i)
        assert await q.ajoin(timeout=0.01) is False
        assert q.stats()["waiting"] == 0

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        def worker() -> None:
            while True:
                try:
                    q.get(timeout=0.2)
                except queue.Empty:
                    return
                q.task_done()

        tick = asyncio.ensure_future(ticker())
        joiners = [asyncio.ensure_future(q.ajoin()) for _ in range(3)]
        while q.stats()["waiting"] < 3:
            await asyncio.sleep(0)
        t = threading.Thread(target=worker)
        t.start()
        assert await asyncio.gather(*joiners) == [True, True, True]
        tick.cancel()
        await asyncio.to_thread(t.join)
        assert ticks > 0 and q.unfinished_tasks == 0

        q.put(1)
        waiter = asyncio.ensure_future(q.ajoin())
        while q.stats()["waiting"] < 1:
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert q.stats()["waiting"] == 0
        q.get_nowait()
        q.task_done()
        assert await q.ajoin(timeout=1) is True

    run(main())


def test_stats_waiting_counts_join_waiters() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    q.put(1)
    done = threading.Event()

    def joiner() -> None:
        q.join()
        done.set()

    t = threading.Thread(target=joiner)
    t.start()
    for _ in range(2000):
        if q.stats()["waiting"] == 1:
            break
        threading.Event().wait(0.005)
    assert q.stats()["waiting"] == 1
    q.get()
    q.task_done()
    t.join()
    assert done.is_set() and q.stats()["waiting"] == 0
