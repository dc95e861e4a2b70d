"""Turn pytest-benchmark JSON into benchmarks/RESULTS.md.

Usage::

    python benchmarks/report.py RUN.json [RUN2.json ...] RESULTS.md

With several runs (the machine is noisy), each benchmark's time is the median
of its per-run medians; the spread column shows the lowest and highest
per-run median.  Ratios are peer time / amulet_native time, so > 1 means
amulet_native is faster.  OpenCV (BGR output) is compared with amulet_native
mode="BGR"; every other peer with amulet_native mode="RGB".  The compact
README tables (decode, then pipeline) are printed to stdout.

Peak-memory groups (benchmarks of kind "memory", measured in subprocesses by
``_memory.py``) are shown as memory tables; their pytest-benchmark times are
those of the subprocesses and are not reported.
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
# The pipeline groups, named as in test_bench_pipeline.py.
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
# The streaming groups, named as in test_bench_stream.py (shown in their own section).
STREAM_ORDER = (
    "stream_file 256 MiB page cache, 1 MiB chunks (read path)",
    "stream_file 256 MiB page cache, 1 MiB chunks (mmap path)",
    "read_limited 20 MB upload + blake2b",
    "peak memory: 20 MB JPEG upload -> RGB array",
)
# The cache groups, named as in test_bench_cache.py (batches of CACHE_OPS operations).
CACHE_OPS = 1000
CACHE_ORDER = (
    f"cache get-hit ({CACHE_OPS} ops)",
    f"cache get-miss ({CACHE_OPS} ops)",
    f"cache set with eviction, full cache ({CACHE_OPS} ops)",
    f"@cached hit ({CACHE_OPS} calls)",
    "cache get-hit, 2 threads x 20000 ops",
    "ImageCache hit vs decode jpeg 768x512",
)
# The incremental-decoding groups (test_bench_incremental.py): 64 KiB chunks
# against decoding the whole input.
INCREMENTAL_ORDER = (
    "incremental jpeg kodim01 768x512",
    "incremental jpeg mosaic 3072x2048",
    "incremental png 640x480",
    "incremental png mosaic 3072x2048",
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
# The pool and lock groups, named as in test_bench_pool.py (each call runs
# extra_info["items"] acquire/release cycles).
POOL_ORDER = (
    "pool acquire/release x1000, 1 thread",
    "pool acquire/release x250, 4 threads, max_size=2",
    "named lock acquire/release x1000",
    "named lock acquire/release x250, 4 threads",
)
THUMB_PEERS = (
    "Pillow draft + thumbnail",
    "OpenCV (BGR)",
    "simplejpeg + cv2.resize",
    "PyTurboJPEG + cv2.resize",
)
FULL_DECODE_OP = "amulet_native decode + resize"
THUMBNAIL_OP = "amulet_native thumbnail"
COMPACT_PEERS = (
    ("raw C", ("raw C libjpeg", "raw C libpng")),
    ("Pillow", ("Pillow",)),
    ("OpenCV", ("OpenCV (BGR)",)),
    ("simplejpeg", ("simplejpeg",)),
    ("PyTurboJPEG", ("PyTurboJPEG",)),
    ("pyspng", ("pyspng",)),
)

# The thread-safe structure groups, named as in test_bench_sync.py.
SYNC_QUEUE = "queue put+get, 1 thread (x1000)"
SYNC_QUEUE_MT = "queue 4 producers + 4 consumers (20000 items)"
SYNC_COUNTER = "counter increment, 1 thread (x1000)"
SYNC_ORDER = (
    SYNC_QUEUE,
    "priority queue put+get, 1 thread (x1000)",
    SYNC_QUEUE_MT,
    SYNC_COUNTER,
    "counter increment, 4 threads (4 x 10000)",
    "dict get hit (x1000)",
    "dict set (x1000)",
    "dict get_or_create hit (x1000)",
)

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


def is_bgr(peer: str) -> bool:
    """Peers whose output is BGR, compared with amulet_native mode="BGR"."""
    return peer.endswith("(BGR)")


def is_memory(group: dict[str, Bench]) -> bool:
    return any(b.kind == "memory" for b in group.values())


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
    order = (
        GROUP_ORDER + PIPELINE_ORDER + INCREMENTAL_ORDER + TIERED_ORDER + CACHE_ORDER + POOL_ORDER
        + SYNC_ORDER
    )
    known = [g for g in order if g in groups]
    return known + sorted(g for g in groups if g not in order)


def fmt_size(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.0f} KiB"


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
        name_txt = f"**{bench.peer}**" if bench.peer.startswith(AMULET) else bench.peer
        lines.append(
            f"| {name_txt} | {fmt_size(rss * 1024) if rss else '–'} | {rel} "
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
        if AMULET not in g or gname.startswith("probe") or gname in PIPELINE_ORDER + CACHE_ORDER:
            continue
        if gname in TIERED_ORDER or gname in STREAM_ORDER or gname in POOL_ORDER or gname in SYNC_ORDER:
            continue
        if gname in INCREMENTAL_ORDER:
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


def cache_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """One row per cache group: amulet_native's time per operation and every
    peer's paired ratio (peer time / amulet_native time)."""
    lines = [
        "| operation | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in CACHE_ORDER:
        g = groups.get(gname)
        if not g or AMULET not in g:
            continue
        per_op = CACHE_OPS if "ops)" in gname or "calls)" in gname else 1
        t = g[AMULET].median / per_op
        peers = sorted((p for p in g if p != AMULET), key=lambda p: g[p].median)
        cells = []
        for p in peers:
            r = ratio(g, p)
            cells.append(f"{p} {r:.2f}×" if r is not None else f"{p} –")
        unit = " per op" if per_op > 1 else ""
        lines.append(f"| {gname} | {fmt_time(t)}{unit} | " + "; ".join(cells) + " |")
    return lines


def pipeline_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """One row per pipeline group: amulet_native's median time and each named
    peer's paired ratio (peer time / amulet_native time)."""
    lines = [
        "| benchmark | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in ordered_groups(groups):
        g = groups[gname]
        if gname not in PIPELINE_ORDER:
            continue
        if is_memory(g):
            thumb, full = g.get(THUMBNAIL_OP), g.get(FULL_DECODE_OP)
            t = thumb.info("rss_peak_kib") if thumb else None
            f = full.info("rss_peak_kib") if full else None
            if t and f:
                others = [
                    f"{b.peer} {fmt_size(b.info('rss_peak_kib') * 1024)}"
                    for b in g.values()
                    if b not in (thumb, full) and b.info("rss_peak_kib")
                ]
                lines.append(
                    f"| {gname} (RSS rise) | {fmt_size(t * 1024)} | amulet_native decode + "
                    f"resize {fmt_size(f * 1024)} ({f / t:.0f}× more); " + ", ".join(others) + " |"
                )
            continue
        if AMULET not in g:
            continue
        shown = next((peers for prefix, peers in PIPELINE_SUMMARY if gname.startswith(prefix)), ())
        cells = []
        for label, peer in shown:
            r = ratio(g, peer) if peer in g else None
            if r is not None:
                cells.append(f"{label} {r:.2f}×")
        lines.append(f"| {gname} | {fmt_time(g[AMULET].median)} | " + ", ".join(cells) + " |")
    return lines


# The tiered-cache groups, named as in test_bench_tiered.py, and the peers of
# their README table: (label, peer).  cashews and the async row are paired with
# "amulet_native async", the others with sync "amulet_native".
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


def tiered_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """One row per tiered-cache group: amulet_native's median time and each
    peer's paired ratio."""
    lines = [
        "| tiered cache | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in TIERED_ORDER:
        g = groups.get(gname, {})
        if AMULET not in g:
            continue
        cells = [
            f"{label} {r:.2f}×"
            for label, peer in TIERED_SUMMARY
            if peer in g and (r := ratio(g, peer)) is not None
        ]
        lines.append(f"| {gname[len('tiered '):]} | {fmt_time(g[AMULET].median)} | "
                     + ", ".join(cells) + " |")
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


def stream_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """Compact streaming table: amulet_native time and throughput, peer ratios;
    peak RSS for the memory group."""
    lines = [
        "| streaming | amulet_native | throughput / peak RSS | peers: peer / amulet_native |",
        "|---|---:|---:|---|",
    ]
    for gname in STREAM_ORDER:
        g = groups.get(gname, {})
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
        ref = g[AMULET]
        nbytes = ref.info("bytes")
        tput = f"{nbytes / ref.median / 1e9:.2f} GB/s" if nbytes else "–"
        peers = ", ".join(
            f"{p}: {r:.2f}" for p in g if p != AMULET and (r := ratio(g, p)) is not None
        )
        lines.append(f"| {gname} | {fmt_time(ref.median)} | {tput} | {peers} |")
    return lines


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


def pipeline_targets(groups: dict[str, dict[str, Bench]]) -> list[Target]:
    batch = groups.get(BATCH, {})
    thumb = groups.get(THUMB, {})
    memory = groups.get(MEMORY, {})
    enc, dec = groups.get(B64ENC, {}), groups.get(B64DEC, {})

    def peer_ratio(g: dict[str, Bench], peer: str) -> float | None:
        return ratio(g, peer) if peer in g else None

    def less_memory(key: str) -> float | None:
        t, f = memory.get(THUMBNAIL_OP), memory.get(FULL_DECODE_OP)
        tv, fv = (t.info(key) if t else None), (f.info(key) if f else None)
        return fv / tv if tv and fv else None

    cpus = next((e["cpus"] for b in batch.values() for e in b.extra if e.get("cpus")), None)
    return [
        Target(
            f"decode_many: threads=available_cpus() ({cpus or '?'}) ≥ 1.8× the throughput "
            "of threads=1",
            [("threads=1 / threads=N", peer_ratio(batch, "amulet_native threads=1"), 1.8)],
        ),
        Target(
            "thumbnail ≥ 2× faster than the fastest peer (each peer / amulet ≥ 2)",
            [(p, peer_ratio(thumb, p), 2.0) for p in THUMB_PEERS],
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
                ("encode: b2a_base64", peer_ratio(enc, "binascii.b2a_base64"), 1.0),
                ("decode: a2b_base64", peer_ratio(dec, "binascii.a2b_base64"), 1.0),
            ],
        ),
    ]


def render(paths: list[Path]) -> tuple[str, str]:
    groups, machine, stamps = load(paths)
    runs = len(paths)
    v = machine.get("versions", {})
    out: list[str] = ["# amulet_native benchmarks", ""]
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
        "## Results: decode",
        "",
    ]
    pipeline = [g for g in ordered_groups(groups) if g in PIPELINE_ORDER]
    stream = [g for g in STREAM_ORDER if g in groups]
    sync = [g for g in ordered_groups(groups) if g in SYNC_ORDER]
    for gname in ordered_groups(groups):
        if gname not in pipeline and gname not in TIERED_ORDER and gname not in stream and gname not in sync:
            out += group_table(gname, groups[gname], runs)
    if pipeline:
        out += ["## Results: pipeline", ""]
        for gname in pipeline:
            out += group_table(gname, groups[gname], runs)
    tiered = [g for g in ordered_groups(groups) if g in TIERED_ORDER]
    if tiered:
        out += ["## Results: tiered cache (L1 + Redis)", ""]
        for gname in tiered:
            out += group_table(gname, groups[gname], runs)
    if stream:
        out += ["## Results: streaming", ""]
        for gname in stream:
            out += group_table(gname, groups[gname], runs)
    if sync:
        out += ["## Results: thread-safe structures", ""]
        for gname in sync:
            out += group_table(gname, groups[gname], runs)
    out += ["## Targets", "", "| target | status | measured |", "|---|---|---|"]
    for t in (
        targets(groups)
        + (pipeline_targets(groups) if pipeline else [])
        + (sync_targets(groups) if sync else [])
    ):
        out.append(f"| {t.text} | {t.status()} | {t.detail()} |")
    compact = compact_table(groups)
    out += [
        "",
        "## Summary tables (for the README)",
        "",
        "amulet_native median time; other columns are peer time / amulet_native time.",
        "",
    ]
    out += compact
    if pipeline:
        compact += ["", *pipeline_table(groups)]
        out += ["", *pipeline_table(groups)]
    if tiered:
        compact += ["", *tiered_table(groups)]
        out += ["", *tiered_table(groups)]
    if stream:
        compact += ["", *stream_table(groups)]
        out += ["", *stream_table(groups)]
    if any(g in groups for g in CACHE_ORDER):
        compact += ["", *cache_table(groups)]
        out += ["", *cache_table(groups)]
    if sync:
        compact += ["", *sync_table(groups)]
        out += ["", *sync_table(groups)]
    return "\n".join(out) + "\n", "\n".join(compact) + "\n"


# memory_limit groups (test_bench_memory.py): the reference runs inside a scope.
MEMORY_LIMIT_ORDER = (
    "memory_limit overhead: numpy loop, 128 B temporaries",
    "memory_limit overhead: numpy loop, 32 KiB temporaries",
    "memory_limit overhead: decode jpeg 640x480",
)
MEMORY_LIMIT_NO_SCOPE = "no scope (NumPy default handler)"
MEMORY_LIMIT_TRACEMALLOC = "tracemalloc"


def memory_limit_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """README table: time inside memory_limit(), its overhead over no scope
    (1 / paired ratio - 1), and tracemalloc's time relative to the scope."""
    rows = [g for g in MEMORY_LIMIT_ORDER if g in groups]
    if not rows:
        return []
    out = [
        "| work | in memory_limit() | overhead vs no scope | tracemalloc / memory_limit |",
        "|---|---|---|---|",
    ]
    for g in rows:
        group = groups[g]
        ref = group.get(AMULET)
        bare = ratio(group, MEMORY_LIMIT_NO_SCOPE)
        traced = ratio(group, MEMORY_LIMIT_TRACEMALLOC)
        out.append(
            f"| {g.split(': ', 1)[-1]} | {fmt_time(ref.median) if ref else '?'} | "
            f"{f'{1 / bare - 1:+.1%}' if bare else '?'} | "
            f"{f'{traced:.2f}x' if traced else '?'} |"
        )
    return out


def pool_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """README table of the pool/lock groups: amulet_native's time per
    acquire/release cycle and each peer's paired ratio."""
    lines = [
        "| benchmark | amulet_native per cycle | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in POOL_ORDER:
        g = groups.get(gname, {})
        if AMULET not in g:
            continue
        items = g[AMULET].info("items") or 1
        cells = [f"{p} {r:.2f}×" for p in g if p != AMULET and (r := ratio(g, p)) is not None]
        lines.append(
            f"| {gname} | {fmt_time(g[AMULET].median / items)} | " + ", ".join(cells) + " |"
        )
    return lines if len(lines) > 2 else []


def sync_table(groups: dict[str, dict[str, Bench]]) -> list[str]:
    """Thread-safe structures: amulet_native's median per group and every
    peer's paired ratio (peer time / amulet_native time)."""
    lines = [
        "| benchmark | amulet_native | peer time / amulet_native time |",
        "|---|---:|---|",
    ]
    for gname in SYNC_ORDER:
        g = groups.get(gname, {})
        if AMULET not in g:
            continue
        cells = [
            f"{b.peer} {r:.2f}×"
            for b in sorted(g.values(), key=lambda b: b.median)
            if b.peer != AMULET and (r := ratio(g, b.peer)) is not None
        ]
        lines.append(f"| {gname} | {fmt_time(g[AMULET].median)} | " + ", ".join(cells) + " |")
    return lines


def sync_targets(groups: dict[str, dict[str, Bench]]) -> list[Target]:
    q, c = groups.get(SYNC_QUEUE, {}), groups.get(SYNC_COUNTER, {})

    def peer_ratio(g: dict[str, Bench], peer: str) -> float | None:
        return ratio(g, peer) if peer in g else None

    return [
        Target(
            "ThreadSafeQueue put+get ≥ 10× faster than queue.Queue (one thread)",
            [("queue.Queue / amulet", peer_ratio(q, "queue.Queue"), 10.0)],
        ),
        Target(
            "ThreadSafeQueue put+get within 2× of queue.SimpleQueue (SimpleQueue / amulet ≥ 0.5)",
            [("SimpleQueue / amulet", peer_ratio(q, "queue.SimpleQueue"), 0.5)],
        ),
        Target(
            "AtomicCounter.increment ≥ 3× faster than Lock + int",
            [("Lock + int / amulet", peer_ratio(c, "Lock + int"), 3.0)],
        ),
    ]


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
    mem_table = memory_limit_table(load(paths)[0])
    if mem_table:
        text += "\n## memory_limit overhead\n\n" + "\n".join(mem_table) + "\n"
    output.write_text(text)
    sys.stdout.write(compact)
    if mem_table:
        sys.stdout.write("\n" + "\n".join(mem_table) + "\n")
    pools = pool_table(load(paths)[0])
    if pools:
        sys.stdout.write("\n" + "\n".join(pools) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
