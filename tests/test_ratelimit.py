"""amulet_native.ratelimit in process: GCRA against a reference model, headers,
validation, threads and the memory bound of MemoryStore.

Time is injected (``clock=``) wherever a test depends on it, so no test sleeps
and none asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import re
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_threads, switch_often
from hypothesis import given, settings
from hypothesis import strategies as st

from amulet_native import ArenaError, RateLimitExceeded, ValidationError
from amulet_native.ratelimit import (
    Decision,
    MemoryStore,
    Policy,
    RateLimiter,
    SharedStore,
    headers,
    parse_policy,
)

NS = 1_000_000_000


class FakeClock:
    """Monotonic seconds that only move when the test says so (whole µs)."""

    def __init__(self, start_us: int = 1_000_000) -> None:
        self.us = start_us

    def __call__(self) -> float:
        return self.us / 1e6

    def advance(self, seconds: float) -> None:
        self.us += round(seconds * 1e6)

    @property
    def ns(self) -> int:
        return round(self.us / 1e6 * 1e9)


# ---- the reference model ------------------------------------------------------


@dataclass
class Model:
    """Textbook GCRA (one TAT per key and policy, integer nanoseconds), written
    independently of the C core: the store's decisions must equal it."""

    policies: Sequence[Policy]
    tats: dict[tuple[str, int], int] = field(default_factory=dict)

    def decide(
        self, key: str, cost: int, now: int, record: bool
    ) -> tuple[bool, int, int, int, int]:
        results = []
        for i, p in enumerate(self.policies):
            t = -(-p.period_ns // p.limit)
            tau = p.capacity * t
            tat = self.tats.get((key, i), 0)
            pending = max(tat, now) - now
            diff = pending + cost * t
            if diff <= tau:
                results.append((True, (tau - diff) // t, diff, 0, now + diff))
            else:
                rem = 0 if pending >= tau else (tau - pending) // t
                results.append((False, rem, pending, diff - tau, tat))
        allowed = all(r[0] for r in results)
        if allowed:
            best = min(range(len(results)), key=lambda i: (results[i][1], -results[i][2], i))
        else:
            refused = [i for i, r in enumerate(results) if not r[0]]
            best = max(refused, key=lambda i: (results[i][3], -i))
        if record and allowed and cost > 0:
            for i, r in enumerate(results):
                self.tats[(key, i)] = r[4]
        r = results[best]
        return allowed, best, r[1], r[2], r[3]


def as_tuple(d: Decision, policies: Sequence[Policy]) -> tuple[bool, int, int, int, int]:
    return (
        d.allowed,
        list(policies).index(d.policy),
        d.remaining,
        round(d.reset_after * 1e9),
        round(d.retry_after * 1e9),
    )


policy_st = st.builds(
    Policy,
    name=st.sampled_from(["a", "b", "c", "d"]),
    limit=st.integers(1, 50),
    period=st.sampled_from([0.5, 1.0, 3.0, 60.0, 7.0]),
    burst=st.one_of(st.none(), st.integers(1, 60)),
)


@settings(max_examples=150, deadline=None)
@given(
    policies=st.lists(policy_st, min_size=1, max_size=3, unique_by=lambda p: p.name),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2_000_000),  # µs to advance
            st.sampled_from(["k1", "k2", "k3"]),
            st.integers(0, 5),  # cost (clamped to the smallest burst)
            st.booleans(),  # check or peek
        ),
        max_size=60,
    ),
)
def test_gcra_matches_reference_model(
    policies: list[Policy], ops: list[tuple[int, str, int, bool]]
) -> None:
    _against_model(RateLimiter, policies, ops)


@settings(max_examples=60, deadline=None)
@given(
    policies=st.lists(policy_st, min_size=1, max_size=3, unique_by=lambda p: p.name),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2_000_000),
            st.sampled_from(["k1", "k2", "k3"]),
            st.integers(0, 5),
            st.booleans(),
        ),
        max_size=40,
    ),
)
def test_shared_store_matches_reference_model(
    shared_store: SharedStore, policies: list[Policy], ops: list[tuple[int, str, int, bool]]
) -> None:
    def make(policies: list[Policy], *, clock: FakeClock) -> RateLimiter:
        limiter = RateLimiter(policies, store=shared_store, clock=clock)
        for k in ("k1", "k2", "k3"):
            limiter.reset(k)  # the arena outlives hypothesis' examples
        return limiter

    _against_model(make, policies, ops)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedStore]:
    store = SharedStore(tmp_path_factory.mktemp("arena"), max_keys=4096, max_limiters=64)
    yield store
    store.close()


def _against_model(
    make: Callable[..., RateLimiter], policies: list[Policy], ops: list[tuple[int, str, int, bool]]
) -> None:
    clock = FakeClock()
    limiter = make(policies, clock=clock)
    model = Model(policies)
    max_cost = min(p.capacity for p in policies)
    for dt, key, cost, record in ops:
        clock.us += dt
        cost = min(cost, max_cost)
        d = limiter.check(key, cost) if record else limiter.peek(key, cost)
        assert as_tuple(d, policies) == model.decide(key, cost, clock.ns, record)
        assert d.remaining >= 0 and d.reset_after >= 0 and d.retry_after >= 0
        assert d.limit == d.policy.limit
        assert (d.retry_after == 0) == d.allowed


# ---- exact admission ----------------------------------------------------------


def test_burst_then_steady_rate_admits_exactly() -> None:
    clock = FakeClock()
    limiter = RateLimiter("10/second;burst=5", clock=clock)
    # the burst: exactly 5 at one instant
    assert [limiter.check("k").allowed for _ in range(7)] == [True] * 5 + [False] * 2
    # then a request every 10 ms for 10 s: exactly one per 100 ms
    admitted = 0
    for _ in range(1000):
        clock.advance(0.01)
        admitted += limiter.check("k").allowed
    assert admitted == 100


def test_no_boundary_burst() -> None:
    """A fixed window admits 2x its limit around a boundary; GCRA never does."""
    clock = FakeClock()
    limiter = RateLimiter("100/minute", clock=clock)
    clock.advance(59.9)
    first = sum(limiter.check("k").allowed for _ in range(200))
    clock.advance(0.2)
    second = sum(limiter.check("k").allowed for _ in range(200))
    assert first == 100
    assert second == 0  # only 0.2 s passed: 0.6 s per request


def test_retry_after_is_exact_and_never_negative() -> None:
    clock = FakeClock()
    limiter = RateLimiter("2/second", clock=clock)
    limiter.check("k")
    limiter.check("k")
    d = limiter.check("k")
    assert not d.allowed and d.retry_after == pytest.approx(0.5)
    clock.advance(d.retry_after - 0.001)
    assert not limiter.check("k").allowed
    clock.advance(0.001)
    assert limiter.check("k").allowed
    clock.advance(3600)
    d = limiter.peek("k")
    assert d.allowed and d.retry_after == 0 and d.reset_after == pytest.approx(0.5)


class SettableClock:
    """Seconds the test sets, forwards or backwards."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("shared", [False, True])
def test_clock_going_back_neither_admits_nor_locks_out(
    shared: bool, shared_store: SharedStore
) -> None:
    """review-12: a TAT more than a burst ahead (the clock went back) made the
    int64 arithmetic wrap: an exhausted key was admitted with a negative
    remaining.  It is now one full burst, and the key recovers within tau."""
    clock = SettableClock(4e9)  # the largest time the binding accepts
    policy = Policy("decade", limit=1, period=10 * 365 * 86400, burst=14)
    store = shared_store if shared else None
    limiter = RateLimiter([policy], store=store, clock=clock)
    limiter.reset("k")
    assert limiter.check("k", cost=14).allowed
    clock.t = 0.0
    d = limiter.check("k", cost=14)
    assert not d.allowed
    assert d.remaining == 0 and d.retry_after > 0 and d.reset_after >= 0
    assert d.retry_after <= 14 * policy.interval_ns / NS + 1

    # a 10/s key whose clock jumped back a day is usable after one burst
    # window (1 s), not a day later
    fast = RateLimiter("10/second", store=store, clock=clock)
    fast.reset("k")
    clock.t = 2 * 86400.0
    assert all(fast.check("k").allowed for _ in range(10))
    clock.t = 86400.0
    assert not fast.check("k").allowed
    clock.t = 86400.0 + 2
    d = fast.check("k")
    assert d.allowed and d.remaining == 9


def test_hostile_keys_and_costs_get_typed_errors() -> None:
    """review-12: a str key with a lone surrogate raised UnicodeEncodeError on
    the native path (the Redis path accepted it), and cost=True was admitted
    natively but refused on the Redis path."""
    limiter = RateLimiter("10/second")
    for key in ("\udc80", "a\ud800b"):
        d = limiter.check(key)
        assert d.allowed and limiter.peek(key).remaining == 8
        limiter.reset(key)
        assert limiter.peek(key).remaining == 9
    for cost in (True, False):
        with pytest.raises(ValidationError) as info:
            limiter.check("k", cost)
        assert info.value.code == "ratelimit.cost"
    # empty and NUL keys are ordinary keys; str and its UTF-8 bytes are one key
    assert limiter.check("").allowed and limiter.check("a\0b").allowed
    assert limiter.peek(b"a\0b").remaining == 8 and limiter.peek("").remaining == 8


def test_cost_weights() -> None:
    clock = FakeClock()
    limiter = RateLimiter(Policy("upload", 1000, 1.0, unit="content-bytes"), clock=clock)
    assert limiter.check("k", cost=600).remaining == 400
    d = limiter.check("k", cost=600)
    assert not d.allowed and d.remaining == 400 and d.retry_after == pytest.approx(0.2)
    assert limiter.check("k", 400).allowed
    assert limiter.peek("k", cost=0).remaining == 0


def test_several_policies_most_restrictive_decides() -> None:
    clock = FakeClock()
    limiter = RateLimiter(["10/second", "15/minute"], clock=clock)
    burst, quota = limiter.policies
    decisions = [limiter.check("k") for _ in range(12)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
    assert decisions[0].policy == burst  # 9 left of 10 < 14 left of 15
    assert decisions[10].policy == burst
    clock.advance(10)  # the quota (T = 4 s) has 7.5 units back, the burst all 10
    decisions = [limiter.check("k") for _ in range(9)]
    assert [d.allowed for d in decisions] == [True] * 7 + [False] * 2
    assert decisions[-1].policy == quota and decisions[-1].retry_after > 1
    # a refusal by one policy recorded nothing in the other
    assert limiter.peek("k", 0).remaining == 0


def test_peek_records_nothing_and_reset_forgets() -> None:
    limiter = RateLimiter("3/hour")
    for _ in range(10):
        assert limiter.peek("k").remaining == 2
    limiter.check("k")
    assert limiter.peek("k", 0).remaining == 2
    limiter.reset("k")
    assert limiter.peek("k", 0).remaining == 3


def test_keys_and_limiters_are_independent() -> None:
    store = MemoryStore()
    a = RateLimiter("1/hour", store=store)
    b = RateLimiter("1/hour", store=store)
    assert a.check("x").allowed and not a.check("x").allowed
    assert a.check(b"y").allowed
    assert b.check("x").allowed  # same store, another limiter
    assert len(store) == 3


def test_hit_raises_with_the_decision() -> None:
    limiter = RateLimiter("1/hour")
    limiter.hit("k")
    with pytest.raises(RateLimitExceeded) as info:
        limiter.hit("k")
    exc = info.value
    assert exc.code == "ratelimit.exceeded" and exc.http_status == 429
    assert exc.decision is not None and not exc.decision.allowed
    assert exc.context["policy"] == "1/hour" and exc.retry_after == exc.decision.retry_after
    again = pickle.loads(pickle.dumps(exc))
    assert again.decision == exc.decision and again.code == exc.code


def test_async_forms() -> None:
    limiter = RateLimiter("2/hour")

    async def main() -> list[bool]:
        out = [(await limiter.acheck("k")).allowed, (await limiter.apeek("k")).allowed]
        await limiter.ahit("k")
        with pytest.raises(RateLimitExceeded):
            await limiter.ahit("k")
        return out

    assert asyncio.run(main()) == [True, True]


def test_decision_type() -> None:
    p = Policy("p", 10, 1.0)
    d = Decision(True, 3, 0.5, 0.0, p, 10)
    assert d and d.remaining == 3 and d.policy is p
    assert pickle.loads(pickle.dumps(d)) == d
    assert "remaining=3" in repr(d)
    assert not Decision(False, 0, 0.5, 0.2, p, 10)
    with pytest.raises(ValueError):
        Decision(True, -1, 0.5, 0.0, p, 10)
    with pytest.raises(ValueError):
        Decision(True, 1, math.nan, 0.0, p, 10)


# ---- headers ------------------------------------------------------------------

SF_ITEM = re.compile(r'^"(?P<name>(?:[^"\\]|\\.)*)"(?P<params>(?:;[a-z]+=(?:\d+|"[^"]*"))*)$')


def sf_params(value: str) -> tuple[str, dict[str, str]]:
    m = SF_ITEM.match(value)
    assert m is not None, value
    params = dict(p.split("=", 1) for p in m["params"].split(";")[1:])
    return m["name"], params


@settings(max_examples=100, deadline=None)
@given(
    policy=policy_st,
    steps=st.lists(st.integers(0, 3_000_000), min_size=1, max_size=40),
)
def test_headers_agree_with_decisions(policy: Policy, steps: list[int]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(policy, clock=clock)
    for dt in steps:
        clock.us += dt
        d = limiter.check("k")
        h = headers(d, now=1_700_000_000.25)
        name, pol = sf_params(h["RateLimit-Policy"])
        assert name == policy.name
        assert int(pol["q"]) == policy.limit and int(pol["w"]) == math.ceil(policy.period)
        name2, cur = sf_params(h["RateLimit"])
        assert name2 == name
        assert int(cur["r"]) == d.remaining == int(h["X-RateLimit-Remaining"])
        assert int(cur["t"]) == math.ceil(d.reset_after) >= 0
        assert int(h["X-RateLimit-Limit"]) == policy.limit
        assert int(h["X-RateLimit-Reset"]) == math.ceil(1_700_000_000.25 + d.reset_after)
        if d.allowed:
            assert "Retry-After" not in h
        else:
            assert int(h["Retry-After"]) == max(1, math.ceil(d.retry_after)) >= 1
            assert d.retry_after <= d.reset_after + 1e-9 or d.remaining == 0


def test_headers_quote_the_name_and_state_the_unit() -> None:
    p = Policy('up"load', 1000, 60, unit="content-bytes")
    d = RateLimiter(p).check("k", 10)
    h = headers(d)
    assert h["RateLimit-Policy"] == '"up\\"load";q=1000;w=60;qu="content-bytes"'
    assert h["RateLimit"] == '"up\\"load";r=990;t=1'
    assert sf_params(h["RateLimit-Policy"])[0] == 'up\\"load'


# ---- validation ---------------------------------------------------------------


def test_parse_policy() -> None:
    assert parse_policy("100/minute") == Policy("100/minute", 100, 60.0)
    assert parse_policy("10/second;burst=20") == Policy("10/second", 10, 1.0, burst=20)
    assert parse_policy("1000 per 5 minutes").period == 300.0
    p = parse_policy("5/10s; name=upload; unit=content-bytes")
    assert (p.name, p.limit, p.period, p.unit) == ("upload", 5, 10.0, "content-bytes")
    assert [p.name for p in RateLimiter("10/second, 1000/day").policies] == [
        "10/second",
        "1000/day",
    ]


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ("", "ratelimit.policy"),
        ("100", "ratelimit.policy"),
        ("100/fortnight", "ratelimit.policy"),
        ("ten/second", "ratelimit.policy"),
        ("-5/second", "ratelimit.policy"),
        ("0/second", "ratelimit.limit"),
        ("10/second;burst=0", "ratelimit.burst"),
        ("10/second;burst=x", "ratelimit.burst"),
        ("10/second;burst=\u00b2", "ratelimit.burst"),  # isdigit() but not int()
        ("1000000000000000/second;burst=5", "ratelimit.limit"),
        ("10/second;burst", "ratelimit.policy"),
        ("10/second;colour=red", "ratelimit.policy"),
        ("10/0second", "ratelimit.period"),
        ("10/second;unit=apples", "ratelimit.policy"),
    ],
)
def test_malformed_policy_strings(spec: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_policy(spec)
    assert info.value.code == code


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"limit": 0}, "ratelimit.limit"),
        ({"limit": -1}, "ratelimit.limit"),
        ({"limit": 1.5}, "ratelimit.limit"),
        ({"limit": True}, "ratelimit.limit"),
        ({"period": 0}, "ratelimit.period"),
        ({"period": -1.0}, "ratelimit.period"),
        ({"period": math.nan}, "ratelimit.period"),
        ({"period": math.inf}, "ratelimit.period"),
        ({"burst": 0}, "ratelimit.burst"),
        # above the 15 digits of a Structured Field Integer (q=, r=) or int64
        ({"limit": 10**15, "burst": 5}, "ratelimit.limit"),
        ({"limit": 2**63, "burst": 5}, "ratelimit.limit"),
        ({"limit": 1, "period": 1e-9, "burst": 10**15}, "ratelimit.burst"),
        ({"name": ""}, "ratelimit.policy"),
        ({"name": "caf\u00e9"}, "ratelimit.policy"),
    ],
)
def test_bad_policy_fields(kwargs: dict[str, object], code: str) -> None:
    args: dict[str, object] = {"name": "p", "limit": 10, "period": 1.0} | kwargs
    with pytest.raises(ValidationError) as info:
        Policy(**args)  # type: ignore[arg-type]
    assert info.value.code == code


def test_bad_calls() -> None:
    limiter = RateLimiter("10/second;burst=5")
    for cost in (6, -1, 1.5, math.nan, "1", 2**70):
        with pytest.raises(ValidationError) as info:
            limiter.check("k", cost)  # type: ignore[arg-type]
        assert info.value.code == "ratelimit.cost"
    for key in (None, 1, b"x" * 1025, "y" * 1025, ["k"]):
        with pytest.raises(ValidationError) as info:
            limiter.check(key)  # type: ignore[arg-type]
        assert info.value.code == "ratelimit.key"
    with pytest.raises(ValidationError):
        RateLimiter([])
    with pytest.raises(ValidationError):
        RateLimiter(["1/second"] * 2)
    with pytest.raises(ValidationError):
        RateLimiter([f"{i}/second;name=p{i}" for i in range(1, 10)])
    with pytest.raises(ValidationError):
        RateLimiter("1/second", on_store_error="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MemoryStore(0)

    def bad_clock() -> float:
        return math.nan

    with pytest.raises(ValidationError):
        RateLimiter("1/second", clock=bad_clock).check("k")


# ---- threads and memory -------------------------------------------------------


def test_32_threads_on_one_key_admit_exactly_the_limit() -> None:
    limiter = RateLimiter("1000/day")  # T = 86.4 s: no refill during the test
    admitted = [0] * 32

    def worker(i: int) -> None:
        for _ in range(100):
            admitted[i] += limiter.check("shared").allowed

    with switch_often():
        run_threads(32, worker)
    assert sum(admitted) == 1000


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="RSS means nothing under ASan's allocator (quarantine); the store's own "
                    "byte count is checked by the normal run")
def test_a_million_distinct_keys_stay_bounded() -> None:
    store = MemoryStore(max_keys=10_000)
    limiter = RateLimiter("5/minute", store=store)
    for i in range(50_000):
        limiter.check(f"warm-{i}")
    rss_before = _rss_kib()
    for i in range(1_000_000):
        limiter.check(f"client-{i}")
    stats = store.stats()
    assert stats["keys"] <= 10_000
    assert stats["evicted_live"] + stats["evicted_expired"] >= 1_040_000
    assert stats["bytes"] < 10_000 * 200 + 16 * 1024 * 8 * 2
    assert _rss_kib() - rss_before < 20_000  # no growth with the number of clients


def test_stateless_keys_are_evicted_before_live_ones() -> None:
    clock = FakeClock()
    store = MemoryStore(max_keys=4)
    limiter = RateLimiter("100/100second", store=store, clock=clock)
    limiter.check("live", cost=100)  # busy for 100 s, and the coldest key
    for k in ("e1", "e2", "e3"):
        limiter.check(k)  # state for 1 s
    clock.advance(50)
    limiter.check("new")
    assert store.stats()["evicted_expired"] == 1 and store.stats()["evicted_live"] == 0
    assert limiter.peek("live", 0).remaining == 50


def test_purge_drops_stateless_keys() -> None:
    store = MemoryStore()
    limiter = RateLimiter("1000/second", store=store)
    for i in range(100):
        limiter.check(f"k{i}")
    assert len(store) == 100
    store.clear()
    assert len(store) == 0
    assert store.purge() == 0


# ---- SharedStore --------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent

_SHARED_CHILD = textwrap.dedent(
    """
    import sys, time
    from amulet_native.ratelimit import RateLimiter, SharedStore
    path, start = sys.argv[1], float(sys.argv[2])
    store = SharedStore(path)
    burst = RateLimiter("500/day", store=store)
    both = RateLimiter(["200/day", "50/minute;burst=300"], store=store)
    while time.time() < start:
        time.sleep(0.001)
    a = b = 0
    for i in range(400):
        a += burst.check("shared").allowed
        b += both.check("shared", cost=1 + i % 2).allowed
    print(a, b)
    """
)


def test_four_processes_share_one_limit(tmp_path: Path) -> None:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SHARED_CHILD, str(tmp_path), str(start)],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    single = multi = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        a, b = map(int, out.split())
        single += a
        multi += b
    assert single == 500
    # alternating costs 1 and 2 against 200 units: all 200 are spent, never more
    assert multi in range(100, 201)
    store = SharedStore(tmp_path)
    left = RateLimiter(["200/day", "50/minute;burst=300"], store=store).peek("shared", 0)
    assert left.remaining == 0
    assert RateLimiter("500/day", store=store).peek("shared", 0).remaining == 0
    store.close()


def test_shared_store_basics(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SharedStore(tmp_path, max_keys=16)
    a = RateLimiter("2/second", store=store, clock=clock)
    b = RateLimiter("2/second", store=store, clock=clock)  # the same policies: one limit
    assert a.check("k").allowed and b.check("k").allowed
    assert not a.check("k").allowed
    clock.advance(0.5)
    assert b.check("k").allowed
    other = RateLimiter("2/second;name=other", store=store, clock=clock)
    assert other.check("k").remaining == 1  # another policy set: another table
    a.reset("k")
    assert b.peek("k", 0).remaining == 2
    with pytest.raises(ValidationError) as info:
        a.check("k", cost=3)
    assert info.value.code == "ratelimit.cost"
    with pytest.raises(ValidationError):
        a.check(7)  # type: ignore[arg-type]
    # a flood of distinct keys stays in the table (bounded), evicting by stripe
    for i in range(1000):
        a.check(f"c{i}")
    assert a._native.stats()["evicted_live"] > 0
    store.close()
    with pytest.raises(ArenaError):
        a.check("k")
    with pytest.raises(ValidationError):
        SharedStore(tmp_path, max_keys=0)


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="RSS means nothing under ASan's allocator (quarantine)")
def test_no_leak_on_decisions_and_errors(tmp_path: Path) -> None:
    """Decisions, refusals and raised ValidationErrors return all their memory
    (C side included: RSS, not tracemalloc)."""
    store = SharedStore(tmp_path, max_keys=256)
    limiters = [
        RateLimiter("5/second", store=MemoryStore(256)),
        RateLimiter("5/second", store=store),
    ]

    def churn(n: int) -> None:
        for lim in limiters:
            for i in range(n):
                lim.check(f"k{i % 300}")
                lim.peek(b"k", cost=2)
                try:
                    lim.check("k", cost=99)
                except ValidationError:
                    pass

    churn(20_000)
    before = _rss_kib()
    churn(100_000)
    assert _rss_kib() - before < 4_000
    store.close()


def test_an_unknown_store_is_refused_at_construction() -> None:
    with pytest.raises(ValidationError) as e:
        RateLimiter("5/second", store=object())  # type: ignore[arg-type]
    assert e.value.code == "value.invalid"
