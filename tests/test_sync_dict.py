"""ThreadSafeDict: the MutableMapping contract (checked against dict, also by a
hypothesis state machine), snapshot iteration under concurrent writers, and
the atomic compound operations under 16-32 threads with forced interleavings."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import pytest
from conftest import switch_often
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import amulet_native as an


def run_threads(n: int, target: Callable[[int], None], timeout: float = 60.0) -> None:
    start = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            start.wait()
            target(i)
        except Exception as exc:  # noqa: BLE001 - re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread hung"
    if errors:
        raise errors[0]


# ---- the mapping contract ---------------------------------------------------------------


def test_is_a_mutable_mapping() -> None:
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict({"a": 1}, b=2)
    assert isinstance(d, MutableMapping) and isinstance(d, Mapping)
    assert d == {"a": 1, "b": 2} and d != {"a": 1}
    assert d == an.ThreadSafeDict([("a", 1), ("b", 2)])
    assert len(d) == 2 and "a" in d and "z" not in d
    assert d["a"] == 1 and d.get("z") is None and d.get("z", 5) == 5
    d["c"] = 3
    del d["a"]
    with pytest.raises(KeyError):
        d["a"]
    with pytest.raises(KeyError):
        del d["a"]
    assert sorted(d) == ["b", "c"]
    assert sorted(d.keys()) == ["b", "c"] and sorted(d.values()) == [2, 3]
    assert sorted(d.items()) == [("b", 2), ("c", 3)]
    assert d.keys() & {"b", "x"} == {"b"}
    assert d.setdefault("b", 9) == 2 and d.setdefault("d", 4) == 4 and d["d"] == 4
    assert d.pop("d") == 4 and d.pop("d", None) is None
    with pytest.raises(KeyError):
        d.pop("d")
    d.update({"e": 5}, f=6)
    d.update([("g", 7)])
    assert d.popitem() == ("g", 7)
    assert d.snapshot() == {"b": 2, "c": 3, "e": 5, "f": 6}
    c = d.copy()
    assert isinstance(c, an.ThreadSafeDict) and c == d and c is not d
    d.clear()
    assert len(d) == 0 and not d and c
    with pytest.raises(KeyError):
        d.popitem()
    assert repr(an.ThreadSafeDict(x=1)) == "ThreadSafeDict({'x': 1})"
    with pytest.raises(TypeError):
        hash(d)
    with pytest.raises(TypeError):
        d[[1]] = 1  # type: ignore[index]
    assert an.ThreadSafeDict[str, int] is not None


def test_tuple_key_error_and_recursive_repr() -> None:
    d: an.ThreadSafeDict[Any, Any] = an.ThreadSafeDict()
    with pytest.raises(KeyError) as info:
        d[(1, 2)]
    assert info.value.args == ((1, 2),)
    d["self"] = d
    assert repr(d) == "ThreadSafeDict({'self': ThreadSafeDict(...)})"
    d.clear()


def test_pickle_snapshot() -> None:
    d = an.ThreadSafeDict({"a": [1, 2], "b": 3})
    e = pickle.loads(pickle.dumps(d))
    assert isinstance(e, an.ThreadSafeDict) and e == d


def test_stats_count_reads_writes_misses() -> None:
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict()
    d["a"] = 1
    d.get("a")
    d.get("zz")
    assert "q" not in d
    with pytest.raises(KeyError):
        d["nope"]
    d.get_or_create("b", lambda: 2)
    d.get_or_create("b", lambda: 3)
    s = d.stats()
    assert s == {"reads": 6, "writes": 2, "misses": 4, "retries": 0, "size": 2}
    d.reset_stats()
    assert d.stats()["reads"] == 0


class CollidingKey:
    """A key with Python __hash__/__eq__ that always collides."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        time.sleep(0)  # a chance for the interpreter to switch threads
        return isinstance(other, CollidingKey) and other.name == self.name


@pytest.mark.usefixtures("fast_switch")
def test_python_level_keys_under_threads() -> None:
    d: an.ThreadSafeDict[CollidingKey, int] = an.ThreadSafeDict()
    calls = an.AtomicCounter()
    keys = [CollidingKey(f"k{i}") for i in range(6)]

    def factory() -> int:
        calls.increment()
        time.sleep(0.002)
        return 1

    def work(i: int) -> None:
        for k in keys:
            assert d.get_or_create(CollidingKey(k.name), factory) == 1
            d.setdefault(k, 0)
            assert k in d

    run_threads(16, work)
    assert calls.value == len(keys)  # single flight even for Python-level keys
    assert sorted(k.name for k in d) == [k.name for k in keys]


# ---- concurrency --------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_switch")
def test_snapshot_iteration_while_writers_mutate() -> None:
    d: an.ThreadSafeDict[int, int] = an.ThreadSafeDict({i: i for i in range(200)})
    stop = threading.Event()

    def writer(i: int) -> None:
        k = 1000 * (i + 1)
        while not stop.is_set():
            for j in range(50):
                d[k + j] = j
            for j in range(50):
                del d[k + j]

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in writers:
        t.start()
    try:
        for _ in range(300):
            keys = list(d)
            assert set(range(200)) <= set(keys)
            items = list(d.items())
            assert all(k == v for k, v in items if k < 200)
            assert len(d.values()) >= 200
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert len(d) == 200


@pytest.mark.usefixtures("fast_switch")
def test_get_or_create_runs_factory_once_per_key() -> None:
    d: an.ThreadSafeDict[int, object] = an.ThreadSafeDict()
    calls: dict[int, an.AtomicCounter] = {k: an.AtomicCounter() for k in range(20)}
    results: list[list[object]] = [[] for _ in range(32)]

    def make(k: int) -> Callable[[], object]:
        def factory() -> object:
            calls[k].increment()
            time.sleep(0.001)  # keep the flight open so others must wait
            return object()

        return factory

    def work(i: int) -> None:
        for k in range(20):
            results[i].append(d.get_or_create(k, make(k)))

    run_threads(32, work)
    assert all(c.value == 1 for c in calls.values())
    for k in range(20):
        assert len({id(r[k]) for r in results}) == 1  # everyone got the same object
        assert d[k] is results[0][k]


@pytest.mark.usefixtures("fast_switch")
def test_get_or_create_failure_reaches_every_waiter() -> None:
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict()
    calls = an.AtomicCounter()
    outcomes: list[object] = []
    lock = threading.Lock()

    def factory() -> int:
        calls.increment()
        # Every caller counts its miss just before joining the flight (no Python
        # code in between), so once all 16 misses are in, 15 callers wait on this
        # flight, with the GIL released, or this loop could not run.
        deadline = time.monotonic() + 20
        while d.stats()["misses"] < 16 and time.monotonic() < deadline:
            time.sleep(0.001)
        raise ValueError("model failed to load")

    def work(i: int) -> None:
        try:
            outcome: object = d.get_or_create("m", factory)
        except ValueError as exc:
            outcome = exc
        with lock:
            outcomes.append(outcome)

    run_threads(16, work)
    assert len(outcomes) == 16
    assert all(isinstance(o, ValueError) and str(o) == "model failed to load" for o in outcomes)
    assert calls.value == 1
    assert "m" not in d
    assert d.get_or_create("m", lambda: 5) == 5  # a later call tries again


def test_get_or_create_recursion_is_an_error() -> None:
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict()

    def factory() -> int:
        return d.get_or_create("k", factory)

    with pytest.raises(RuntimeError, match="same key"):
        d.get_or_create("k", factory)
    assert "k" not in d
    assert d.get_or_create("k", lambda: 1) == 1


def test_get_or_create_bad_arguments() -> None:
    d: an.ThreadSafeDict[Any, Any] = an.ThreadSafeDict()
    with pytest.raises(TypeError):
        d.get_or_create("k", 5)  # type: ignore[arg-type]
    assert "k" not in d
    with pytest.raises(TypeError):
        d.get_or_create([], list)
    with pytest.raises(TypeError):
        d.get_or_create("k")  # type: ignore[call-arg]
    assert d.get_or_create(key="k", factory=list) == []


@pytest.mark.usefixtures("fast_switch")
def test_update_with_is_exact() -> None:
    d: an.ThreadSafeDict[str, int] = an.ThreadSafeDict()
    n_threads, per = 16, 300

    def work(i: int) -> None:
        for _ in range(per):
            d.update_with("hits", lambda v: v + 1, 0)
            d.update_with(f"t{i % 4}", lambda v: (v or 0) + 2)

    run_threads(n_threads, work)
    assert d["hits"] == n_threads * per
    assert sum(d[f"t{j}"] for j in range(4)) == 2 * n_threads * per


def test_update_with_error_leaves_value() -> None:
    d: an.ThreadSafeDict[str, Any] = an.ThreadSafeDict(a=1)
    with pytest.raises(ZeroDivisionError):
        d.update_with("a", lambda v: v // 0, 0)
    assert d["a"] == 1
    assert d.update_with("b", lambda v: [v]) == [None]


@pytest.mark.usefixtures("fast_switch")
def test_compare_and_swap_uses_equality_and_is_exact() -> None:
    d: an.ThreadSafeDict[str, Any] = an.ThreadSafeDict(n=10**6)
    assert d.compare_and_swap("n", int("1000000"), 5)  # equal, not identical
    assert not d.compare_and_swap("n", 6, 7) and d["n"] == 5
    assert not d.compare_and_swap("absent", None, 1) and "absent" not in d
    d["n"] = 0

    def work(i: int) -> None:
        for _ in range(400):
            while True:
                cur = d["n"]
                if d.compare_and_swap("n", cur, cur + 1):
                    break

    run_threads(16, work)
    assert d["n"] == 16 * 400


@pytest.mark.usefixtures("fast_switch")
def test_pop_hands_out_each_key_once() -> None:
    d = an.ThreadSafeDict({i: i for i in range(4000)})
    got: list[list[int]] = [[] for _ in range(16)]

    def work(i: int) -> None:
        for k in range(4000):
            v = d.pop(k, None)
            if v is not None:
                got[i].append(v)

    run_threads(16, work)
    assert sorted(x for g in got for x in g) == list(range(4000))
    assert len(d) == 0


# ---- model-based: ThreadSafeDict behaves like dict -------------------------------------------

keys = st.one_of(st.integers(-5, 5), st.sampled_from(["a", "b", "c"]), st.tuples(st.integers(0, 2)))
values = st.integers()


class DictModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.real: an.ThreadSafeDict[Any, int] = an.ThreadSafeDict()
        self.model: dict[Any, int] = {}

    @rule(k=keys, v=values)
    def set(self, k: Any, v: int) -> None:
        self.real[k] = v
        self.model[k] = v

    @rule(k=keys)
    def delete(self, k: Any) -> None:
        if k in self.model:
            del self.real[k]
            del self.model[k]
        else:
            with pytest.raises(KeyError):
                del self.real[k]

    @rule(k=keys, v=values)
    def setdefault(self, k: Any, v: int) -> None:
        assert self.real.setdefault(k, v) == self.model.setdefault(k, v)

    @rule(k=keys)
    def pop(self, k: Any) -> None:
        assert self.real.pop(k, None) == self.model.pop(k, None)

    @rule()
    def popitem(self) -> None:
        if self.model:
            assert self.real.popitem() == self.model.popitem()

    @rule(k=keys, v=values)
    def get_or_create(self, k: Any, v: int) -> None:
        assert self.real.get_or_create(k, lambda: v) == self.model.setdefault(k, v)

    @rule(k=keys, n=values)
    def update_with(self, k: Any, n: int) -> None:
        self.model[k] = self.model.get(k, 0) + n
        assert self.real.update_with(k, lambda v: v + n, 0) == self.model[k]

    @rule(k=keys, e=values, n=values)
    def cas(self, k: Any, e: int, n: int) -> None:
        hit = k in self.model and self.model[k] == e
        if hit:
            self.model[k] = n
        assert self.real.compare_and_swap(k, e, n) == hit

    @rule(other=st.dictionaries(keys, values, max_size=4))
    def update(self, other: dict[Any, int]) -> None:
        self.real.update(other)
        self.model.update(other)

    @rule()
    def clear(self) -> None:
        self.real.clear()
        self.model.clear()

    @invariant()
    def same(self) -> None:
        assert self.real == self.model
        assert len(self.real) == len(self.model)
        assert list(self.real) == list(self.model)
        assert list(self.real.items()) == list(self.model.items())


DictModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_dict_model = DictModel.TestCase


class _SlowKey:
    """A key hashed and compared in Python (like a dataclass): a fresh but
    equal instance each time, so every lookup runs __hash__ and __eq__."""

    def __init__(self, v: int, hook: Any = None) -> None:
        self.v = v
        self.hook = hook

    def __hash__(self) -> int:
        return hash(("slow", self.v))

    def __eq__(self, other: object) -> bool:
        if self.hook is not None:
            self.hook()
        return isinstance(other, _SlowKey) and other.v == self.v


def test_update_with_and_cas_exact_for_python_hashed_keys() -> None:
    """update_with / compare_and_swap never lose an update even when the key's
    __hash__/__eq__ are Python code (a thread switch can happen inside them)."""
    with switch_often():
        d: an.ThreadSafeDict[_SlowKey, int] = an.ThreadSafeDict()
        per, nthreads = 400, 16
        d[_SlowKey(2)] = 1

        def work() -> None:
            for _ in range(per):
                d.update_with(_SlowKey(1), lambda n: n + 1, 0)
                while True:
                    cur = d[_SlowKey(2)]
                    if d.compare_and_swap(_SlowKey(2), cur, cur + 1):
                        break

        threads = [threading.Thread(target=work) for _ in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert d[_SlowKey(1)] == per * nthreads
        assert d[_SlowKey(2)] == per * nthreads + 1


def test_commit_reentered_from_key_eq_raises() -> None:
    """A key whose __eq__ calls update_with on the same dict during a commit
    gets RuntimeError (instead of waiting for itself); the dict stays usable."""
    d: an.ThreadSafeDict[Any, int] = an.ThreadSafeDict()
    armed = False

    def reenter() -> None:
        if armed:
            d.update_with("other", lambda n: n + 1, 0)

    d[_SlowKey(1, hook=reenter)] = 0  # the stored key's __eq__ runs on lookups
    armed = True
    with pytest.raises(RuntimeError, match="re-entered"):
        d.update_with(_SlowKey(1), lambda n: n + 1, 0)
    armed = False
    assert d[_SlowKey(1)] == 0
    d.update_with(_SlowKey(1), lambda n: n + 1, 0)  # the commit step was given back
    assert d[_SlowKey(1)] == 1
