"""AtomicCounter: exact arithmetic, int64 bounds, pickling, and no lost update
when many threads hammer one counter with forced interleavings."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable

import pytest

import amulet_native as an

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def run_threads(n: int, target: Callable[[int], None]) -> None:
    start = threading.Barrier(n)

    def body(i: int) -> None:
        start.wait()
        target(i)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_basic_operations() -> None:
    c = an.AtomicCounter()
    assert c.value == 0 and c.get() == 0 and int(c) == 0
    assert c.increment() == 1
    assert c.increment(5) == 6
    assert c.increment(n=4) == 10
    assert c.decrement() == 9
    assert c.decrement(n=10) == -1
    assert c.add_and_get(11) == 10
    assert c.get_and_add(5) == 10 and c.value == 15
    assert c.get_and_add(n=-15) == 15 and c.value == 0
    c.set(42)
    assert c.get_and_set(7) == 42 and c.value == 7
    assert c.compare_and_set(7, 8) is True and c.value == 8
    assert c.compare_and_set(7, 9) is False and c.value == 8
    assert c.compare_and_set(expected=8, new=1) and c.value == 1
    assert repr(c) == "AtomicCounter(1)"
    assert an.AtomicCounter(-3).value == -3
    assert an.AtomicCounter(initial=True).value == 1


def test_overflow_raises_and_leaves_value() -> None:
    c = an.AtomicCounter(I64_MAX)
    with pytest.raises(OverflowError):
        c.increment()
    assert c.value == I64_MAX
    with pytest.raises(OverflowError):
        c.add_and_get(I64_MAX)
    assert c.decrement(I64_MAX) == 0
    c.set(I64_MIN)
    with pytest.raises(OverflowError):
        c.decrement()
    with pytest.raises(OverflowError):
        c.increment(-1)
    assert c.value == I64_MIN
    c.set(0)
    with pytest.raises(OverflowError):
        c.decrement(I64_MIN)  # 0 - (-2**63) does not fit
    assert c.value == 0


@pytest.mark.parametrize("bad", [2**63, I64_MIN - 1, 10**30])
def test_out_of_range_input(bad: int) -> None:
    with pytest.raises(OverflowError):
        an.AtomicCounter(bad)
    c = an.AtomicCounter(5)
    for call in (c.increment, c.decrement, c.set, c.get_and_set, c.add_and_get, c.get_and_add):
        with pytest.raises(OverflowError):
            call(bad)
    with pytest.raises(OverflowError):
        c.compare_and_set(5, bad)
    assert c.value == 5


@pytest.mark.parametrize("bad", [1.5, "3", None, b"1", [1]])
def test_wrong_types(bad: object) -> None:
    c = an.AtomicCounter()
    with pytest.raises(TypeError):
        c.increment(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.set(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        an.AtomicCounter(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.increment(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        c.increment(m=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        c.add_and_get()  # type: ignore[call-arg]
    assert c.value == 0


def test_pickle_is_a_snapshot() -> None:
    c = an.AtomicCounter(123)
    d = pickle.loads(pickle.dumps(c))
    assert isinstance(d, an.AtomicCounter) and d.value == 123
    d.increment()
    assert c.value == 123


class Hits(an.AtomicCounter):
    pass


def test_subclass() -> None:
    h = Hits(2)
    assert h.increment() == 3 and repr(h) == "Hits(3)"
    assert type(pickle.loads(pickle.dumps(h))) is Hits


@pytest.mark.usefixtures("fast_switch")
def test_no_lost_increments() -> None:
    c = an.AtomicCounter()
    n_threads, per = 24, 4000

    def work(i: int) -> None:
        for _ in range(per):
            c.increment()
            c.decrement(2)
            c.add_and_get(2)

    run_threads(n_threads, work)
    assert c.value == n_threads * per


@pytest.mark.usefixtures("fast_switch")
def test_cas_loops_are_exact() -> None:
    """Hand-written CAS loops (multiply by one, add one) never lose an update."""
    c = an.AtomicCounter()
    n_threads, per = 16, 1500
    failures = an.AtomicCounter()

    def work(i: int) -> None:
        for _ in range(per):
            while True:
                cur = c.get()
                if c.compare_and_set(cur, cur + 1):
                    break
                failures.increment()

    run_threads(n_threads, work)
    assert c.value == n_threads * per
    assert failures.value >= 0


@pytest.mark.usefixtures("fast_switch")
def test_get_and_set_hands_out_each_value_once() -> None:
    """get_and_set as a token exchange: the multiset of tokens is conserved."""
    c = an.AtomicCounter(-1)
    n_threads, per = 16, 1000
    seen: list[list[int]] = [[] for _ in range(n_threads)]

    def work(i: int) -> None:
        for k in range(per):
            seen[i].append(c.get_and_set(i * per + k))

    run_threads(n_threads, work)
    tokens = sorted([x for s in seen for x in s] + [c.value])
    assert tokens == sorted([-1] + list(range(n_threads * per)))
