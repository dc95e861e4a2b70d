"""Integration: the thread-safe structures used together the way an image
service uses them.

16 worker threads and 32 asyncio tasks (whose blocking part runs in the loop's
thread pool, as FastAPI does for sync endpoints) share one ThreadSafeQueue of
jobs, an ObjectPool of two "model" objects, an AtomicCounter of jobs done and
a ThreadSafeDict of results.  Some jobs make the model raise, which must
discard that model.  At the end the producer waits for join(), closes the
queue (every consumer wakes with QueueClosed) and closes the pool.  Checked:
every job processed exactly once (nothing lost, nothing duplicated), the pool
never lends more than two models at a time nor one model to two borrowers, and
every model ever made is closed exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import amulet_native as an

JOBS = 1200
FAIL_EVERY = 97  # these jobs make the model raise (the pool discards it)


class ModelError(Exception):
    pass


class Model:
    """A stand-in for an inference model: tracks who is using it."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.users = an.AtomicCounter()

    def run(self, job: int) -> int:
        if self.users.increment() != 1:
            raise AssertionError(f"model {self.serial} lent to two borrowers")
        try:
            if job % FAIL_EVERY == 0:
                raise ModelError(job)
            return job * job
        finally:
            self.users.decrement()


def test_threads_and_tasks_share_queue_pool_counter_and_dict(fast_switch: None) -> None:
    jobs: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=64)
    done = an.AtomicCounter()
    active = an.AtomicCounter()  # models lent out right now
    peak = an.AtomicCounter()
    results: an.ThreadSafeDict[int, tuple[str, object]] = an.ThreadSafeDict()
    made: list[Model] = []
    closed: list[int] = []
    serials = an.AtomicCounter()
    duplicates: list[int] = []
    errors: list[BaseException] = []

    def factory() -> Model:
        m = Model(serials.increment())
        made.append(m)
        return m

    pool: an.ObjectPool[Model] = an.ObjectPool(
        factory, max_size=2, close=lambda m: closed.append(m.serial)
    )

    def handle(job: int, who: str) -> None:
        """One job: borrow a model, run it, record the result exactly once."""
        try:
            with pool.acquire(timeout=60) as model:
                now = active.increment()
                while True:  # peak = max(peak, now), lock-free
                    seen = peak.value
                    if now <= seen or peak.compare_and_set(seen, now):
                        break
                try:
                    outcome: object = model.run(job)
                finally:
                    active.decrement()
        except ModelError:
            outcome = "error"
        if results.setdefault(job, (who, outcome)) != (who, outcome):
            duplicates.append(job)
        done.increment()
        jobs.task_done()

    def worker(i: int) -> None:
        try:
            while True:
                try:
                    job = jobs.get()
                except an.QueueClosed:
                    return
                handle(job, f"thread-{i}")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    async def serve() -> None:
        async def task(i: int) -> None:
            while True:
                try:
                    job = await jobs.aget()
                except an.QueueClosed:
                    return
                await asyncio.to_thread(handle, job, f"task-{i}")

        outcomes = await asyncio.gather(*(task(i) for i in range(32)), return_exceptions=True)
        errors.extend(o for o in outcomes if isinstance(o, BaseException))

    def producer() -> None:
        for job in range(JOBS):
            jobs.put(job)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    loop_thread = threading.Thread(target=asyncio.run, args=(serve(),))
    prod = threading.Thread(target=producer)
    for t in [*threads, loop_thread, prod]:
        t.start()
    prod.join()
    assert jobs.join(timeout=120), "jobs left unfinished"
    jobs.close()
    for t in [*threads, loop_thread]:
        t.join(timeout=120)
        assert not t.is_alive()
    pool.close()

    assert errors == [] and duplicates == []
    assert sorted(results.keys()) == list(range(JOBS))  # nothing lost
    assert done.value == JOBS
    by_kind = Counter(v[0].split("-")[0] for v in results.values())
    assert by_kind["thread"] > 0 and by_kind["task"] > 0  # both sides really served
    for job, (_, outcome) in results.items():
        assert outcome == ("error" if job % FAIL_EVERY == 0 else job * job)
    assert 1 <= peak.value <= 2 and active.value == 0  # never over-admitted
    failing = len(range(0, JOBS, FAIL_EVERY))
    stats = pool.stats()
    assert stats["failures"] == failing and stats["in_use"] == 0 and stats["size"] == 0
    assert len(made) == serials.value >= failing  # each failure discarded its model
    assert sorted(closed) == sorted(m.serial for m in made)  # every model closed once
    qs = jobs.stats()
    assert qs["puts"] == qs["gets"] == JOBS and jobs.unfinished_tasks == 0 and jobs.empty()
