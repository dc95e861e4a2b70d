"""Per-call overhead of retry / breaker / bulkhead wrappers, in nanoseconds.

    python benchmarks/resilience_overhead.py [--rounds 31] [--calls 20000] [--json out.json]

Each round times CALLS calls of every peer back to back, in a rotated order,
so a burst of load from a neighbour on this shared machine hits every peer of
the round alike; the per-round overhead of a peer is its time per call minus
the bare call's of the same round, and the table reports the median over the
rounds, with ratios of medians.  Peers are built in _resilience_peers.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _resilience_peers as peers

CLOCK = time.perf_counter_ns


def time_calls(fn: Callable[[Any], Any], calls: int) -> float:
    r = range(calls)
    t = CLOCK()
    for i in r:
        fn(i)
    return (CLOCK() - t) / calls


def time_async(factory: Callable[[], Any]) -> float:
    t = CLOCK()
    asyncio.run(factory())
    return float(CLOCK() - t)


def run_group(
    group: dict[str, Callable[[Any], Any] | None], rounds: int, calls: int
) -> dict[str, Any]:
    live = {k: v for k, v in group.items() if v is not None}
    names = list(live)
    per: dict[str, list[float]] = {k: [] for k in names}
    for f in live.values():  # warm-up
        time_calls(f, 1000)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            per[name].append(time_calls(live[name], calls))
    base = per[names[0]]
    out: dict[str, Any] = {}
    for name in names:
        over = [p - b for p, b in zip(per[name], base)]
        out[name] = {
            "per_call_ns": statistics.median(per[name]),
            "overhead_ns": statistics.median(over),
        }
    for name in group:
        if name not in live:
            out[name] = None
    return out


def table(title: str, res: dict[str, Any], ref: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| peer | ns/call (median) | overhead ns (median) | overhead vs amulet_native |",
        "|---|---:|---:|---:|",
    ]
    ref_over = res[ref]["overhead_ns"]
    for name, r in res.items():
        if r is None:
            lines.append(f"| {name} | not installed | | |")
            continue
        ratio = (
            ""
            if name in ("bare call", ref) or ref_over <= 0
            else f"{r['overhead_ns'] / ref_over:.1f}x"
        )
        lines.append(f"| {name} | {r['per_call_ns']:.0f} | {r['overhead_ns']:.0f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu = this thread's CPU time (time.thread_time_ns): leaves out the time the"
        " thread is descheduled, which dominates wall time on a loaded shared machine",
    )
    ap.add_argument("--groups", default="retry,closed,open,bulkhead,async")
    a = ap.parse_args()
    global CLOCK
    if a.clock == "cpu":
        CLOCK = time.thread_time_ns
    groups = set(a.groups.split(","))
    results: dict[str, Any] = {}
    ours_b = "amulet_native CircuitBreaker"
    plan: list[tuple[str, str, str, Callable[[], dict[str, Any]]]] = [
        ("retry", "@retry success path", "amulet_native retry", peers.retry_peers),
        ("closed", "closed breaker", ours_b, lambda: peers.breaker_peers(open_=False)),
        (
            "open",
            "open breaker: refusal (exception caught)",
            ours_b,
            lambda: peers.breaker_peers(open_=True),
        ),
        (
            "bulkhead",
            "bulkhead acquire+release (sync)",
            "amulet_native Bulkhead",
            peers.bulkhead_peers,
        ),
    ]
    for key, title, ref, build in plan:
        if key in groups:
            calls = a.calls // 4 if key == "open" else a.calls
            results[title] = run_group(build(), a.rounds, calls)
            print(table(title, results[title], ref), flush=True)
    if "async" in groups:
        n = a.calls
        af = peers.async_bulkhead_peers(n)
        per: dict[str, list[float]] = {k: [] for k in af}
        for r in range(max(5, a.rounds // 3)):
            for name in list(af)[r % 3 :] + list(af)[: r % 3]:
                per[name].append(time_async(af[name]) / n)
        base = per["bare loop"]
        title = "bulkhead acquire+release (async)"
        results[title] = {
            k: {
                "per_call_ns": statistics.median(v),
                "overhead_ns": statistics.median([x - b for x, b in zip(v, base)]),
            }
            for k, v in per.items()
        }
        print(table(title, results[title], "amulet_native Bulkhead"), flush=True)
    if a.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _versions import collect

        a.json.write_text(
            json.dumps(
                {
                    "machine": collect(),
                    "clock": a.clock,
                    "rounds": a.rounds,
                    "calls": a.calls,
                    "results": results,
                },
                indent=1,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
