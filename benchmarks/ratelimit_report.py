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
        "| peer | median per check | peer / amulet_native (paired) | runs |",
        "|---|---:|---:|---:|",
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
        out.append(f"| {peer}{extra} | {fmt_ns(t)} | {ratio} | {len(rs)} |")
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
    Path(out_path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
