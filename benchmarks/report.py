"""Turn pytest-benchmark JSON into benchmarks/RESULTS.md.

Usage::

    python benchmarks/report.py RUN.json [RUN2.json ...] RESULTS.md

With several runs (the machine is noisy), each benchmark's time is the median
of its per-run medians; the spread column shows the lowest and highest
per-run median.  Ratios are peer time / amulet_native time, so > 1 means
amulet_native is faster.  OpenCV (BGR output) is compared with amulet_native
mode="BGR"; every other peer with amulet_native mode="RGB".

The report is organised by ``SECTIONS``, one per domain (decode, pipeline,
caches, ...).  A section claims its benchmark groups by name, in display
order, and brings its README summary table and its targets.  RESULTS.md shows,
section by section, one detailed table per group, then all targets, then the
summary tables.  A group no section claims lands in a final "other" section
(with a generic summary table), so a new benchmark is never silently dropped;
give it a section by adding one entry to ``SECTIONS``.

stdout carries the summary tables only, in README order, each block opened by
a one-line ``### <section name>`` marker, blocks separated by a blank line::

    ### decode

    | input | amulet_native | raw C | Pillow | ...
    ...

    ### pipeline

    | benchmark | amulet_native | peer time / amulet_native time |
    ...

Peak-memory groups (benchmarks of kind "memory", measured in subprocesses by
``_memory.py`` or ``_stream_memory.py``) are shown as memory tables; their
pytest-benchmark times are those of the subprocesses and are not reported.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AMULET = "amulet_native"
AMULET_BGR = "amulet_native BGR"
TIE = 0.03  # |ratio - 1| below this is within run-to-run noise (see RESULTS.md)


@dataclass
class Bench:
    group: str
    peer: str
    kind: str
    medians: list[float] = field(default_factory=list)  # seconds, one per run
    rounds: list[int] = field(default_factory=list)
    paired: list[float] = field(default_factory=list)  # per run: median of round ratios
    extra: list[dict[str, Any]] = field(default_factory=list)  # extra_info, one per run

    @property
    def median(self) -> float:
        return statistics.median(self.medians)

    def info(self, key: str) -> Any:
        """Median over runs of a numeric extra_info field (None if absent)."""
        values = [e[key] for e in self.extra if isinstance(e.get(key), (int, float))]
        return statistics.median(values) if values else None


# group name -> peer name -> Bench
Groups = dict[str, dict[str, Bench]]


def is_bgr(peer: str) -> bool:
    """Peers whose output is BGR, compared with amulet_native mode="BGR"."""
    return peer.endswith("(BGR)")


def is_memory(group: dict[str, Bench]) -> bool:
    return any(b.kind == "memory" for b in group.values())


def load(paths: list[Path]) -> tuple[Groups, dict[str, Any], list[str]]:
    groups: Groups = {}
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
            gname = b["group"] or b["name"]
            g = groups.setdefault(gname, {})
            bench = g.setdefault(peer, Bench(gname, peer, info.get("kind", "")))
            bench.medians.append(b["stats"]["median"])
            bench.rounds.append(b["stats"]["rounds"])
            bench.extra.append({k: v for k, v in info.items() if k != "ref_times"})
            ref_times = info.get("ref_times")
            data = b["stats"].get("data")
            if ref_times and data and len(ref_times) == len(data):
                bench.paired.append(
                    statistics.median(d / r for d, r in zip(data, ref_times, strict=True))
                )
    return groups, machine, stamps


def reference(group: dict[str, Bench], peer: str) -> Bench | None:
    if is_bgr(peer) and AMULET_BGR in group:
        return group[AMULET_BGR]
    return group.get(AMULET)


def ratio(group: dict[str, Bench], peer: str) -> float | None:
    """peer / its amulet_native reference: the paired (interleaved) ratio when
    recorded, else the ratio of the medians; None when either is missing."""
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


def fmt_op_time(seconds: float) -> str:
    """fmt_time with nanoseconds below 1 µs, for per-operation times."""
    return f"{seconds * 1e9:.1f} ns" if seconds < 1e-6 else fmt_time(seconds)


def fmt_size(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.0f} KiB"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}"


def fmt_percent(value: float) -> str:
    return f"{value:+.1%}"


# ---- the detailed table of one group (RESULTS.md, every section) ----------------------


def group_table(name: str, group: dict[str, Bench], runs: int) -> list[str]:
    if is_memory(group):
        return memory_table(name, group, runs)
    lines = [f"### {name}", ""]
    items = next((b.info("items") for b in group.values() if b.info("items")), None)
    sizes = any(b.info("out_bytes") for b in group.values())
    head = "| peer | median | ops/s | peer / amulet_native (paired) | ratio of medians |"
    rule = "|---|---:|---:|---:|---:|"
    if items:
        head += " images/s |"
        rule += "---:|"
    if sizes:
        head += " output |"
        rule += "---:|"
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
            rtxt = f"{r:.2f}" + (" (vs amulet BGR)" if is_bgr(bench.peer) else "")
            if not bench.paired:
                rtxt += " (not paired: ratio of medians)"
        name_txt = f"**{bench.peer}**" if bench.peer.startswith(AMULET) else bench.peer
        rm = ratio_of_medians(group, bench.peer)
        rmtxt = f"{rm:.2f}" if rm is not None and bench.peer != AMULET else "–"
        row = (
            f"| {name_txt} | {fmt_time(bench.median)} | {1 / bench.median:,.0f} | {rtxt} "
            f"| {rmtxt} |"
        )
        if items:
            row += f" {items / bench.median:,.0f} |"
        if sizes:
            out = bench.info("out_bytes")
            row += f" {out:,.0f} B |" if out else " – |"
        if runs > 1:
            row += f" {fmt_time(min(bench.medians))} – {fmt_time(max(bench.medians))} |"
        lines.append(row)
    return lines + [""]


def memory_table(name: str, group: dict[str, Bench], runs: int) -> list[str]:
    """Peak memory per operation: medians over runs of the per-run medians."""
    ref = group.get(FULL_DECODE_OP)
    ref_rss = ref.info("rss_peak_kib") if ref else None
    lines = [
        f"### {name}",
        "",
        (
            "| operation | peak RSS rise | full decode + resize / this (RSS) "
            "| tracemalloc peak | RSS rise per process (all runs) |"
        ),
        "|---|---:|---:|---:|---:|",
    ]
    for bench in sorted(group.values(), key=lambda b: b.info("rss_peak_kib") or 0):
        rss = bench.info("rss_peak_kib")
        traced = bench.info("tracemalloc_peak_bytes")
        samples = [s for e in bench.extra for s in e.get("rss_peak_kib_samples", [])]
        rel = f"{ref_rss / rss:.1f}×" if ref_rss and rss and bench is not ref else "–"
        # 0 is a measurement (no new pages touched), not a missing value
        name_txt = f"**{bench.peer}**" if bench.peer.startswith(AMULET) else bench.peer
        lines.append(
            f"| {name_txt} | {fmt_size(rss * 1024) if rss is not None else '–'} | {rel} "
            f"| {fmt_size(traced) if traced else '–'} "
            f"| {', '.join(f'{s:,}' for s in samples)} KiB |"
        )
    method = next((e.get("method") for b in group.values() for e in b.extra), None)
    per_run = max(
        (len(e.get("rss_peak_kib_samples", [])) for b in group.values() for e in b.extra),
        default=0,
    )
    return lines + [
        "",
        (
            f"RSS rise: {method}; {per_run} fresh processes per operation in each of the "
            f"{runs} run(s), median (see `benchmarks/_memory.py`). tracemalloc sees Python "
            "and NumPy allocations only, not what a C library mallocs itself (Pillow's "
            "image memory, libjpeg's work buffers)."
        ),
        "",
    ]


def peer_ratios_table(groups: Groups, names: list[str], column: str = "benchmark") -> list[str]:
    """The generic summary table: one row per group, amulet_native's median and
    every peer's paired ratio (peer time / amulet_native time), fastest peer
    first.  Rows for groups without an amulet_native reference list the peers'
    medians; memory groups list the peak RSS rises."""
    lines = [
        f"| {column} | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if is_memory(g):
            cells = [
                f"{b.peer} {fmt_size(rss * 1024)}"
                for b in sorted(g.values(), key=lambda b: b.info("rss_peak_kib") or 0)
                if (rss := b.info("rss_peak_kib"))
            ]
            lines.append(f"| {gname} (peak RSS rise) | – | " + ", ".join(cells) + " |")
            continue
        peers = sorted((b for b in g.values() if b.peer != AMULET), key=lambda b: b.median)
        if AMULET in g:
            cells = [f"{b.peer} {r:.2f}×" for b in peers if (r := ratio(g, b.peer)) is not None]
            ours = fmt_time(g[AMULET].median)
        else:
            cells = [f"{b.peer} {fmt_time(b.median)}" for b in peers]
            ours = "–"
        lines.append(f"| {gname} | {ours} | " + ", ".join(cells) + " |")
    return lines if len(lines) > 2 else []


@dataclass
class Target:
    text: str
    checks: list[tuple[str, float | None, float]]  # (what, measured value, threshold)
    higher_is_better: bool = True
    fmt: Callable[[float], str] = fmt_ratio  # how the measured values are shown

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
        for what, v, _ in self.checks:
            if v is None:
                parts.append(f"{what}: –")
            else:
                parts.append(f"{what} {self.fmt(v)}")
        return "; ".join(parts)


def no_targets(groups: Groups, names: list[str]) -> list[Target]:
    return []


# ---- decode (test_bench_decode.py, test_bench_probe_scale.py) ------------------------

DECODE_ORDER = (
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


def decode_table(groups: Groups, names: list[str]) -> list[str]:
    """One row per decode input (probe excluded): amulet_native's median and
    one column per peer library that appears in the section."""
    rows = [g for g in names if AMULET in groups[g] and not g.startswith("probe")]
    if not rows:
        return []
    cols = [
        label
        for label, peers in COMPACT_PEERS
        if any(p in groups[g] for g in names for p in peers)
    ]
    lines = [
        "| input | amulet_native | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for gname in rows:
        g = groups[gname]
        cells = []
        for label, peers in COMPACT_PEERS:
            if label not in cols:
                continue
            peer = next((p for p in peers if p in g), None)
            r = ratio(g, peer) if peer else None
            cells.append(f"{r:.2f}×" if r is not None else "–")
        lines.append(f"| {gname} | {g[AMULET].median * 1e3:.2f} ms | " + " | ".join(cells) + " |")
    return lines


def decode_targets(groups: Groups, names: list[str]) -> list[Target]:
    jpeg = [g for g in names if g.startswith("jpeg")]
    png = [g for g in names if g.startswith("png")]
    at768 = [g for g in jpeg if "768x512" in g]
    mosaic = groups.get("jpeg mosaic 3072x2048", {})

    def amulet_over_raw(g: str, raw: str) -> tuple[str, float | None, float]:
        r = ratio(groups[g], raw)
        return (g, 1 / r if r else None, 1.05)

    def worst_peer(g: str, peers: tuple[str, ...]) -> tuple[str, float | None, float]:
        grp = groups[g]
        rs = [(r, p) for p in peers if (r := ratio(grp, p)) is not None]
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


# ---- pipeline (test_bench_pipeline.py) ------------------------------------------------

BATCH = "decode_many 64 x jpeg 768x512"
THUMB = "thumbnail jpeg mosaic -> 256x256 box"
MEMORY = "peak memory: thumbnail jpeg mosaic -> 256x256 box"
B64ENC = "base64 encode 1 MiB"
B64DEC = "base64 decode 1 MiB"
PIPELINE_ORDER = (
    BATCH,
    THUMB,
    MEMORY,
    "encode_jpeg kodim01 768x512 (q85 4:2:0)",
    "encode_jpeg mosaic 3072x2048 (q85 4:2:0)",
    "encode_png kodim01 768x512 (level 6)",
    "encode_png mosaic 3072x2048 (level 6)",
    B64ENC,
    B64DEC,
    "decode_base64 jpeg kodim01 768x512",
    "encode_base64 kodim01 768x512 (jpeg q85)",
)
# Peers shown in the pipeline summary table, per group prefix: (label, peer).
PIPELINE_SUMMARY = (
    (
        "decode_many",
        (
            ("threads=1", "amulet_native threads=1"),
            ("Pillow in threads", "Pillow ThreadPoolExecutor"),
            ("OpenCV in threads", "OpenCV ThreadPoolExecutor (BGR)"),
            ("OpenCV setNumThreads", "OpenCV setNumThreads (BGR)"),
        ),
    ),
    (
        "thumbnail",
        (
            ("Pillow", "Pillow draft + thumbnail"),
            ("OpenCV", "OpenCV (BGR)"),
            ("simplejpeg", "simplejpeg + cv2.resize"),
            ("PyTurboJPEG", "PyTurboJPEG + cv2.resize"),
        ),
    ),
    (
        "encode_base64",
        (
            ("encode_jpeg + binascii", "amulet_native.encode_jpeg + binascii"),
            ("Pillow + base64", "Pillow + base64"),
        ),
    ),
    (
        "encode_",
        (
            ("Pillow", "Pillow"),
            ("OpenCV", "OpenCV (BGR)"),
            ("simplejpeg", "simplejpeg"),
            ("PyTurboJPEG", "PyTurboJPEG"),
        ),
    ),
    (
        "base64 encode",
        (
            ("binascii", "binascii.b2a_base64"),
            ("base64", "base64.b64encode"),
            ("pybase64", "pybase64.b64encode"),
        ),
    ),
    (
        "base64 decode",
        (
            ("binascii", "binascii.a2b_base64"),
            ("base64", "base64.b64decode"),
            ("pybase64", "pybase64.b64decode validate"),
        ),
    ),
    (
        "decode_base64",
        (
            ("binascii + decode", "binascii + amulet_native.decode"),
            ("pybase64 + decode", "pybase64 + amulet_native.decode"),
            ("base64 + Pillow", "base64 + Pillow"),
        ),
    ),
)
THUMB_PEERS = (
    "Pillow draft + thumbnail",
    "OpenCV (BGR)",
    "simplejpeg + cv2.resize",
    "PyTurboJPEG + cv2.resize",
)
FULL_DECODE_OP = "amulet_native decode + resize"
THUMBNAIL_OP = "amulet_native thumbnail"


def pipeline_table(groups: Groups, names: list[str]) -> list[str]:
    """One row per pipeline group: amulet_native's median time and each named
    peer's paired ratio (peer time / amulet_native time)."""
    lines = [
        "| benchmark | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if is_memory(g):
            thumb, full = g.get(THUMBNAIL_OP), g.get(FULL_DECODE_OP)
            t = thumb.info("rss_peak_kib") if thumb else None
            f = full.info("rss_peak_kib") if full else None
            if t is not None and f:
                more = f"{f / t:.0f}× more" if t else "the thumbnail's rise is 0"
                others = [
                    f"{b.peer} {fmt_size(b.info('rss_peak_kib') * 1024)}"
                    for b in g.values()
                    if b not in (thumb, full) and b.info("rss_peak_kib")
                ]
                lines.append(
                    f"| {gname} (RSS rise) | {fmt_size(t * 1024)} | amulet_native decode + "
                    f"resize {fmt_size(f * 1024)} ({more}); " + ", ".join(others) + " |"
                )
            continue
        if AMULET not in g:
            continue
        shown = next((peers for prefix, peers in PIPELINE_SUMMARY if gname.startswith(prefix)), ())
        cells = [f"{label} {r:.2f}×" for label, peer in shown if (r := ratio(g, peer)) is not None]
        lines.append(f"| {gname} | {fmt_time(g[AMULET].median)} | " + ", ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def pipeline_targets(groups: Groups, names: list[str]) -> list[Target]:
    batch = groups.get(BATCH, {})
    thumb = groups.get(THUMB, {})
    memory = groups.get(MEMORY, {})
    enc, dec = groups.get(B64ENC, {}), groups.get(B64DEC, {})

    def less_memory(key: str) -> float | None:
        t, f = memory.get(THUMBNAIL_OP), memory.get(FULL_DECODE_OP)
        tv, fv = (t.info(key) if t else None), (f.info(key) if f else None)
        if tv is None or not fv:
            return None
        return fv / tv if tv else math.inf  # a rise of 0: no new pages at all

    cpus = next((e["cpus"] for b in batch.values() for e in b.extra if e.get("cpus")), None)
    return [
        Target(
            f"decode_many: threads=available_cpus() ({cpus or '?'}) ≥ 1.8× the throughput "
            "of threads=1",
            [("threads=1 / threads=N", ratio(batch, "amulet_native threads=1"), 1.8)],
        ),
        Target(
            "thumbnail ≥ 2× faster than the fastest peer (each peer / amulet ≥ 2)",
            [(p, ratio(thumb, p), 2.0) for p in THUMB_PEERS],
        ),
        Target(
            "thumbnail ≥ 10× less peak memory than full decode + resize",
            [
                ("RSS rise", less_memory("rss_peak_kib"), 10.0),
                ("tracemalloc peak", less_memory("tracemalloc_peak_bytes"), 10.0),
            ],
        ),
        Target(
            "base64 codec at least as fast as binascii on 1 MiB (binascii / amulet ≥ 1)",
            [
                ("encode: b2a_base64", ratio(enc, "binascii.b2a_base64"), 1.0),
                ("decode: a2b_base64", ratio(dec, "binascii.a2b_base64"), 1.0),
            ],
        ),
    ]


# ---- caches (test_bench_cache.py: batches of CACHE_OPS operations per call) -----------

CACHE_OPS = 1000
CACHE_GET_HIT = f"cache get-hit ({CACHE_OPS} ops)"
CACHE_GET_MISS = f"cache get-miss ({CACHE_OPS} ops)"
CACHE_SET_EVICT = f"cache set with eviction, full cache ({CACHE_OPS} ops)"
CACHE_ORDER = (
    CACHE_GET_HIT,
    CACHE_GET_MISS,
    CACHE_SET_EVICT,
    f"@cached hit ({CACHE_OPS} calls)",
    "cache get-hit, 2 threads x 20000 ops",
    "ImageCache hit vs decode jpeg 768x512",
)
LRU_CACHE_HIT = "functools.lru_cache hit"  # paired with Cache(max_items)
TTLCACHE = "cachetools TTLCache"  # paired with Cache(max_items, ttl=...)


def cache_table(groups: Groups, names: list[str]) -> list[str]:
    """One row per cache group: amulet_native's time per operation and every
    peer's paired ratio (peer time / amulet_native time)."""
    lines = [
        "| operation | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if AMULET not in g:
            continue
        per_op = CACHE_OPS if "ops)" in gname or "calls)" in gname else 1
        t = g[AMULET].median / per_op
        peers = sorted((p for p in g if p != AMULET), key=lambda p: g[p].median)
        cells = []
        for p in peers:
            r = ratio(g, p)
            cells.append(f"{p} {r:.2f}×" if r is not None else f"{p} –")
        unit = " per op" if per_op > 1 else ""
        lines.append(f"| {gname} | {fmt_op_time(t)}{unit} | " + "; ".join(cells) + " |")
    return lines if len(lines) > 2 else []


def cache_targets(groups: Groups, names: list[str]) -> list[Target]:
    hit, miss = groups.get(CACHE_GET_HIT, {}), groups.get(CACHE_GET_MISS, {})
    evict = groups.get(CACHE_SET_EVICT, {})
    return [
        Target(
            "Cache get-hit within 1.2× of functools.lru_cache's hit "
            "(lru_cache / amulet ≥ 1/1.2 = 0.83)",
            [("lru_cache / amulet", ratio(hit, LRU_CACHE_HIT), 1 / 1.2)],
        ),
        Target(
            "Cache(ttl=...) get ≥ 4× faster than cachetools TTLCache",
            [
                ("get-hit: TTLCache / amulet", ratio(hit, TTLCACHE), 4.0),
                ("get-miss: TTLCache / amulet", ratio(miss, TTLCACHE), 4.0),
            ],
        ),
        Target(
            "Cache(ttl=...) set with eviction ≥ 10× faster than cachetools TTLCache",
            [("TTLCache / amulet", ratio(evict, TTLCACHE), 10.0)],
        ),
    ]


# ---- tiered cache (test_bench_tiered.py) ----------------------------------------------

# The peers of the README table: (label, peer).  cashews and the async row are
# paired with "amulet_native async", the others with sync "amulet_native".
TIERED_ORDER = tuple(
    f"tiered {op}: {value}"
    for value in ("array 768x512x3 uint8", "bytes 1 KiB")
    for op in ("get L1 hit", "get L2 hit (L1 miss)", "set both tiers")
)
TIERED_SUMMARY = (
    ("redis-py + pickle", "redis-py GET/SET + pickle"),
    ("async (vs sync)", "amulet_native async"),
    ("cashews (vs async)", "cashews (redis)"),
    ("cashews client_side (vs async)", "cashews (redis, client_side)"),
)


def tiered_table(groups: Groups, names: list[str]) -> list[str]:
    """One row per tiered-cache group: amulet_native's median time and each
    peer's paired ratio."""
    lines = [
        "| tiered cache | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if AMULET not in g:
            continue
        cells = [
            f"{label} {r:.2f}×"
            for label, peer in TIERED_SUMMARY
            if (r := ratio(g, peer)) is not None
        ]
        lines.append(
            f"| {gname.removeprefix('tiered ')} | {fmt_time(g[AMULET].median)} | "
            + ", ".join(cells)
            + " |"
        )
    return lines if len(lines) > 2 else []


# ---- thread-safe structures (test_bench_sync.py) --------------------------------------

SYNC_QUEUE = "queue put+get, 1 thread (x1000)"
SYNC_COUNTER = "counter increment, 1 thread (x1000)"
SYNC_ORDER = (
    SYNC_QUEUE,
    "priority queue put+get, 1 thread (x1000)",
    "queue 4 producers + 4 consumers (20000 items)",
    SYNC_COUNTER,
    "counter increment, 4 threads (4 x 10000)",
    "dict get hit (x1000)",
    "dict set (x1000)",
    "dict get_or_create hit (x1000)",
)


def sync_targets(groups: Groups, names: list[str]) -> list[Target]:
    q, c = groups.get(SYNC_QUEUE, {}), groups.get(SYNC_COUNTER, {})
    return [
        Target(
            "ThreadSafeQueue put+get ≥ 10× faster than queue.Queue (one thread)",
            [("queue.Queue / amulet", ratio(q, "queue.Queue"), 10.0)],
        ),
        Target(
            "ThreadSafeQueue put+get within 2× of queue.SimpleQueue (SimpleQueue / amulet ≥ 0.5)",
            [("SimpleQueue / amulet", ratio(q, "queue.SimpleQueue"), 0.5)],
        ),
        Target(
            "AtomicCounter.increment ≥ 3× faster than Lock + int",
            [("Lock + int / amulet", ratio(c, "Lock + int"), 3.0)],
        ),
    ]


# ---- pools and locks (test_bench_pool.py: extra_info["items"] cycles per call) --------

POOL_ORDER = (
    "pool acquire/release x1000, 1 thread",
    "pool acquire/release x250, 4 threads, max_size=2",
    "named lock acquire/release x1000",
    "named lock acquire/release x250, 4 threads",
)


def pool_table(groups: Groups, names: list[str]) -> list[str]:
    """amulet_native's time per acquire/release cycle and each peer's paired
    ratio."""
    lines = [
        "| benchmark | amulet_native per cycle | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if AMULET not in g:
            continue
        items = g[AMULET].info("items") or 1
        cells = [f"{p} {r:.2f}×" for p in g if p != AMULET and (r := ratio(g, p)) is not None]
        lines.append(
            f"| {gname} | {fmt_op_time(g[AMULET].median / items)} | " + ", ".join(cells) + " |"
        )
    return lines if len(lines) > 2 else []


# ---- memory budgets (test_bench_memory.py: the reference runs inside a scope) ---------

MEMORY_LIMIT_LOOPS = (  # the allocation-heavy NumPy loops of the overhead target
    "memory_limit overhead: numpy loop, 128 B temporaries",
    "memory_limit overhead: numpy loop, 32 KiB temporaries",
)
MEMORY_LIMIT_ORDER = (*MEMORY_LIMIT_LOOPS, "memory_limit overhead: decode jpeg 640x480")
MEMORY_LIMIT_NO_SCOPE = "no scope (NumPy default handler)"
MEMORY_LIMIT_TRACEMALLOC = "tracemalloc"


def scope_overhead(group: dict[str, Bench]) -> float | None:
    """Time in memory_limit() / time outside any scope - 1, from the paired
    ratio of the no-scope peer."""
    bare = ratio(group, MEMORY_LIMIT_NO_SCOPE)
    return 1 / bare - 1 if bare else None


def memory_limit_table(groups: Groups, names: list[str]) -> list[str]:
    """Time inside memory_limit(), its overhead over no scope, and
    tracemalloc's time relative to the scope."""
    out = [
        "| work | in memory_limit() | overhead vs no scope | tracemalloc / memory_limit |",
        "|---|---|---|---|",
    ]
    for g in names:
        group = groups[g]
        ref = group.get(AMULET)
        overhead = scope_overhead(group)
        traced = ratio(group, MEMORY_LIMIT_TRACEMALLOC)
        out.append(
            f"| {g.split(': ', 1)[-1]} | {fmt_time(ref.median) if ref else '?'} | "
            f"{fmt_percent(overhead) if overhead is not None else '?'} | "
            f"{f'{traced:.2f}x' if traced else '?'} |"
        )
    return out if len(out) > 2 else []


def memory_limit_targets(groups: Groups, names: list[str]) -> list[Target]:
    return [
        Target(
            "memory_limit() overhead ≤ 5% on the allocation-heavy NumPy loops "
            "(time in scope / time without - 1)",
            [(g.split(": ", 1)[-1], scope_overhead(groups.get(g, {})), 0.05)
             for g in MEMORY_LIMIT_LOOPS],
            higher_is_better=False,
            fmt=fmt_percent,
        ),
    ]


# ---- streaming (test_bench_stream.py) -------------------------------------------------

STREAM_READ = "stream_file 256 MiB page cache, 1 MiB chunks (read path)"
STREAM_MMAP = "stream_file 256 MiB page cache, 1 MiB chunks (mmap path)"
STREAM_ORDER = (
    STREAM_READ,
    STREAM_MMAP,
    "read_limited 20 MB upload + blake2b",
    "peak memory: 20 MB JPEG upload -> RGB array",
)


def throughput(group: dict[str, Bench]) -> float | None:
    """amulet_native's bytes per second (extra_info["bytes"] per call)."""
    ref = group.get(AMULET)
    nbytes = ref.info("bytes") if ref else None
    return nbytes / ref.median if ref and nbytes else None


def stream_table(groups: Groups, names: list[str]) -> list[str]:
    """amulet_native time and throughput, peer ratios; peak RSS for the memory
    group."""
    lines = [
        "| streaming | amulet_native | throughput / peak RSS | peers: peer / amulet_native |",
        "|---|---:|---:|---|",
    ]
    for gname in names:
        g = groups[gname]
        if is_memory(g):
            ours = next((b for b in g.values() if b.peer.startswith(AMULET)), None)
            ours_rss = ours.info("rss_peak_kib") if ours else None
            if ours is None or not ours_rss:
                continue
            peers = ", ".join(
                f"{b.peer}: {fmt_size(rss * 1024)} ({rss / ours_rss:.1f}×)"
                for b in g.values()
                if b is not ours and (rss := b.info("rss_peak_kib"))
            )
            lines.append(f"| {gname} | – | {fmt_size(ours_rss * 1024)} | {peers} |")
            continue
        if AMULET not in g:
            continue
        rate = throughput(g)
        tput = f"{rate / 1e9:.2f} GB/s" if rate else "–"
        peers = ", ".join(
            f"{p}: {r:.2f}" for p in g if p != AMULET and (r := ratio(g, p)) is not None
        )
        lines.append(f"| {gname} | {fmt_time(g[AMULET].median)} | {tput} | {peers} |")
    return lines if len(lines) > 2 else []


def stream_targets(groups: Groups, names: list[str]) -> list[Target]:
    def gbps(gname: str) -> float | None:
        rate = throughput(groups.get(gname, {}))
        return rate / 1e9 if rate else None

    return [
        Target(
            "stream_file ≥ 1 GB/s from the page cache (both paths)",
            [("read path GB/s", gbps(STREAM_READ), 1.0), ("mmap path GB/s", gbps(STREAM_MMAP), 1.0)],
        ),
    ]


# ---- incremental decoding (test_bench_incremental.py) ---------------------------------

INCREMENTAL_ORDER = (
    "incremental jpeg kodim01 768x512",
    "incremental jpeg mosaic 3072x2048",
    "incremental png 640x480",
    "incremental png mosaic 3072x2048",
)


def incremental_table(groups: Groups, names: list[str]) -> list[str]:
    return peer_ratios_table(groups, names, "incremental (64 KiB chunks) vs whole decode")


# ---- the registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One domain of the report.  ``name`` is the stdout marker (``### name``)
    and the README summary heading; ``heading`` titles its part of RESULTS.md;
    ``groups`` are the benchmark groups it claims, in display order."""

    name: str
    heading: str
    groups: tuple[str, ...]
    summary: Callable[[Groups, list[str]], list[str]]
    targets: Callable[[Groups, list[str]], list[Target]] = no_targets
    intro: str = ""  # a paragraph under the heading in RESULTS.md


SECTIONS = (
    Section("decode", "decode", DECODE_ORDER, decode_table, decode_targets),
    Section("pipeline", "pipeline", PIPELINE_ORDER, pipeline_table, pipeline_targets),
    Section(
        "caches",
        "caches",
        CACHE_ORDER,
        cache_table,
        cache_targets,
        intro=(
            f"Each call runs a batch of {CACHE_OPS} operations; the summary table divides by "
            "it. TTL peers are paired with `Cache(ttl=...)` (`amulet_native (ttl)`), LRU peers "
            "and `functools.lru_cache` with a plain `Cache(max_items)`."
        ),
    ),
    Section(
        "tiered cache",
        "tiered cache (L1 + Redis)",
        TIERED_ORDER,
        tiered_table,
        intro=(
            "A real redis-server on loopback. redis-py and the async row are paired with "
            "sync `amulet_native`; cashews with `amulet_native async`."
        ),
    ),
    Section(
        "thread-safe structures",
        "thread-safe structures",
        SYNC_ORDER,
        peer_ratios_table,
        sync_targets,
    ),
    Section(
        "pools and locks",
        "pools and locks",
        POOL_ORDER,
        pool_table,
        intro="Each call runs the number of acquire/release cycles in its group name.",
    ),
    Section(
        "memory budgets",
        "memory budgets (memory_limit)",
        MEMORY_LIMIT_ORDER,
        memory_limit_table,
        memory_limit_targets,
        intro=(
            "The reference `amulet_native` runs the work inside `memory_limit()`; the "
            "no-scope peer's ratio below 1 is the scope's overhead."
        ),
    ),
    Section("streaming", "streaming", STREAM_ORDER, stream_table, stream_targets),
    Section(
        "incremental decoding",
        "incremental decoding",
        INCREMENTAL_ORDER,
        incremental_table,
        intro=(
            "The reference `amulet_native` decodes the whole input at once; every peer "
            "(IncrementalDecoder and Pillow's parser, fed 64 KiB slices) is paired with it."
        ),
    ),
)
OTHER = Section(
    "other",
    "other (groups no section of report.py claims)",
    (),
    peer_ratios_table,
)


def partition(groups: Groups) -> list[tuple[Section, list[str]]]:
    """The sections that have measured groups, with those groups in display
    order; unclaimed groups go, sorted, to OTHER."""
    parts = [(s, [g for g in s.groups if g in groups]) for s in SECTIONS]
    claimed = {g for s in SECTIONS for g in s.groups}
    parts.append((OTHER, sorted(g for g in groups if g not in claimed)))
    return [(s, names) for s, names in parts if names]


def summaries(groups: Groups, parts: list[tuple[Section, list[str]]]) -> str:
    """The README summary tables, one block per section: a ``### name`` line,
    a blank line, the table; blocks separated by a blank line."""
    blocks = [
        "\n".join([f"### {s.name}", "", *table])
        for s, names in parts
        if (table := s.summary(groups, names))
    ]
    return "\n\n".join(blocks) + "\n"


def _domain_summary() -> list[str]:
    """The per-domain suites' summary (benchmarks/results/SUMMARY.md, written
    with those suites' own runners), kept at the top of RESULTS.md."""
    path = Path(__file__).with_name("results") / "SUMMARY.md"
    if not path.exists():
        return []
    return [*path.read_text().rstrip("\n").split("\n"), ""]


def preamble(machine: dict[str, Any], stamps: list[str]) -> list[str]:
    """RESULTS.md down to the first results section: provenance, machine,
    versions and method."""
    runs = len(stamps)
    v = machine.get("versions", {})
    out: list[str] = ["# amulet_native benchmarks", ""]
    out += [
        (
            "Generated by `benchmarks/report.py` from pytest-benchmark JSON "
            f"({runs} run{'s' if runs > 1 else ''}: {', '.join(stamps)}). "
            "Do not edit by hand; re-run `make bench`."
        ),
        "",
        *_domain_summary(),
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
        + (f"; with {runs} runs, the median of the per-run medians." if runs > 1 else ".")
        + " Slow pipeline calls take fewer rounds: at least 15 for decode_many and the "
        "encoders, 3 for PNG-encoding the mosaic (~2 s per call, one warm-up call).",
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
            "- Decode groups: all decoders are single-threaded (`cv2.setNumThreads(1)`; "
            "imdecode does not thread JPEG/PNG decoding anyway). JPEG: accurate integer IDCT "
            "and fancy upsampling everywhere (the libjpeg defaults; identical pixels)."
        ),
        (
            "- decode_many: the reference is `decode_many(items, threads=available_cpus())` "
            "on the native pool; the `threads=1` row is the same call on one thread, so its "
            "ratio is the parallel speed-up. Pillow and OpenCV get the same number of "
            "threads through a `ThreadPoolExecutor` created outside the timing. "
            "`OpenCV setNumThreads` is `cv2.setNumThreads(cpus)` plus imdecode in a loop, "
            "literally OpenCV's own threads: imdecode does not use them for JPEG, so it "
            "runs serially (shown for that reason; the executor row is the fair one)."
        ),
        (
            "- Thumbnail: every peer decodes at the DCT scale that still covers the result "
            "(1/8 of 3072×2048 = 384×256 for a 256×171 thumbnail) and then resamples: "
            "Pillow `draft` + `thumbnail` (BICUBIC, reducing_gap 2), OpenCV "
            "`IMREAD_REDUCED_COLOR_8` + `resize(INTER_AREA)`, simplejpeg / PyTurboJPEG "
            "scaled decode + `cv2.resize(INTER_AREA)`. Peak memory is measured in fresh "
            "processes (`_memory.py`): the rise of VmHWM over VmRSS after resetting the "
            "high-water mark (`/proc/self/clear_refs`), with glibc's mmap threshold pinned "
            "at 128 KiB so large blocks are always fresh pages, and tracemalloc's peak "
            "(Python and NumPy allocations only) in a second call."
        ),
        (
            "- Encoders: JPEG quality 85, 4:2:0, baseline, unoptimised Huffman tables, "
            "accurate DCT everywhere; PNG zlib level 6 (OpenCV told explicitly) with each "
            "library's own filter and zlib strategy (OpenCV: `Z_DEFAULT_STRATEGY`; libpng's "
            "default, which amulet_native keeps: `Z_FILTERED`), so output sizes are shown "
            "next to the times. "
            "base64: 1 MiB of random bytes; amulet_native returns `str`, the stdlib and "
            "pybase64.b64encode `bytes` (str-returning variants are shown too); "
            "`binascii.a2b_base64` skips invalid characters while amulet_native rejects "
            "them (`strict_mode=True` is the like-for-like row)."
        ),
        (
            f'- A target is reported "missed (within noise)" when it misses by less than '
            f"{TIE:.0%}, the run-to-run spread of medians on this machine."
        ),
        "",
    ]
    return out


def render(paths: list[Path]) -> tuple[str, str]:
    """RESULTS.md's text and the README summary tables (stdout)."""
    groups, machine, stamps = load(paths)
    runs = len(paths)
    parts = partition(groups)
    out = preamble(machine, stamps)
    for section, names in parts:
        out += [f"## Results: {section.heading}", ""]
        if section.intro:
            out += [section.intro, ""]
        for gname in names:
            out += group_table(gname, groups[gname], runs)
    out += ["## Targets", "", "| target | status | measured |", "|---|---|---|"]
    for section, names in parts:
        for t in section.targets(groups, names):
            out.append(f"| {t.text} | {t.status()} | {t.detail()} |")
    summary = summaries(groups, parts)
    out += [
        "",
        "## Summary tables (for the README)",
        "",
        "amulet_native median time; other columns are peer time / amulet_native time.",
        "",
        summary,
    ]
    return "\n".join(out), summary


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    paths = [Path(p) for p in argv[1:-1]]
    output = Path(argv[-1])
    text, summary = render(paths)
    notes = output.with_name("NOTES.md")
    if notes.exists():  # hand-written analysis kept next to the generated tables
        text += "\n" + notes.read_text()
    output.write_text(text)
    sys.stdout.write(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
