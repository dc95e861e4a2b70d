"""One worker process of the multi-process rate limit benchmarks.

    python _ratelimit_worker.py PEER TARGET START N

waits until the wall clock reaches START (so the 4 workers run together), does
N checks over 1000 keys with a 10^9/day policy (always admitted: the cost of a
decision, not of a refusal), and prints ``<seconds> <admitted>`` for its loop.
PEER is ``shared`` (SharedStore in the arena directory TARGET), ``memory``
(MemoryStore, each process alone: the floor), ``redis`` (RedisStore at URL
TARGET) or ``limits-redis`` (limits' moving window on RedisStorage).
"""

from __future__ import annotations

import sys
import time
from typing import Any


def make(peer: str, target: str) -> Any:
    if peer in ("shared", "memory", "redis"):
        from amulet_native.ratelimit import MemoryStore, RateLimiter, RedisStore, SharedStore

        store: Any = {
            "shared": lambda: SharedStore(target, max_keys=4096),
            "memory": lambda: MemoryStore(4096),
            "redis": lambda: RedisStore(target, timeout=5.0),
        }[peer]()
        return RateLimiter("1000000000/day", store=store).check
    if peer == "limits-redis":
        from limits import parse
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        lim = MovingWindowRateLimiter(RedisStorage(target))
        item = parse("1000000000/day")
        return lambda key: lim.hit(item, key)
    raise SystemExit(f"unknown peer {peer}")


def main() -> None:
    peer, target, start, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    check = make(peer, target)
    keys = [f"client-{i}" for i in range(1000)]
    check("warm")
    while time.time() < start:
        time.sleep(0.0005)
    admitted = 0
    t0 = time.perf_counter()
    for i in range(n):
        admitted += bool(check(keys[i % 1000]))
    elapsed = time.perf_counter() - t0
    print(elapsed, admitted)


if __name__ == "__main__":
    main()
