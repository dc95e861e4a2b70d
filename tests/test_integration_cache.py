"""Caches working with the rest of amulet_native: zero-copy inputs (open_mapped,
read_limited), the GarbageCollectionManager, memory budgets and @cached over a
TieredCache with a real redis-server (tests/redis_server.py)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import tracemalloc
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from conftest import jpeg_bytes, photo
from redis_server import RedisServer, redis_server_binary

import amulet_native as an

CGROUP_V2 = str(Path(__file__).parent / "fixtures" / "cgroup" / "v2")


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    data = jpeg_bytes(photo(768, 1024, seed=11), quality=95)
    assert len(data) > 200_000  # large enough that a copy stands out
    return data


def _peak_during(fn: Any) -> tuple[Any, int]:
    """fn()'s result and the tracemalloc peak above the memory in use before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, peak


# ---- zero-copy inputs ---------------------------------------------------------------


def test_decode_of_a_mapped_file_does_not_copy_it(big_jpeg: bytes, tmp_path: Path) -> None:
    path = tmp_path / "upload.jpg"
    path.write_bytes(big_jpeg)
    ic = an.ImageCache()
    with an.open_mapped(path) as m:
        # tracemalloc does see an input-sized copy (the control):
        copy, peak = _peak_during(lambda: bytes(memoryview(m)))
        assert peak >= len(big_jpeg)
        del copy
        arr, peak = _peak_during(lambda: ic.decode(m))
        # the output array (traced by NumPy) plus small change, never the input
        assert peak < arr.nbytes + len(big_jpeg) // 4, (peak, arr.nbytes, len(big_jpeg))
        hit, peak = _peak_during(lambda: ic.decode(m))
        assert peak < len(big_jpeg) // 4  # a hit: hash in place, hand out a view
    assert np.shares_memory(arr, hit) and not arr.flags.writeable
    assert np.array_equal(arr, an.decode(big_jpeg))
    assert ic.get_stats()["hits"] == 1 and len(ic) == 1
    # the same bytes as plain bytes share the entry (the key is the content)
    assert np.shares_memory(ic.decode(big_jpeg), arr)


def test_decode_of_a_read_limited_upload_does_not_copy_it(big_jpeg: bytes) -> None:
    body = an.read_limited(io.BytesIO(big_jpeg), 8 << 20)
    assert body.size == len(big_jpeg)
    ic = an.ImageCache()
    arr, peak = _peak_during(lambda: ic.decode(body.data))
    assert peak < arr.nbytes + len(big_jpeg) // 4, (peak, arr.nbytes, len(big_jpeg))
    assert np.array_equal(arr, an.decode(big_jpeg))
    # read_limited's digest is BLAKE2b of the same bytes the cache hashes
    key = ic.cache_image(body.data)
    assert body.algorithm == "blake2b"
    assert len(key) == 64 and key == __import__("hashlib").blake2b(
        big_jpeg, digest_size=32).hexdigest()
    hit, peak = _peak_during(lambda: ic.decode(body.data))
    assert peak < len(big_jpeg) // 4 and np.shares_memory(hit, arr)


# ---- GarbageCollectionManager -------------------------------------------------------


def _fill(ic: an.ImageCache, n: int) -> int:
    for seed in range(n):
        ic.decode(jpeg_bytes(photo(64, 96, seed=seed)))
    return int(ic.get_stats()["bytes"])


def test_gc_manager_shrinks_a_real_image_cache_under_pressure() -> None:
    ic = an.ImageCache()
    full = _fill(ic, 8)
    assert full == 8 * 64 * 96 * 3
    # the v2 fixture tree reads as WARNING with these thresholds (tests/test_monitor.py)
    warning = an.MemoryMonitor(warning=0.2, critical=0.3, root=CGROUP_V2)
    calm = an.GarbageCollectionManager(warning, collect_on="critical")
    calm.register(ic)
    action = calm.check()
    assert action.level == an.PressureLevel.WARNING and action.caches_shrunk == 0
    assert ic.get_stats()["bytes"] == full  # below collect_on: untouched

    gcm = an.GarbageCollectionManager(warning, collect_on="warning", warning_fraction=0.25)
    gcm.register(ic)
    action = gcm.check()
    assert action.level == an.PressureLevel.WARNING and action.caches_shrunk == 1
    left = ic.get_stats()["bytes"]
    assert left <= 0.75 * full and action.bytes_freed == full - left > 0
    assert ic.get_stats()["evictions"] == 0  # trimmed, not counted as LRU/size evictions

    critical = an.MemoryMonitor(warning=0.1, critical=0.2, root=CGROUP_V2)
    gcm2 = an.GarbageCollectionManager(critical, collect_on="warning", critical_fraction=1.0)
    gcm2.register(ic)
    action = gcm2.check()
    assert action.level == an.PressureLevel.CRITICAL and action.fraction == 1.0
    assert len(ic) == 0 and ic.get_stats()["bytes"] == 0 and action.bytes_freed == left
    # still usable, and held weakly by the managers
    assert _fill(ic, 2) == 2 * 64 * 96 * 3
    ref = weakref.ref(ic)
    del ic
    assert ref() is None and gcm.stats.caches == 0 and gcm2.check().caches_shrunk == 0


def test_gc_manager_thread_shrinks_while_decodes_run(fast_switch: None) -> None:
    ic = an.ImageCache()
    jpegs = [jpeg_bytes(photo(48, 64, seed=s)) for s in range(6)]
    gcm = an.GarbageCollectionManager(
        an.MemoryMonitor(warning=0.1, critical=0.2, root=CGROUP_V2), critical_fraction=1.0
    )
    gcm.register(ic)
    stop = threading.Event()
    errors: list[BaseException] = []

    def decoder() -> None:
        try:
            while not stop.is_set():
                for j in jpegs:
                    assert ic.decode(j).shape == (48, 64, 3)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=decoder) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            gcm.check()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and gcm.stats.errors == 0 and gcm.stats.collections == 30
    s = ic.get_stats()
    assert s["items"] <= len(jpegs) and s["bytes"] == s["items"] * 48 * 64 * 3


# ---- memory budgets -----------------------------------------------------------------


def test_over_budget_decode_leaves_the_cache_unchanged_and_usable(big_jpeg: bytes) -> None:
    ic = an.ImageCache()
    small = jpeg_bytes(photo(32, 32, seed=5))
    kept = ic.decode(small)
    before = ic.get_stats()
    with pytest.raises(an.MemoryLimitError) as info, an.memory_limit(256 << 10):
        ic.decode(big_jpeg)  # 768x1024x3 = 2.25 MiB of pixels > 256 KiB
    assert info.value.code == "memory.limit"
    after = ic.get_stats()
    assert (after["items"], after["bytes"], after["hits"]) == (
        before["items"], before["bytes"], before["hits"])
    assert after["misses"] == before["misses"] + 1
    assert list(ic.cache) == list(ic.cache)  # no half-made entry
    with an.memory_limit(256 << 10):
        assert np.shares_memory(ic.decode(small), kept)  # a hit allocates no pixels
        assert ic.decode(jpeg_bytes(photo(16, 16, seed=6))).shape == (16, 16, 3)
    # the refused image decodes and caches normally outside the budget, and
    # then is a zero-allocation hit even inside it
    arr = ic.decode(big_jpeg)
    assert arr.shape == (768, 1024, 3) and len(ic) == 3
    with an.memory_limit(256 << 10):
        assert np.shares_memory(ic.decode(big_jpeg), arr)


def test_over_budget_decode_fails_every_waiter_then_recovers(big_jpeg: bytes,
                                                            fast_switch: None) -> None:
    """Single-flight under a budget: every thread of the burst gets its own
    MemoryLimitError (no waiter hangs, nothing is cached), later decodes work."""
    ic = an.ImageCache()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def worker() -> None:
        barrier.wait()
        try:
            with an.memory_limit(256 << 10):
                ic.decode(big_jpeg)
            outcomes.append("ok")
        except an.MemoryLimitError:
            outcomes.append("limit")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert outcomes == ["limit"] * 8 and len(ic) == 0
    assert ic.decode(big_jpeg).shape == (768, 1024, 3) and len(ic) == 1


# ---- @cached over a TieredCache ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = server.client()
    client.flushdb()
    yield client
    client.close()


def _l1() -> an.Cache[Any, Any]:
    return an.Cache(max_items=64)


def _burst(fn: Any, n: int, *args: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads) and errors == []
    return results


def test_cached_tiered_single_flight_32_threads(server: RedisServer, raw: redis.Redis,
                                               fast_switch: None) -> None:
    prefix = f"it{uuid.uuid4().hex[:8]}:"
    calls: list[int] = []
    lock = threading.Lock()

    def _embed(image_id: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        with lock:
            calls.append(image_id)
        time.sleep(0.05)  # the burst piles up behind the computation
        return np.full(8, image_id, np.float32)

    tc = an.TieredCache(_l1(), server.url, prefix=prefix, ttl=60, timeout=5.0)
    embed = an.cached(cache=tc)(_embed)
    results = _burst(embed, 32, 7)
    assert calls == [7]  # exactly once for 32 cold callers
    assert all(np.array_equal(r, np.full(8, 7, np.float32)) for r in results)
    assert raw.dbsize() == 1 and 0 < raw.pttl(tc.redis_key(7)) <= 60_000
    assert tc.stats()["l2_errors"] == 0

    # another worker (its own L1 and wrapper) sharing the Redis tier: its cold
    # burst is served from Redis, the function does not run again
    tc2 = an.TieredCache(_l1(), server.url, prefix=prefix, ttl=60, timeout=5.0)
    embed2 = an.cached(cache=tc2)(_embed)
    results = _burst(embed2, 32, 7)
    assert calls == [7] and all(np.array_equal(r, np.full(8, 7, np.float32)) for r in results)
    s = tc2.stats()
    assert s["l2_hits"] >= 1 and s["l2_errors"] == 0
    tc.close()
    tc2.close()


def test_cached_async_tiered_single_flight_32_tasks(server: RedisServer,
                                                   raw: redis.Redis) -> None:
    prefix = f"ia{uuid.uuid4().hex[:8]}:"
    calls: list[str] = []

    async def _thumb(name: str) -> bytes:
        calls.append(name)
        await asyncio.sleep(0.05)
        return name.encode() * 3

    async def main() -> None:
        tc = an.AsyncTieredCache(_l1(), server.url, prefix=prefix,
                                 timeout=5.0)
        thumb = an.cached(cache=tc)(_thumb)
        got = await asyncio.gather(*(thumb("cat") for _ in range(32)))
        assert got == [b"catcatcat"] * 32 and calls == ["cat"]
        assert await raw_get(tc) is not None
        await tc.aclose()

    async def raw_get(tc: an.AsyncTieredCache) -> Any:
        return await asyncio.to_thread(raw.get, tc.redis_key("cat"))

    asyncio.run(main())
