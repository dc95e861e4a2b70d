"""Thread-safe structures against their usual stand-ins.

Every timed call does a fixed batch of operations (OPS of them, or a whole
producer/consumer run), written the way an application would write it
(``q.put(x); q.get()``, ``with lock: n += 1``), so the timer's resolution does
not matter and paired rounds (``measure(ref=...)``) stay possible.  Peers:

- queues: ``queue.Queue`` (pure Python on a Condition), ``queue.SimpleQueue``
  (C, unbounded, no task_done/join/maxsize), ``collections.deque`` (not a
  blocking queue at all; the floor), ``queue.PriorityQueue`` and heapq + Lock;
- counters: ``threading.Lock`` + int, ``itertools.count`` (only increments, no
  read-back of the value without consuming it), the ``atomics`` package
  (``fetch_inc``, C11 atomics via CFFI);
- dict: dict + ``threading.Lock`` (what ThreadSafeDict replaces) and a plain
  dict without the lock (not thread-safe for compound operations; the floor).

ft_utils (Meta's free-threading utilities, the natural native peer) has no
CPython 3.11 wheel, so it is not measured.  No timing assertions here:
report.py judges the targets.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from conftest import measure

import amulet_native as an

OPS = 1000
ITEMS_MT = 20_000  # items through the 4 + 4 thread runs
R = range(OPS)

QUEUE_GROUP = f"queue put+get, 1 thread (x{OPS})"
PRIORITY_GROUP = f"priority queue put+get, 1 thread (x{OPS})"
QUEUE_MT_GROUP = f"queue 4 producers + 4 consumers ({ITEMS_MT} items)"
COUNTER_GROUP = f"counter increment, 1 thread (x{OPS})"
COUNTER_MT_GROUP = f"counter increment, 4 threads (4 x {OPS * 10})"
DICT_GET_GROUP = f"dict get hit (x{OPS})"
DICT_SET_GROUP = f"dict set (x{OPS})"
DICT_GOC_GROUP = f"dict get_or_create hit (x{OPS})"

AMULET = "amulet_native"


# ---- queues ------------------------------------------------------------------------------


def queue_roundtrip(peer: str) -> Callable[[Any], Any]:
    if peer == AMULET:
        q: Any = an.ThreadSafeQueue()
    elif peer == "queue.Queue":
        q = queue.Queue()
    elif peer == "queue.SimpleQueue":
        q = queue.SimpleQueue()
    elif peer == "collections.deque (not blocking)":
        d: collections.deque[int] = collections.deque()

        def run_deque(_: Any) -> None:
            for i in R:
                d.append(i)
                d.popleft()

        return run_deque
    else:
        raise ValueError(peer)

    def run(_: Any) -> None:
        for i in R:
            q.put(i)
            q.get()

    return run


QUEUE_PEERS = (AMULET, "queue.Queue", "queue.SimpleQueue", "collections.deque (not blocking)")


@pytest.mark.parametrize("peer", QUEUE_PEERS)
def test_queue_roundtrip(benchmark: Any, peer: str) -> None:
    ref = queue_roundtrip(AMULET) if peer != AMULET else None
    measure(benchmark, queue_roundtrip(peer), None, group=QUEUE_GROUP, peer=peer, kind="sync",
            ref=ref)


def priority_roundtrip(peer: str) -> Callable[[Any], Any]:
    items = [((i * 7919) % 101, i) for i in R]
    if peer in (AMULET, "queue.PriorityQueue"):
        q: Any = an.ThreadSafeQueue(kind="priority") if peer == AMULET else queue.PriorityQueue()
        for x in items[:64]:  # a standing backlog, so the heap has depth
            q.put(x)

        def run(_: Any) -> None:
            for x in items:
                q.put(x)
                q.get()

        return run
    if peer == "heapq + Lock":
        heap: list[tuple[int, int]] = list(items[:64])
        heapq.heapify(heap)
        lock = threading.Lock()

        def run_heapq(_: Any) -> None:
            for x in items:
                with lock:
                    heapq.heappush(heap, x)
                with lock:
                    heapq.heappop(heap)

        return run_heapq
    raise ValueError(peer)


@pytest.mark.parametrize("peer", (AMULET, "queue.PriorityQueue", "heapq + Lock"))
def test_priority_roundtrip(benchmark: Any, peer: str) -> None:
    ref = priority_roundtrip(AMULET) if peer != AMULET else None
    measure(benchmark, priority_roundtrip(peer), None, group=PRIORITY_GROUP, peer=peer,
            kind="sync", ref=ref)


def producers_consumers(peer: str) -> Callable[[Any], Any]:
    """4 producer and 4 consumer threads move ITEMS_MT items; consumers stop
    at a None sentinel each.  Thread start-up is included for every peer."""
    make: Callable[[], Any] = {
        AMULET: an.ThreadSafeQueue,
        "queue.Queue": queue.Queue,
        "queue.SimpleQueue": queue.SimpleQueue,
    }[peer]
    per = ITEMS_MT // 4

    def run(_: Any) -> int:
        q = make()
        got = [0] * 4

        def produce() -> None:
            for i in range(per):
                q.put(i)

        def consume(c: int) -> None:
            n = 0
            while q.get() is not None:
                n += 1
            got[c] = n

        producers = [threading.Thread(target=produce) for _ in range(4)]
        consumers = [threading.Thread(target=consume, args=(c,)) for c in range(4)]
        for t in producers + consumers:
            t.start()
        for t in producers:
            t.join()
        for _ in consumers:
            q.put(None)
        for t in consumers:
            t.join()
        return sum(got)

    return run


@pytest.mark.parametrize("peer", (AMULET, "queue.Queue", "queue.SimpleQueue"))
def test_queue_threads(benchmark: Any, peer: str) -> None:
    ref = producers_consumers(AMULET) if peer != AMULET else None
    moved = measure(benchmark, producers_consumers(peer), None, group=QUEUE_MT_GROUP, peer=peer,
                    kind="sync", ref=ref, min_rounds=10)
    assert moved == ITEMS_MT


# ---- counters ------------------------------------------------------------------------------


def counter_loop(peer: str, ops: int = OPS) -> Callable[[Any], Any]:
    rng = range(ops)
    if peer == AMULET:
        c = an.AtomicCounter()

        def run(_: Any) -> int:
            for _i in rng:
                c.increment()
            return c.value

        return run
    if peer == "Lock + int":
        lock = threading.Lock()
        box = [0]

        def run_lock(_: Any) -> int:
            for _i in rng:
                with lock:
                    box[0] += 1
            return box[0]

        return run_lock
    if peer == "itertools.count":
        it = itertools.count()

        def run_count(_: Any) -> int:
            for _i in rng:
                next(it)
            return 0

        return run_count
    if peer == "atomics fetch_inc":
        atomics = pytest.importorskip("atomics", reason="the atomics package is not installed")
        a = atomics.atomic(width=8, atype=atomics.INT)

        def run_atomics(_: Any) -> int:
            for _i in rng:
                a.fetch_inc()
            return int(a.load())

        return run_atomics
    raise ValueError(peer)


COUNTER_PEERS = (AMULET, "Lock + int", "itertools.count", "atomics fetch_inc")


@pytest.mark.parametrize("peer", COUNTER_PEERS)
def test_counter(benchmark: Any, peer: str) -> None:
    ref = counter_loop(AMULET) if peer != AMULET else None
    measure(benchmark, counter_loop(peer), None, group=COUNTER_GROUP, peer=peer, kind="sync",
            ref=ref)


def counter_threads(peer: str) -> Callable[[Any], Any]:
    body = counter_loop(peer, OPS * 10)  # one shared counter for the 4 threads

    def run(_: Any) -> None:
        threads = [threading.Thread(target=body, args=(None,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


@pytest.mark.parametrize("peer", (AMULET, "Lock + int", "atomics fetch_inc"))
def test_counter_threads(benchmark: Any, peer: str) -> None:
    ref = counter_threads(AMULET) if peer != AMULET else None
    measure(benchmark, counter_threads(peer), None, group=COUNTER_MT_GROUP, peer=peer,
            kind="sync", ref=ref, min_rounds=10)


# ---- dict ---------------------------------------------------------------------------------------

KEYS = [f"user:{i}" for i in range(OPS)]


def dict_op(op: str, peer: str) -> Callable[[Any], Any]:
    data = {k: i for i, k in enumerate(KEYS)}
    if peer == AMULET:
        d: Any = an.ThreadSafeDict(data)
        if op == "get":

            def run_get(_: Any) -> None:
                for k in KEYS:
                    d[k]

            return run_get
        if op == "set":

            def run_set(_: Any) -> None:
                for k in KEYS:
                    d[k] = 1

            return run_set

        def run_goc(_: Any) -> None:
            for k in KEYS:
                d.get_or_create(k, int)

        return run_goc
    locked = peer == "dict + Lock"
    plain: dict[str, int] = dict(data)
    lock = threading.Lock()
    if op == "get":

        def get_locked(_: Any) -> None:
            for k in KEYS:
                with lock:
                    plain[k]

        def get_plain(_: Any) -> None:
            for k in KEYS:
                plain[k]

        return get_locked if locked else get_plain
    if op == "set":

        def set_locked(_: Any) -> None:
            for k in KEYS:
                with lock:
                    plain[k] = 1

        def set_plain(_: Any) -> None:
            for k in KEYS:
                plain[k] = 1

        return set_locked if locked else set_plain

    def goc_locked(_: Any) -> None:  # the usual hand-written get-or-create
        for k in KEYS:
            with lock:
                v = plain.get(k)
                if v is None:
                    v = plain[k] = 0

    def goc_plain(_: Any) -> None:
        for k in KEYS:
            v = plain.get(k)
            if v is None:
                v = plain[k] = 0

    return goc_locked if locked else goc_plain


DICT_PEERS = (AMULET, "dict + Lock", "dict (no lock, unsafe)")


@pytest.mark.parametrize("peer", DICT_PEERS)
@pytest.mark.parametrize(
    ("op", "group"), [("get", DICT_GET_GROUP), ("set", DICT_SET_GROUP), ("goc", DICT_GOC_GROUP)]
)
def test_dict(benchmark: Any, op: str, group: str, peer: str) -> None:
    ref = dict_op(op, AMULET) if peer != AMULET else None
    measure(benchmark, dict_op(op, peer), None, group=group, peer=peer, kind="sync", ref=ref)
