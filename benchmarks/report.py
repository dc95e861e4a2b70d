"""Turn pytest-benchmark JSON into benchmarks/RESULTS.md.

Usage::

    python benchmarks/report.py RUN.json [RUN2.json ...] RESULTS.md

With several runs (the machine is noisy), each benchmark's time is the median
of its per-run medians; the spread column shows the lowest and highest
per-run median.  Ratios are peer time / amulet_native time, so > 1 means
amulet_native is faster.  OpenCV (BGR output) is compared with amulet_native
mode="BGR"; every other peer with amulet_native mode="RGB".  The compact
README table is printed to stdout.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AMULET = "amulet_native"
AMULET_BGR = "amulet_native BGR"
BGR_PEERS = {"OpenCV (BGR)"}
TIE = 0.03  # |ratio - 1| below this is within run-to-run noise (see RESULTS.md)

GROUP_ORDER = (
    "jpeg kodim01 768x512",
    "jpeg kodim05 768x512",
    "jpeg kodim23 768x512",
    "jpeg kodak24 (24 x 768x512)",
    "jpeg 640x480",
    "jpeg mosaic 3072x2048",
    "png 640x480",
    "png mosaic 3072x2048",
    "max_size jpeg mosaic -> 384x256",
    "probe jpeg 640x480",
)
COMPACT_PEERS = (
    ("raw C", ("raw C libjpeg", "raw C libpng")),
    ("Pillow", ("Pillow",)),
    ("OpenCV", ("OpenCV (BGR)",)),
    ("simplejpeg", ("simplejpeg",)),
    ("PyTurboJPEG", ("PyTurboJPEG",)),
    ("pyspng", ("pyspng",)),
)


@dataclass
class Bench:
    group: str
    peer: str
    kind: str
    medians: list[float] = field(default_factory=list)  # seconds, one per run
    rounds: list[int] = field(default_factory=list)
    paired: list[float] = field(default_factory=list)  # per run: median of round ratios

    @property
    def median(self) -> float:
        return statistics.median(self.medians)


def load(paths: list[Path]) -> tuple[dict[str, dict[str, Bench]], dict[str, Any], list[str]]:
    groups: dict[str, dict[str, Bench]] = {}
    machine: dict[str, Any] = {}
    stamps: list[str] = []
    for path in paths:
        doc = json.loads(path.read_text())
        machine = doc.get("machine_info", {}).get("amulet_bench", machine)
        commit = doc.get("commit_info", {})
        rev = str(commit.get("id", "?"))[:7] + ("+dirty" if commit.get("dirty") else "")
        stamps.append(f"{str(doc.get('datetime', '?'))[:19]} @ {rev}")
        for b in doc["benchmarks"]:
            info = b.get("extra_info", {})
            peer = info.get("peer", b["name"])
            g = groups.setdefault(b["group"], {})
            bench = g.setdefault(peer, Bench(b["group"], peer, info.get("kind", "")))
            bench.medians.append(b["stats"]["median"])
            bench.rounds.append(b["stats"]["rounds"])
            ref_times = info.get("ref_times")
            data = b["stats"].get("data")
            if ref_times and data and len(ref_times) == len(data):
                bench.paired.append(
                    statistics.median(d / r for d, r in zip(data, ref_times, strict=True))
                )
    return groups, machine, stamps


def reference(group: dict[str, Bench], peer: str) -> Bench | None:
    if peer in BGR_PEERS and AMULET_BGR in group:
        return group[AMULET_BGR]
    return group.get(AMULET)


def ratio(group: dict[str, Bench], peer: str) -> float | None:
    """peer / its amulet_native reference: the paired (interleaved) ratio when
    recorded, else the ratio of the medians."""
    bench = group.get(peer)
    if bench is not None and bench.paired:
        return statistics.median(bench.paired)
    return ratio_of_medians(group, peer)


def ratio_of_medians(group: dict[str, Bench], peer: str) -> float | None:
    ref = reference(group, peer)
    if ref is None or peer not in group:
        return None
    if peer == AMULET_BGR:
        return group[peer].median / group[AMULET].median if AMULET in group else None
    return group[peer].median / ref.median


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    return f"{seconds * 1e3:.3f} ms"


def ordered_groups(groups: dict[str, dict[str, Bench]]) -> list[str]:
    known = [g for g in GROUP_ORDER if g in groups]
    return known + sorted(g for g in groups if g not in GROUP_ORDER)


def group_table(name: str, group: dict[str, Bench], runs: int) -> list[str]:
    lines = [f"### {name}", ""]
    head = "| decoder | median | ops/s | peer / amulet_native (paired) | ratio of medians |"
    rule = "|---|---:|---:|---:|---:|"
    if runs > 1:
        head += " per-run medians (min – max) |"
        rule += "---:|"
    lines += [head, rule]
    for bench in sorted(group.values(), key=lambda b: b.median):
        r = ratio(group, bench.peer)
        if bench.peer == AMULET:
            rtxt = "1.00 (reference)"
        elif r is None:
            rtxt = "–"
        elif bench.peer == AMULET_BGR:
            rtxt = f"{r:.2f} (vs RGB; reference for BGR peers)"
        else:
            rtxt = f"{r:.2f}" + (" (vs amulet BGR)" if bench.peer in BGR_PEERS else "")
            if not bench.paired:
                rtxt += " (not paired: ratio of medians)"
        name_txt = f"**{bench.peer}**" if bench.peer.startswith(AMULET) else bench.peer
        rm = ratio_of_medians(group, bench.peer)
        rmtxt = f"{rm:.2f}" if rm is not None and bench.peer != AMULET else "–"
        row = (
            f"| {name_txt} | {fmt_time(bench.median)} | {1 / bench.median:,.0f} | {rtxt} "
            f"| {rmtxt} |"
        )
        if runs > 1:
            row += f" {fmt_time(min(bench.medians))} – {fmt_time(max(bench.medians))} |"
        lines.append(row)
    return lines + [""]


def compact_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    cols = [
        label
        for label, names in COMPACT_PEERS
        if any(n in g for g in groups.values() for n in names)
    ]
    lines = [
        "| input | amulet_native | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for gname in ordered_groups(groups):
        g = groups[gname]
        if AMULET not in g or gname.startswith("probe"):
            continue
        cells = []
        for label, names in COMPACT_PEERS:
            if label not in cols:
                continue
            peer = next((n for n in names if n in g), None)
            r = ratio(g, peer) if peer else None
            cells.append(f"{r:.2f}×" if r is not None else "–")
        lines.append(f"| {gname} | {g[AMULET].median * 1e3:.2f} ms | " + " | ".join(cells) + " |")
    return lines


@dataclass
class Target:
    text: str
    checks: list[tuple[str, float | None, float]]  # (what, measured ratio, threshold)
    higher_is_better: bool = True

    def status(self) -> str:
        values = [(w, v, t) for w, v, t in self.checks if v is not None]
        if not values:
            return "not measured"
        if self.higher_is_better:
            ok = all(v >= t for _, v, t in values)
            close = all(v >= t - TIE for _, v, t in values)
        else:
            ok = all(v <= t for _, v, t in values)
            close = all(v <= t + TIE for _, v, t in values)
        if ok:
            return "**met**"
        return "missed (within noise)" if close else "**missed**"

    def detail(self) -> str:
        parts = []
        for what, v, t in self.checks:
            if v is None:
                parts.append(f"{what}: –")
            else:
                parts.append(f"{what} {v:.2f}")
        return "; ".join(parts)


def targets(groups: dict[str, dict[str, Bench]]) -> list[Target]:
    jpeg = [g for g in ordered_groups(groups) if g.startswith("jpeg")]
    png = [g for g in ordered_groups(groups) if g.startswith("png")]
    at768 = [g for g in jpeg if "768x512" in g]
    mosaic = groups.get("jpeg mosaic 3072x2048", {})

    def amulet_over_raw(g: str, raw: str) -> tuple[str, float | None, float]:
        r = ratio(groups[g], raw) if raw in groups[g] else None
        return (g, 1 / r if r else None, 1.05)

    def worst_peer(g: str, peers: tuple[str, ...]) -> tuple[str, float | None, float]:
        grp = groups[g]
        rs = [(ratio(grp, p), p) for p in peers if p in grp]
        rs = [(r, p) for r, p in rs if r is not None]
        if not rs:
            return (g, None, 1.0)
        r, p = min(rs)
        return (f"{g} (slowest margin: {p})", r, 1.0)

    jpeg_peers = ("Pillow", "OpenCV (BGR)", "simplejpeg", "PyTurboJPEG")
    png_peers = ("Pillow", "OpenCV (BGR)", "pyspng")
    probe = groups.get("probe jpeg 640x480", {})
    probe_rate = 1 / probe[AMULET].median if AMULET in probe else None
    return [
        Target(
            "JPEG decode within 1.05× of the raw C libjpeg baseline (amulet / raw C ≤ 1.05)",
            [amulet_over_raw(g, "raw C libjpeg") for g in jpeg],
            higher_is_better=False,
        ),
        Target(
            "≥ 2× faster than Pillow on the 3072×2048 mosaic",
            [("Pillow / amulet", ratio(mosaic, "Pillow"), 2.0)],
        ),
        Target(
            "≥ 1.4× faster than OpenCV on the 3072×2048 mosaic (like for like: BGR)",
            [("OpenCV / amulet BGR", ratio(mosaic, "OpenCV (BGR)"), 1.4)],
        ),
        Target(
            "JPEG not slower than simplejpeg (every JPEG input)",
            [(g, ratio(groups[g], "simplejpeg"), 1.0) for g in jpeg],
        ),
        Target("Not slower than any peer at 768×512", [worst_peer(g, jpeg_peers) for g in at768]),
        Target(
            "PNG decode within 1.05× of raw libpng (amulet / raw C ≤ 1.05)",
            [amulet_over_raw(g, "raw C libpng") for g in png],
            higher_is_better=False,
        ),
        Target("PNG not slower than any peer", [worst_peer(g, png_peers) for g in png]),
        Target("probe() ≥ 100,000 calls/s on a small JPEG", [("probes/s", probe_rate, 100_000.0)]),
    ]


def render(paths: list[Path]) -> tuple[str, str]:
    groups, machine, stamps = load(paths)
    runs = len(paths)
    v = machine.get("versions", {})
    out: list[str] = ["# amulet_native decode benchmarks", ""]
    out += [
        (
            "Generated by `benchmarks/report.py` from pytest-benchmark JSON "
            f"({runs} run{'s' if runs > 1 else ''}: {', '.join(stamps)}). "
            "Do not edit by hand; re-run `make bench`."
        ),
        "",
        "## Machine",
        "",
        (f"- CPU: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores (shared VM, noisy)"),
        f"- OS: {machine.get('os', '?')}, kernel {machine.get('kernel', '?')}",
        f"- Python {machine.get('python', '?')}",
        "",
        "## Versions",
        "",
        "| component | version |",
        "|---|---|",
    ]
    out += [f"| {k} | {val if val is not None else 'not installed'} |" for k, val in v.items()]
    out += [
        "",
        "## Method",
        "",
        "- Each benchmark: 3 untimed warm-up calls, then `benchmark.pedantic` with as many "
        "rounds as fit in ~1 s (at least 25); sub-millisecond calls are batched "
        "~2 ms per round. Times below are medians"
        + (f"; with {runs} runs, the median of the per-run medians." if runs > 1 else "."),
        (
            "- Ratio = peer time / amulet_native time (> 1: amulet_native is faster). OpenCV "
            'returns BGR, so it is compared with `amulet_native` `mode="BGR"` (its time '
            'includes producing BGR, like OpenCV\'s); all other peers with `mode="RGB"`.'
        ),
        (
            "- Paired ratios: every timed round of a peer is preceded by one call of its "
            "amulet_native reference (timed separately, pytest-benchmark `setup`), and the "
            "ratio is the median of the per-round ratios (median over runs when there are "
            "several). A burst of load from a neighbour hits both sides of a pair, so "
            "these ratios are far steadier than ratios of medians taken seconds apart "
            "(shown too). The targets are judged on the paired ratios."
        ),
        (
            "- All decoders are single-threaded (`cv2.setNumThreads(1)`; imdecode does not "
            "thread JPEG/PNG decoding anyway). JPEG: accurate integer IDCT and fancy "
            "upsampling everywhere (the libjpeg defaults; identical pixels)."
        ),
        (
            f'- A target is reported "missed (within noise)" when it misses by less than '
            f"{TIE:.0%}, the run-to-run spread of medians on this machine."
        ),
        "",
        "## Results",
        "",
    ]
    for gname in ordered_groups(groups):
        out += group_table(gname, groups[gname], runs)
    out += ["## Targets", "", "| target | status | measured |", "|---|---|---|"]
    for t in targets(groups):
        out.append(f"| {t.text} | {t.status()} | {t.detail()} |")
    compact = compact_table(groups)
    out += [
        "",
        "## Summary table (for the README)",
        "",
        "amulet_native median time; other columns are peer time / amulet_native time.",
        "",
    ]
    out += compact
    return "\n".join(out) + "\n", "\n".join(compact) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    paths = [Path(p) for p in argv[1:-1]]
    output = Path(argv[-1])
    full, compact = render(paths)
    text = full
    notes = output.with_name("NOTES.md")
    if notes.exists():  # hand-written analysis kept next to the generated tables
        text += "\n" + notes.read_text()
    output.write_text(text)
    sys.stdout.write(compact)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
