"""ThreadSafeQueue: queue.Queue semantics (the same idioms run against both),
close(), priority ordering with Python `<`, statistics, precise and
interruptible blocking, and no lost or duplicated item under 16-32 threads."""

from __future__ import annotations

import gc
import os
import pickle
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import amulet_native as an

KINDS = ("fifo", "lifo", "priority")


def start_thread(fn: Callable[[], Any]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


# ---- queue.Queue semantics ----------------------------------------------------------------

QUEUE_CLASSES: dict[str, Callable[..., Any]] = {
    "queue.Queue": queue.Queue,
    "ThreadSafeQueue": an.ThreadSafeQueue,
}


@pytest.fixture(params=sorted(QUEUE_CLASSES))
def make_queue(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return QUEUE_CLASSES[request.param]


def test_idiom_worker_pool_with_join(make_queue: Callable[..., Any]) -> None:
    """The queue docs' worker example: task_done/join and a None sentinel."""
    q = make_queue()
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        while True:
            item = q.get()
            if item is None:
                q.task_done()
                break
            with lock:
                results.append(item * 2)
            q.task_done()

    threads = [start_thread(worker) for _ in range(4)]
    for i in range(100):
        q.put(i)
    q.join()
    assert sorted(results) == [2 * i for i in range(100)]
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join(10)
    assert q.unfinished_tasks == 0 and q.empty()
    with pytest.raises(ValueError):
        q.task_done()


def test_idiom_nowait_and_timeouts(make_queue: Callable[..., Any]) -> None:
    q = make_queue(maxsize=2)
    assert q.maxsize == 2 and q.empty() and not q.full() and q.qsize() == 0
    q.put_nowait("a")
    q.put("b", block=False)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    with pytest.raises(queue.Full):
        q.put("c", timeout=0.01)
    with pytest.raises(queue.Full):
        q.put("c", True, 0)
    assert q.get() == "a" and q.get_nowait() == "b"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(ValueError):
        q.put("x", timeout=-0.5)
    q.put("x", block=False, timeout=-1)  # like queue.Queue: timeout ignored when not blocking
    assert q.get(False, -1) == "x"


def test_idiom_drain_until_empty(make_queue: Callable[..., Any]) -> None:
    q = make_queue()
    for i in range(10):
        q.put(i)
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            break
    assert out == list(range(10))


@pytest.mark.parametrize(
    ("kind", "peer"),
    [("fifo", queue.Queue), ("lifo", queue.LifoQueue), ("priority", queue.PriorityQueue)],
)
def test_order_matches_stdlib(kind: str, peer: Callable[[], Any]) -> None:
    import random

    rng = random.Random(7)
    q: an.ThreadSafeQueue[tuple[int, int]] = an.ThreadSafeQueue(kind=kind)  # type: ignore[arg-type]
    p = peer()
    for step in range(3000):
        if rng.random() < 0.55:
            item = (rng.randrange(50), step)
            q.put(item)
            p.put(item)
        elif not p.empty():
            assert q.get_nowait() == p.get_nowait()
        assert q.qsize() == p.qsize()
    while not p.empty():
        assert q.get_nowait() == p.get_nowait()
    assert q.empty() and q.kind == kind


# ---- construction, misuse ---------------------------------------------------------------


def test_bad_arguments() -> None:
    with pytest.raises(an.ValidationError) as info:
        an.ThreadSafeQueue(kind="random")  # type: ignore[arg-type]
    assert info.value.code == "value.invalid" and isinstance(info.value, ValueError)
    with pytest.raises(TypeError):
        an.ThreadSafeQueue("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        an.ThreadSafeQueue(3, "fifo")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        an.ThreadSafeQueue(maxsize=1.5)  # type: ignore[arg-type]
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    with pytest.raises(TypeError):
        q.put()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        q.put(1, tmeout=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        q.get(True, "soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.get(timeout=float("nan"))
    with pytest.raises(TypeError):
        pickle.dumps(q)
    assert an.ThreadSafeQueue(-5).maxsize == -5  # <= 0: unbounded, as queue.Queue
    big: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(-5)
    for i in range(1000):
        big.put_nowait(i)
    assert big.qsize() == 1000 and not big.full()
    assert an.ThreadSafeQueue[int] is not None


def test_priority_comparison_errors_leave_queue_intact() -> None:
    q: an.ThreadSafeQueue[Any] = an.ThreadSafeQueue(kind="priority")
    for x in (5, 1, 3):
        q.put(x)
    with pytest.raises(TypeError):
        q.put("text")  # str < int raises
    assert q.qsize() == 3 and q.stats()["puts"] == 3

    class Bomb:
        armed = False

        def __init__(self, v: int) -> None:
            self.v = v

        def __lt__(self, other: Bomb) -> bool:
            if Bomb.armed:
                raise RuntimeError("boom")
            return self.v < other.v

    b: an.ThreadSafeQueue[Bomb] = an.ThreadSafeQueue(kind="priority")
    for v in (4, 2, 9, 1, 7):
        b.put(Bomb(v))
    Bomb.armed = True
    with pytest.raises(RuntimeError):
        b.get()
    with pytest.raises(RuntimeError):
        b.put(Bomb(0))
    assert b.qsize() == 5
    Bomb.armed = False
    assert [b.get().v for _ in range(5)] == [1, 2, 4, 7, 9]


def test_queue_cycle_is_collected() -> None:
    q: an.ThreadSafeQueue[Any] = an.ThreadSafeQueue()
    q.put(q)
    q.put([q])
    del q
    gc.collect()
    assert not any(isinstance(o, an.ThreadSafeQueue) and o.qsize() == 2 for o in gc.get_objects())


# ---- close() ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_close_drains_then_raises(kind: Any) -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(kind=kind)
    q.put(1)
    q.put(2)
    q.close()
    q.close()  # idempotent
    assert q.closed
    with pytest.raises(an.QueueClosed) as info:
        q.put(3)
    assert info.value.code == "queue.closed"
    assert sorted([q.get(), q.get_nowait()]) == [1, 2]
    for call in (q.get, q.get_nowait, lambda: q.get(timeout=5)):
        with pytest.raises(an.QueueClosed):
            call()
    assert pickle.loads(pickle.dumps(info.value)).code == "queue.closed"


def test_close_wakes_blocked_consumers_and_producers() -> None:
    empty: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    full: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
    full.put(0)
    outcomes: list[str] = []
    lock = threading.Lock()

    def blocked(fn: Callable[[], Any]) -> None:
        try:
            fn()
            result = "returned"
        except an.QueueClosed:
            result = "closed"
        with lock:
            outcomes.append(result)

    threads = [start_thread(lambda: blocked(empty.get)) for _ in range(4)]
    threads += [start_thread(lambda: blocked(lambda: full.put(1))) for _ in range(4)]
    deadline = time.monotonic() + 10
    while (empty.stats()["waiting"] < 4 or full.stats()["waiting"] < 4) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.005)
    empty.close()
    full.close()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert outcomes == ["closed"] * 8
    assert full.get() == 0  # the queued item is still there


# ---- blocking: GIL released, timeouts, Ctrl-C ------------------------------------------------


def test_blocked_get_releases_the_gil_and_wakes_on_put() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    progress = []

    def producer() -> None:
        # Runs Python code while the main thread is blocked in get().
        while q.stats()["waiting"] == 0:
            time.sleep(0.001)
        total = 0
        for i in range(200_000):
            total += i
        progress.append(total)
        q.put(42)

    t = start_thread(producer)
    assert q.get(timeout=30) == 42
    t.join()
    assert progress == [sum(range(200_000))]
    s = q.stats()
    assert s["puts"] == 1 and s["gets"] == 1 and s["high_water"] == 1 and s["wait_time"] > 0


@pytest.mark.parametrize("timeout", [0.05, 0.12])
def test_timeouts_wait_at_least_the_timeout(timeout: float) -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=timeout)
    assert time.monotonic() - t0 >= timeout
    q.put(1)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(2, timeout=timeout)
    assert time.monotonic() - t0 >= timeout
    q.task_done()  # the put above was counted; get() is not needed for the count
    assert q.join(timeout=timeout) is True
    assert q.stats()["wait_time"] >= 1.8 * timeout  # both waits, measured inside the call


def test_join_timeout() -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue()
    q.put(1)
    assert q.join(timeout=0.02) is False
    q.get()
    q.task_done()
    assert q.join(timeout=0.02) is True and q.join() is True


def _interrupt_soon(delay: float = 0.2) -> threading.Timer:
    timer = threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
@pytest.mark.parametrize("op", ["get", "put", "join", "get_or_create"])
def test_ctrl_c_interrupts_a_blocked_call(op: str) -> None:
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(maxsize=1)
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict()
    release = threading.Event()
    if op == "put":
        q.put(0)
    if op == "join":
        q.put(0)
    if op == "get_or_create":
        owner = start_thread(lambda: d.get_or_create("k", lambda: release.wait(30) and 1))
        while "k" not in d and d.stats()["misses"] < 1:
            time.sleep(0.001)
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: q.get(timeout=30),
        "put": lambda: q.put(1, timeout=30),
        "join": lambda: q.join(timeout=30),
        "get_or_create": lambda: d.get_or_create("k", lambda: 2),
    }
    timer = _interrupt_soon()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            calls[op]()
    finally:
        timer.cancel()
        release.set()
    assert time.monotonic() - t0 < 25  # it was the signal, not the timeout
    if op == "get_or_create":
        owner.join(10)
        assert d["k"] == 1
    # the queue is still usable and consistent
    assert q.qsize() == (1 if op in ("put", "join") else 0)


# ---- stress: nothing lost, nothing duplicated ------------------------------------------------


def _stress(kind: Any, maxsize: int, producers: int, consumers: int, per: int,
            close_early: bool) -> None:
    q: an.ThreadSafeQueue[tuple[int, int]] = an.ThreadSafeQueue(maxsize, kind=kind)
    produced: list[list[tuple[int, int]]] = [[] for _ in range(producers)]
    consumed: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]
    start = threading.Barrier(producers + consumers + 1)

    def produce(p: int) -> None:
        start.wait()
        for i in range(per):
            item = (i % 17, p * per + i)
            try:
                if i % 3 == 0:
                    while True:
                        try:
                            q.put(item, timeout=0.001)
                            break
                        except queue.Full:
                            continue
                else:
                    q.put(item)
            except an.QueueClosed:
                return
            produced[p].append(item)

    def consume(c: int) -> None:
        start.wait()
        while True:
            try:
                item = q.get(timeout=0.002) if c % 2 else q.get()
            except queue.Empty:
                continue
            except an.QueueClosed:
                return
            consumed[c].append(item)
            q.task_done()

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    for t in threads:
        t.start()
    start.wait()
    if close_early:
        while sum(map(len, consumed)) < producers * per // 4:
            time.sleep(0.001)
    else:
        for t in threads[:producers]:
            t.join(60)
    q.close()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    made = Counter(x for p in produced for x in p)
    got = Counter(x for c in consumed for x in c)
    assert got == made  # no item lost, none duplicated
    assert max(got.values(), default=1) == 1
    s = q.stats()
    assert s["puts"] == s["gets"] == sum(made.values())
    if maxsize > 0:
        assert s["high_water"] <= maxsize
    assert q.join(timeout=5) is True


@pytest.mark.usefixtures("fast_switch")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("maxsize", [0, 8])
@pytest.mark.parametrize("close_early", [False, True], ids=["drain", "close-early"])
def test_stress_no_loss_no_duplicates(kind: str, maxsize: int, close_early: bool) -> None:
    _stress(kind, maxsize, producers=8, consumers=8, per=400, close_early=close_early)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_switch")
@pytest.mark.parametrize("kind", KINDS)
def test_stress_32_threads(kind: str) -> None:
    _stress(kind, 4, producers=16, consumers=16, per=1500, close_early=False)


class SlowLess:
    """Priority items whose `<` is Python code that lets other threads run."""

    def __init__(self, key: int, uid: int) -> None:
        self.key, self.uid = key, uid

    def __lt__(self, other: SlowLess) -> bool:
        time.sleep(0)
        return (self.key, self.uid) < (other.key, other.uid)


@pytest.mark.usefixtures("fast_switch")
def test_priority_with_python_lt_under_threads() -> None:
    q: an.ThreadSafeQueue[SlowLess] = an.ThreadSafeQueue(kind="priority")
    n_threads, per = 16, 150
    got: list[list[int]] = [[] for _ in range(n_threads)]

    def work(i: int) -> None:
        for k in range(per):
            q.put(SlowLess(k % 7, i * per + k))
            if k % 2:
                got[i].append(q.get().uid)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    rest = []
    while not q.empty():
        rest.append(q.get_nowait())
    assert [(x.key, x.uid) for x in rest] == sorted((x.key, x.uid) for x in rest)
    uids = [u for g in got for u in g] + [x.uid for x in rest]
    assert sorted(uids) == list(range(n_threads * per))


class JobQueue(an.ThreadSafeQueue[int]):
    """Subclasses work like subclasses of queue.Queue."""

    def put_many(self, items: list[int]) -> None:
        for item in items:
            self.put(item)


def test_subclass() -> None:
    q = JobQueue(maxsize=3, kind="lifo")
    q.put_many([1, 2, 3])
    assert q.full() and q.get() == 3 and q.kind == "lifo"
    q.close()
    with pytest.raises(an.QueueClosed):
        q.put(4)


@pytest.mark.parametrize(
    ("kind", "peer"),
    [("fifo", queue.Queue), ("lifo", queue.LifoQueue), ("priority", queue.PriorityQueue)],
)
def test_burst_grow_and_shrink_keeps_order(kind: str, peer: Callable[[], Any]) -> None:
    """A burst grows the storage; draining shrinks it again (csrc/core/sync/sync.c)."""
    q: an.ThreadSafeQueue[int] = an.ThreadSafeQueue(kind=kind)  # type: ignore[arg-type]
    p = peer()
    for rnd in range(3):
        for i in range(20_000):
            x = (i * 7919 + rnd) % 20_011
            q.put(x)
            p.put(x)
        for _ in range(19_990):
            assert q.get_nowait() == p.get_nowait()
    assert q.qsize() == p.qsize() == 30
