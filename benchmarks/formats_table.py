"""Tables of benchmarks/test_bench_formats.py runs for benchmarks/results/formats.md.

    python benchmarks/formats_table.py RUN.json [RUN2.json ...]

Prints one markdown table per benchmark group: each peer's median time (the
median of its per-run medians) and its paired ratio, peer time / amulet_native
time (> 1: amulet_native is faster), taken round by round against the
amulet_native call measured just before it (the ``ref_times`` of conftest's
``measure``; runs must be saved with ``--benchmark-save-data``), then the
median over rounds and over runs.  OpenCV is paired with ``mode="BGR"``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def load(paths: list[str]) -> dict[str, dict[str, dict[str, list[float]]]]:
    groups: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: {"median": [], "ratio": []})
    )
    for path in paths:
        with open(path, encoding="utf-8") as f:
            run: dict[str, Any] = json.load(f)
        for b in run["benchmarks"]:
            info = b.get("extra_info", {})
            peer = info.get("peer", b["name"])
            entry = groups[b["group"]][peer]
            entry["median"].append(b["stats"]["median"])
            data, refs = b["stats"].get("data"), info.get("ref_times")
            if data and refs and len(data) == len(refs):
                entry["ratio"].append(
                    statistics.median(d / r for d, r in zip(data, refs, strict=True))
                )
    return groups


def main(paths: list[str]) -> None:
    for group, peers in load(paths).items():
        print(f"#### {group}\n")
        print("| peer | median | peer / amulet_native (paired) |")
        print("|---|---:|---:|")
        for peer, e in sorted(peers.items(), key=lambda kv: statistics.median(kv[1]["median"])):
            t = statistics.median(e["median"]) * 1000
            ratio = f"{statistics.median(e['ratio']):.2f}" if e["ratio"] else "reference"
            print(f"| {peer} | {t:.2f} ms | {ratio} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
