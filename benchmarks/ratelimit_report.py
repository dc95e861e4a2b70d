"""Write benchmarks/results/ratelimit.md from test_bench_ratelimit.py runs.

    python benchmarks/ratelimit_report.py OUT.md RUN.json [RUN.json ...]

Per group and peer: the median time per check (or per report) of every run,
then the median over runs; ratios are the medians of the per-round paired
ratios (peer round / amulet_native round of the same pair, see
conftest.measure), then the median over runs.  Redis round trips and commands
per check come from the benchmarks' extra_info.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

MEM = "ratelimit check in memory, 100/second (x1000 keys)"
REDIS = "ratelimit check on Redis, sync (x50)"
AREDIS = "ratelimit check on Redis, async (x50)"
MP = "ratelimit 4 processes"
HEALTH = "health report, 10 cached checks"


def load(paths: list[str]) -> tuple[dict[str, Any], dict[tuple[str, str], list[dict[str, Any]]]]:
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    machine: dict[str, Any] = {}
    for p in paths:
        doc = json.loads(Path(p).read_text())
        machine = doc.get("machine_info", {})
        for b in doc["benchmarks"]:
            info = b.get("extra_info", {})
            peer = info.get("peer", b["name"])
            row = {"median": b["stats"]["median"], "info": info, "ratio": None}
            ref, data = info.get("ref_times"), b["stats"].get("data")
            if ref and data and len(ref) == len(data):
                row["ratio"] = statistics.median(d / r for d, r in zip(data, ref, strict=True))
            rows[(b["group"], peer)].append(row)
    return machine, rows


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_ns(seconds: float) -> str:
    ns = seconds * 1e9
    return f"{ns:,.0f} ns" if ns < 10_000 else f"{ns / 1000:,.1f} µs"


def table(rows: dict[tuple[str, str], list[dict[str, Any]]], group: str, per: int) -> list[str]:
    out = [
        "| peer | median per check | peer / amulet_native (paired) | per run (time; ratio) |",
        "|---|---:|---:|---|",
    ]
    for (g, peer), rs in rows.items():
        if g != group:
            continue
        t = med([r["median"] for r in rs]) / per
        ratios = [r["ratio"] for r in rs if r["ratio"] is not None]
        ratio = f"{med(ratios):.2f}x" if ratios else "1 (reference)"
        extra = ""
        info = rs[-1]["info"]
        if "round_trips_per_check" in info:
            extra = (
                f" ({info['round_trips_per_check']:.2f} round trips, "
                f"{info['redis_commands_per_check']:.2f} Redis commands per check: "
                f"{info['redis_commands']})"
            )
        runs = "; ".join(
            fmt_ns(r["median"] / per) + (f" {r['ratio']:.2f}x" if r["ratio"] is not None else "")
            for r in rs
        )
        out.append(f"| {peer}{extra} | {fmt_ns(t)} | {ratio} | {runs} |")
    return out


def main() -> None:
    out_path, paths = sys.argv[1], sys.argv[2:]
    machine, rows = load(paths)
    bench = machine.get("amulet_bench", {})
    lines = [
        "# Rate limiting and health: benchmark results",
        "",
        (
            f"Runs: {len(paths)} ({', '.join(Path(p).name for p in paths)}).  Machine: "
            f"{bench.get('cpu', machine.get('cpu', {}).get('brand_raw', '?'))}, "
            f"{machine.get('python_implementation', '')} {machine.get('python_version', '')}."
        ),
        "",
        "The machine is shared with 7 other builds (2 cores, load average 9-35 during these",
        "runs): absolute times are inflated and noisy; the paired ratios (each peer round",
        "next to an amulet_native round) are the numbers to read.",
        "",
        f"## In memory: `check(key)`, 1000 keys, {MEM.split(', ')[1]}",
        "",
        *table(rows, MEM, 1000),
        "",
        "## Redis, sync (one redis-server on loopback)",
        "",
        *table(rows, REDIS, 50),
        "",
        "## Redis, async",
        "",
        *table(rows, AREDIS, 50),
        "",
        "## 4 processes, each doing N checks at once",
        "",
        "| peer | median per check per process | checks per process | runs |",
        "|---|---:|---:|---:|",
    ]
    for (g, peer), rs in rows.items():
        if g == MP:
            t = med([r["info"]["per_check_s_median"] for r in rs])
            lines.append(
                f"| {peer} | {fmt_ns(t)} | {rs[-1]['info']['checks_per_process']:,} | {len(rs)} |"
            )
    lines += ["", "## Health report, 10 cached checks", "", *table(rows, HEALTH, 1), ""]
    lines += targets(rows)
    Path(out_path).write_text("\n".join(lines) + "\n")


def _t(rows: dict[tuple[str, str], list[dict[str, Any]]], group: str, peer: str) -> float:
    return med([r["median"] for r in rows[(group, peer)]])


def _r(rows: dict[tuple[str, str], list[dict[str, Any]]], group: str, peer: str) -> float:
    return med([r["ratio"] for r in rows[(group, peer)] if r["ratio"] is not None])


def targets(rows: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    out = ["## Targets", ""]
    amulet = _t(rows, MEM, "amulet_native") / 1000
    floor = _t(rows, MEM, "loop only (floor)") / 1000
    net = amulet - floor
    verdict = "met" if net <= 150e-9 else "missed"
    best = min(
        r["median"] / 1000 - f["median"] / 1000
        for r, f in zip(
            rows[(MEM, "amulet_native")], rows[(MEM, "loop only (floor)")], strict=False
        )
    )
    out.append(
        f"- In-memory check <= 150 ns: {verdict} on this machine: {amulet * 1e9:.0f} ns per "
        f"loop iteration, of which {floor * 1e9:.0f} ns is the loop itself (the floor "
        f"peer), so {net * 1e9:.0f} ns per check on the median of runs and {best * 1e9:.0f} ns "
        "on the best run.  The floor peer (`for k in keys: len(k)`) costs 38-58 ns here, about "
        "2-3x what it costs on an idle machine, and amulet_native stays at 4.5-5.6x the floor "
        "in every run (paired): met on the best run, missed on the median of runs, so not "
        "demonstrated reliably on this loaded machine."
    )
    lim = {p: _r(rows, MEM, p) for (g, p) in rows if g == MEM and p.startswith("limits")}
    worst = min(lim.values())
    out.append(
        f"- >= 50x faster than limits: {'met' if worst >= 50 else 'missed'}: "
        + ", ".join(f"{p} {v:.0f}x" for p, v in sorted(lim.items()))
        + f"; the Lock + dict token bucket is {_r(rows, MEM, 'Lock + dict token bucket'):.1f}x."
    )
    mp = {
        p: med([r["info"]["per_check_s_median"] for r in rs])
        for (g, p), rs in rows.items()
        if g == MP
    }
    if "SharedStore" in mp and "MemoryStore (per process, floor)" in mp:
        out.append(
            f"- SharedStore across 4 processes costs "
            f"{mp['SharedStore'] / mp['MemoryStore (per process, floor)']:.2f}x a private "
            f"MemoryStore per process (one limit for all workers at the same cost); RedisStore "
            f"costs {mp.get('RedisStore', 0) / mp['SharedStore']:.0f}x SharedStore."
        )
    out.append(
        "- Redis: one round trip (one EVALSHA) per check for every peer measured; server-side "
        "commands per check and latency ratios are in the tables above."
    )
    out += [
        "",
        "## Notes",
        "",
        (
            "- Method: pytest-benchmark, `benchmarks/test_bench_ratelimit.py`; each peer round is "
            "paired with an amulet_native round (conftest.measure), ratios are medians of the "
            "per-round ratios, then medians over runs.  Raw runs: `benchmarks/runs/ratelimit-*.json` "
            "(run1 predates two optimisations, RedisStore argument caching and inline cached health "
            "results, and is not in these tables; run4 and run5 repeat the in-memory and health groups "
            "alone).  Regenerate with `python benchmarks/ratelimit_report.py "
            "benchmarks/results/ratelimit.md RUN.json...`."
        ),
        (
            "- In memory: the workload mixes admitted and refused requests (100/second over 1000 "
            "keys); limits keeps one entry per key and window in Python dicts/lists, the token "
            "bucket one tuple per key under a Lock (unbounded), amulet_native one TAT per key in "
            "a bounded native store (a decision is one native call returning a Decision)."
        ),
        (
            "- Redis: every peer makes one round trip per check.  amulet_native's script runs "
            "TIME + GET + SET (with PX) per policy, limits' fixed window only INCRBY (no server "
            "time, and its fixed window admits 2x the limit around a boundary); its sliding window "
            "counter runs 7-8 commands.  Latency is at parity with limits within the noise "
            "(0.86-0.98x, i.e. limits' fixed window is ~14% faster) and ~18% faster than "
            "fastapi-limiter 0.2 (pyrate-limiter's RedisBucket, async)."
        ),
        (
            "- 4 processes: each worker reports its own loop time; with 4 workers on 2 loaded "
            "cores the per-process times include waiting for a CPU.  SharedStore costs the same "
            "as a private MemoryStore (ratio 0.91x; one limit for all workers comes free); the "
            "Redis rows vary 1-10 ms between rounds (one shared redis-server on the same two "
            "cores), so RedisStore vs limits' Redis moving window is not conclusive there; the "
            "single-process Redis tables above are paired and are the ones to read."
        ),
        (
            "- Health: `report('ready', verbose=True).body()` with 10 checks served from their "
            "TTL cache (no task per cached check) costs less than a hand-written "
            "`asyncio.gather` of 10 trivial coroutines + `json.dumps` (1.6x slower); the ASGI "
            "endpoint adds ~15%."
        ),
        "",
    ]
    return out


if __name__ == "__main__":
    main()
