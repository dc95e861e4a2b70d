"""How decode_many scales with threads, against this machine's own ceiling.

Interleaved rounds (shuffled order each round) over the benchmark batch of
64 JPEGs (768x512):

* serial decode    - amulet_native.decode in a Python loop
* threads=1 / N    - decode_many on the native pool
* sha256 1 / N     - the machine's ceiling for two-way parallel work: SHA-256
                     of 64 x 1 MiB (GIL released, no allocation, no memory
                     traffic to speak of), one thread vs a ThreadPoolExecutor

For each variant the median wall time and the CPU time (user + sys of the
whole process, per call) are printed; if N threads cost more CPU seconds
than one, the work itself got slower when run in parallel (shared caches,
memory bandwidth, page faults, frequency), not the scheduling.

Last, the same serial decode loop runs in 1 process, then in N processes at
once (forked, nothing shared), alternating: the per-call slow-down is what the
machine charges for keeping all its CPUs busy, with no thread pool, lock or
shared address space involved, so N / slow-down is the ceiling of any
N-thread speed-up on this machine.

    .venv/bin/python benchmarks/scaling.py [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inputs import build_inputs

import amulet_native as an


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _decode_loop(args: tuple[list[bytes], int]) -> float:
    """Median seconds of a serial decode of the batch, over `loops` calls."""
    batch, loops = args
    times = []
    for _ in range(loops):
        t0 = time.perf_counter()
        for b in batch:
            an.decode(b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def process_slowdown(batch: list[bytes], n: int, rounds: int = 10) -> tuple[float, float, float]:
    """Per-call seconds of the serial decode alone and with n processes at once
    (medians), and the median of the per-round ratios: alternating rounds, so
    a drift of the machine's speed hits both sides."""
    ctx = mp.get_context("fork")
    alone: list[float] = []
    together: list[float] = []
    with ctx.Pool(1) as one, ctx.Pool(n) as many:
        for _ in range(rounds):
            alone.append(one.map(_decode_loop, [(batch, 3)])[0])
            together.append(statistics.median(many.map(_decode_loop, [(batch, 3)] * n)))
    ratio = statistics.median(t / a for t, a in zip(together, alone, strict=True))
    return statistics.median(alone), statistics.median(together), ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    n = an.available_cpus()
    batch = build_inputs().batch_jpeg
    blocks = [os.urandom(1 << 20) for _ in range(64)]
    pool = ThreadPoolExecutor(max_workers=n)

    def sha(b: bytes) -> bytes:
        return hashlib.sha256(b).digest()

    fns: dict[str, Callable[[], object]] = {
        "serial decode": lambda: [an.decode(b) for b in batch],
        "decode_many threads=1": lambda: an.decode_many(batch, threads=1),
        f"decode_many threads={n}": lambda: an.decode_many(batch, threads=n),
        "sha256 1 thread": lambda: [sha(b) for b in blocks],
        f"sha256 {n} threads": lambda: list(pool.map(sha, blocks)),
    }
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    order = list(fns)
    for _ in range(args.rounds):
        random.shuffle(order)
        for k in order:
            c0, t0 = cpu_seconds(), time.perf_counter()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(cpu_seconds() - c0)
    print(f"{args.rounds} interleaved rounds, available_cpus() = {n}")
    print(f"{'variant':28s} {'wall (median)':>14s} {'CPU s / call':>13s}")
    for k in fns:
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        print(f"{k:28s} {w * 1e3:11.2f} ms {c * 1e3:10.2f} ms")

    def speedup(one: str, many: str) -> float:
        return statistics.median(a / b for a, b in zip(wall[one], wall[many], strict=True))

    print(
        f"speed-up decode_many threads={n} vs threads=1 (paired median): "
        f"{speedup('decode_many threads=1', f'decode_many threads={n}'):.2f}x"
    )
    print(
        f"speed-up sha256 {n} threads vs 1 (paired median): "
        f"{speedup('sha256 1 thread', f'sha256 {n} threads'):.2f}x"
    )
    pool.shutdown()
    alone, together, slowdown = process_slowdown(batch, n)
    print(
        f"serial decode in 1 process: {alone * 1e3:.2f} ms; in {n} processes at once: "
        f"{together * 1e3:.2f} ms each (paired slow-down {slowdown:.2f}x, so the ceiling "
        f"of a {n}-way speed-up here is {n / slowdown:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
