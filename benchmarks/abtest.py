"""Interleaved A/B timing: a noise-robust cross-check of the pytest-benchmark ratios.

pytest-benchmark times one decoder after another, so a burst of load from a
neighbour on this shared 2-core machine lands on whichever peer is running.
Here every round calls each decoder once, in a shuffled order, on the same
input; the ratio peer/amulet_native is taken within each round and the median
of those paired ratios is reported, with its interquartile range.

    .venv/bin/python benchmarks/abtest.py [--rounds N] [GROUP-SUBSTRING ...]

Example: ``benchmarks/abtest.py --rounds 200 mosaic`` (all mosaic groups).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inputs import build_inputs
from _peers import (
    JPEG_PEERS,
    MAX_SIZE_PEERS,
    PNG_PEERS,
    Unavailable,
    jpeg_decoder,
    max_size_decoder,
    png_decoder,
)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def run_group(name: str, data: bytes, fns: dict[str, Callable[[bytes], Any]], rounds: int) -> None:
    times: dict[str, list[float]] = {p: [] for p in fns}
    order = list(fns)
    for fn in fns.values():  # warm up
        for _ in range(3):
            fn(data)
    for _ in range(rounds):
        random.shuffle(order)
        for peer in order:
            t0 = time.perf_counter()
            fns[peer](data)
            times[peer].append(time.perf_counter() - t0)
    ref = times["amulet_native"]
    print(f"\n## {name}  ({rounds} interleaved rounds)")
    print(
        f"{'decoder':22s} {'median ms':>10s} {'paired ratio peer/amulet (q1 / median / q3)':>46s}"
    )
    for peer in sorted(fns, key=lambda p: statistics.median(times[p])):
        med = statistics.median(times[peer]) * 1e3
        ratios = [t / r for t, r in zip(times[peer], ref, strict=True)]
        q1, q2, q3 = quartiles(ratios)
        print(f"{peer:22s} {med:10.3f} {q1:14.3f} / {q2:.3f} / {q3:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("groups", nargs="*", help="substrings of group names to run")
    args = ap.parse_args()
    inputs = build_inputs()
    plan: list[tuple[str, bytes, Callable[[str], Any], tuple[str, ...]]] = []
    for g, item in inputs.jpeg.items():
        plan.append((g, item.data, jpeg_decoder, JPEG_PEERS))
    for g, item in inputs.png.items():
        plan.append((g, item.data, png_decoder, PNG_PEERS))
    plan.append(
        ("max_size jpeg mosaic -> 384x256", inputs.mosaic_jpeg, max_size_decoder, MAX_SIZE_PEERS)
    )
    for name, data, factory, peers in plan:
        if args.groups and not any(s in name for s in args.groups):
            continue
        fns: dict[str, Callable[[bytes], Any]] = {}
        for p in peers:
            try:
                fns[p] = factory(p)
            except Unavailable as exc:
                print(f"skip {p}: {exc}")
        run_group(name, data, fns, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
