"""Rate limiting and health against their usual stand-ins.

In memory (one process): every timed call does 1000 checks, one for each of
1000 client keys, under "100/second" (a realistic mix of admitted and refused
requests; every peer sees the same sequence), written the way an application
writes it (``for key in keys: limiter.check(key)``).  Peers: ``limits`` 5.x
with MemoryStorage and its three strategies (moving window, sliding window
counter, fixed window; ``limiter.hit(item, key)`` is what slowapi calls), a
Lock + dict token bucket (the hand-written baseline), and the bare loop (the
floor: what the loop costs without any limiter).  Rounds are paired with the
amulet_native call (``measure(ref=...)``).

Redis (a real redis-server on loopback, started here): every timed call does
50 checks over 10 keys.  Sync: amulet_native RedisStore vs limits'
RedisStorage (moving window, sliding window counter, fixed window).  Async:
``acheck`` vs fastapi-limiter 0.2 (pyrate-limiter's RedisBucket, which its
dependency calls).  Round trips per check (redis-py ``send_packed_command``
calls) and Redis commands per check (INFO commandstats) are counted separately.

Several processes: 4 workers start together and each does N checks; the
worker reports its own loop time (``_ratelimit_worker.py``).  SharedStore
(one limit in the arena), RedisStore and limits' Redis moving window, with
MemoryStore per process as the floor.

Health: ``report("ready")`` with 10 cached checks, the same through the ASGI
endpoint, and a hand-written ``asyncio.gather`` of 10 trivial checks +
``json.dumps`` as the reference.  No timing assertions here.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import measure

from amulet_native import health
from amulet_native.ratelimit import RateLimiter, RedisStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_server import RedisServer, redis_server_binary

AMULET = "amulet_native"
KEYS = [f"client-{i}" for i in range(1000)]
MEM_GROUP = "ratelimit check in memory, 100/second (x1000 keys)"
REDIS_GROUP = "ratelimit check on Redis, sync (x50)"
AREDIS_GROUP = "ratelimit check on Redis, async (x50)"
HEALTH_GROUP = "health report, 10 cached checks"
MP_GROUP = "ratelimit 4 processes"
WORKER = Path(__file__).resolve().parent / "_ratelimit_worker.py"
REPO_ROOT = Path(__file__).resolve().parent.parent


# ---- in memory ------------------------------------------------------------------


class LockTokenBucket:
    """The hand-written baseline: a token bucket per key in a dict under a Lock
    (unbounded: one entry per client ever seen)."""

    def __init__(self, limit: int, period: float) -> None:
        self.rate = limit / period
        self.capacity = float(limit)
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self.buckets[key] = (tokens - 1.0, now)
                return True
            self.buckets[key] = (tokens, now)
            return False


def _limits_batch(peer: str, storage: Any) -> Callable[[Any], Any]:
    """The batch of a ``limits`` strategy peer (named by peer) over storage."""
    from limits import parse
    from limits.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    strategy = {
        "limits moving window": MovingWindowRateLimiter,
        "limits sliding window counter": SlidingWindowCounterRateLimiter,
        "limits fixed window": FixedWindowRateLimiter,
    }[peer]
    lim = strategy(storage)
    item = parse("100/second")
    hit = lim.hit

    def run_limits(keys: list[str]) -> Any:
        for k in keys:
            hit(item, k)

    return run_limits


def memory_batch(peer: str) -> Callable[[Any], Any]:
    if peer == AMULET:
        check = RateLimiter("100/second").check

        def run(keys: list[str]) -> Any:
            for k in keys:
                check(k)

        return run
    if peer == "loop only (floor)":

        def floor(keys: list[str]) -> Any:
            for k in keys:
                len(k)

        return floor
    if peer == "Lock + dict token bucket":
        tb = LockTokenBucket(100, 1.0).check

        def run_tb(keys: list[str]) -> Any:
            for k in keys:
                tb(k)

        return run_tb
    from limits.storage import MemoryStorage

    return _limits_batch(peer, MemoryStorage())


MEM_PEERS = [
    AMULET,
    "limits moving window",
    "limits sliding window counter",
    "limits fixed window",
    "Lock + dict token bucket",
    "loop only (floor)",
]


@pytest.mark.parametrize("peer", MEM_PEERS)
def test_memory_check(benchmark: Any, peer: str) -> None:
    fn = memory_batch(peer)
    ref = memory_batch(AMULET) if peer != AMULET else None
    measure(benchmark, fn, KEYS, group=MEM_GROUP, peer=peer, kind="ratelimit", ref=ref)
    benchmark.extra_info["checks_per_call"] = len(KEYS)


# ---- Redis ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        srv = RedisServer(Path(tmp))
        srv.start()
        try:
            yield srv.url
        finally:
            srv.stop()


REDIS_KEYS = [f"client-{i % 10}" for i in range(50)]


def redis_batch(peer: str, url: str) -> Callable[[Any], Any]:
    if peer == AMULET:
        check = RateLimiter("100/second", store=RedisStore(url, timeout=5.0)).check

        def run(keys: list[str]) -> Any:
            for k in keys:
                check(k)

        return run
    from limits.storage import RedisStorage

    return _limits_batch(peer, RedisStorage(url))


REDIS_PEERS = [
    AMULET,
    "limits moving window",
    "limits sliding window counter",
    "limits fixed window",
]


@pytest.mark.parametrize("peer", REDIS_PEERS)
def test_redis_check(benchmark: Any, redis_url: str, peer: str) -> None:
    fn = redis_batch(peer, redis_url)
    ref = redis_batch(AMULET, redis_url) if peer != AMULET else None
    measure(benchmark, fn, REDIS_KEYS, group=REDIS_GROUP, peer=peer, kind="ratelimit", ref=ref)
    benchmark.extra_info.update(checks_per_call=len(REDIS_KEYS), **redis_costs(fn, redis_url))


def redis_costs(fn: Callable[[Any], Any], url: str) -> dict[str, float]:
    """Round trips and server-side commands per check of one batch."""
    import redis
    import redis.asyncio.connection as aconn
    import redis.connection as conn

    trips = [0]
    originals = (conn.Connection.send_packed_command, aconn.Connection.send_packed_command)

    def counting(self: Any, *a: Any, **k: Any) -> Any:
        trips[0] += 1
        return originals[0](self, *a, **k)

    async def acounting(self: Any, *a: Any, **k: Any) -> Any:
        trips[0] += 1
        return await originals[1](self, *a, **k)

    admin = redis.Redis.from_url(url)
    fn(REDIS_KEYS)  # warm: scripts loaded, connections open
    before = _command_calls(admin)
    conn.Connection.send_packed_command = counting  # type: ignore[method-assign]
    aconn.Connection.send_packed_command = acounting  # type: ignore[method-assign]
    try:
        fn(REDIS_KEYS)
    finally:
        conn.Connection.send_packed_command = originals[0]  # type: ignore[method-assign]
        aconn.Connection.send_packed_command = originals[1]  # type: ignore[method-assign]
    after = _command_calls(admin)
    admin.close()
    n = len(REDIS_KEYS)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    calls.pop("info", None)
    return {
        "round_trips_per_check": trips[0] / n,
        "redis_commands_per_check": sum(calls.values()) / n,
        "redis_commands": json.dumps({k: v / n for k, v in sorted(calls.items()) if v}),
    }


def _command_calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def aredis_batch(peer: str, url: str, lp: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    if peer == AMULET:
        limiter = RateLimiter("100/second", store=RedisStore(url, timeout=5.0))

        async def many(keys: list[str]) -> None:
            for k in keys:
                await limiter.acheck(k)

    else:
        import redis.asyncio as aredis
        from pyrate_limiter import Duration, Limiter, Rate, RedisBucket

        async def build() -> Any:
            client = aredis.Redis.from_url(url)
            bucket = await RedisBucket.init([Rate(100, Duration.SECOND)], client, "fl-bench")
            return Limiter(bucket)

        lim = lp.run_until_complete(build())

        async def many(keys: list[str]) -> None:
            for k in keys:
                await lim.try_acquire_async(k, blocking=False)

    return lambda keys: lp.run_until_complete(many(keys))


@pytest.mark.parametrize("peer", [AMULET, "fastapi-limiter (pyrate RedisBucket)"])
def test_redis_check_async(
    benchmark: Any, redis_url: str, loop: asyncio.AbstractEventLoop, peer: str
) -> None:
    fn = aredis_batch(peer, redis_url, loop)
    ref = aredis_batch(AMULET, redis_url, loop) if peer != AMULET else None
    measure(benchmark, fn, REDIS_KEYS, group=AREDIS_GROUP, peer=peer, kind="ratelimit", ref=ref)
    benchmark.extra_info.update(checks_per_call=len(REDIS_KEYS), **redis_costs(fn, redis_url))


# ---- several processes ----------------------------------------------------------


def _four_workers(peer: str, target: str, n: int) -> list[float]:
    start = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), peer, target, str(start), str(n)],
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(stderr)
        out.append(float(stdout.split()[0]) / n)
    return out


MP_PEERS = {
    "SharedStore": ("shared", 200_000),
    "MemoryStore (per process, floor)": ("memory", 200_000),
    "RedisStore": ("redis", 3_000),
    "limits moving window (Redis)": ("limits-redis", 3_000),
}


@pytest.mark.parametrize("peer", list(MP_PEERS))
def test_four_processes(benchmark: Any, peer: str, redis_url: str, tmp_path: Path) -> None:
    kind, n = MP_PEERS[peer]
    target = redis_url if "redis" in kind else str(tmp_path)
    samples: list[list[float]] = []
    benchmark.group = MP_GROUP
    benchmark.pedantic(lambda: samples.append(_four_workers(kind, target, n)), rounds=3)
    per_check = [statistics.median(s) for s in samples]
    benchmark.extra_info.update(
        peer=peer,
        kind="ratelimit-mp",
        checks_per_process=n,
        per_check_s_median=statistics.median(per_check),
        per_check_s_rounds=per_check,
    )


# ---- health ---------------------------------------------------------------------


def health_call(peer: str, lp: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    if peer == "hand-written gather + json.dumps":

        async def trivial() -> bool:
            return True

        async def handwritten() -> bytes:
            results = await asyncio.gather(*(trivial() for _ in range(10)))
            body = {
                "status": "pass",
                "checks": {f"c{i}:x": [{"status": "pass"}] for i, _ in enumerate(results)},
            }
            return json.dumps(body).encode()

        return lambda _: lp.run_until_complete(handwritten())
    monitor = health.HealthMonitor()
    for i in range(10):
        monitor.add_check(f"dep{i}:ping", lambda: True, ttl=3600.0)
    lp.run_until_complete(monitor.report("ready"))  # fill the caches
    if peer == "amulet_native report().body()":
        return lambda _: lp.run_until_complete(monitor.report("ready", verbose=True)).body()
    app = monitor.asgi("ready")

    async def via_asgi() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(msg: dict[str, Any]) -> None:
            return None

        await app({"type": "http", "query_string": b"verbose"}, receive, send)

    return lambda _: lp.run_until_complete(via_asgi())


HEALTH_PEERS = [
    "amulet_native report().body()",
    "amulet_native ASGI endpoint",
    "hand-written gather + json.dumps",
]


@pytest.mark.parametrize("peer", HEALTH_PEERS)
def test_health_report(benchmark: Any, loop: asyncio.AbstractEventLoop, peer: str) -> None:
    fn = health_call(peer, loop)
    ref = health_call(HEALTH_PEERS[0], loop) if peer != HEALTH_PEERS[0] else None
    measure(benchmark, fn, None, group=HEALTH_GROUP, peer=peer, kind="health", ref=ref)
