"""Before/after and peers for branch codecs-fast, interleaved in one process.

The "before" build is a copy of the extension module built from the branch
point (``main``); it is loaded under another module name next to the current
one, so both run on the same inputs in the same process.  Every round calls
each contender once in a shuffled order; reported are the median time of each
and the median of the per-round ratios to the current build (noise-robust on a
shared machine, as benchmarks/abtest.py).

    .venv/bin/python benchmarks/codecs_fast_ab.py BEFORE_SO [--rounds N] [--json OUT]
        [--only GROUP-SUBSTRING ...]

Example: build main, copy amulet_native/_core*.so to /tmp/before.so, then run
from this branch's worktree.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from _inputs import build_inputs

import amulet_native as an
from amulet_native import _core

LIMITS = (64 << 20, 100_000_000, 32768, 32768, 256)
DECODE_ARGS = (3, False, 1, 0, 0, True, True, 0, LIMITS, None)  # RGB, strict


def load_before(path: str) -> Any:
    loader = importlib.machinery.ExtensionFileLoader("amulet_before._core", path)
    spec = importlib.util.spec_from_file_location("amulet_before._core", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


ONLY: list[str] = []  # --only: run the groups whose name contains one of these


def run_group(name: str, contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, Any]:
    if ONLY and not any(o in name for o in ONLY):
        return {}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    ratios: dict[str, list[float]] = {k: [] for k in contenders}
    for f in contenders.values():  # warm-up
        f()
    for _ in range(rounds):
        order = list(contenders)
        random.shuffle(order)
        t: dict[str, float] = {}
        for k in order:
            t0 = time.perf_counter()
            contenders[k]()
            t[k] = time.perf_counter() - t0
        for k in contenders:
            times[k].append(t[k])
            ratios[k].append(t[k] / t["amulet_native"])
    rows = {k: {"median_ms": statistics.median(times[k]) * 1e3,
                "ratio_vs_amulet": statistics.median(ratios[k])} for k in contenders}
    print(f"\n### {name} ({rounds} paired rounds)\n")
    print("| contender | median | time / amulet_native (paired median) |")
    print("|---|---:|---:|")
    for k, r in rows.items():
        print(f"| {k} | {r['median_ms']:.3f} ms | {r['ratio_vs_amulet']:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--json")
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    ONLY.extend(args.only)
    old = load_before(args.before)
    import cv2
    import pybase64
    from PIL import Image

    inp = build_inputs()
    out: dict[str, Any] = {"base64_simd": _core.base64_simd()}
    r = args.rounds
    for group, item in inp.png.items():
        d = item.data
        out[group] = run_group(group, {
            "amulet_native": lambda d=d: _core.decode(d, *DECODE_ARGS),
            "amulet_native before": lambda d=d: old.decode(d, *DECODE_ARGS),
            "Pillow": lambda d=d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
            "OpenCV (BGR)": lambda d=d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR),
        }, r if "mosaic" not in group else max(5, r // 2))
    for key, px in inp.encode.items():
        big = key.startswith("mosaic")
        res = run_group(f"encode_png {key} (level 6)", {
            "amulet_native": lambda p=px: _core.encode_png(p.rgb, 6, False),
            "amulet_native before": lambda p=px: old.encode_png(p.rgb, 6, False),
            "OpenCV (BGR)": lambda p=px: cv2.imencode(".png", p.bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6]),
        }, 3 if big else r)
        if not res:
            continue
        res["sizes"] = {
            "amulet_native": len(_core.encode_png(px.rgb, 6, False)),
            "amulet_native before": len(old.encode_png(px.rgb, 6, False)),
            "OpenCV (BGR)": len(cv2.imencode(".png", px.bgr, [cv2.IMWRITE_PNG_COMPRESSION, 6])[1]),
        }
        print("sizes:", res["sizes"])
        out[f"encode_png {key}"] = res
    raw, text = inp.random_bytes, inp.random_base64
    rr = r * 5
    out["base64 encode 1 MiB"] = run_group("base64 encode 1 MiB", {
        "amulet_native": lambda: _core.b64encode(raw, False, True, None),
        "amulet_native before": lambda: old.b64encode(raw, False, True, None),
        "pybase64.b64encode_as_string (str)": lambda: pybase64.b64encode_as_string(raw),
        "pybase64.b64encode": lambda: pybase64.b64encode(raw),
    }, rr)
    out["base64 decode 1 MiB"] = run_group("base64 decode 1 MiB", {
        "amulet_native": lambda: _core.b64decode(text),
        "amulet_native before": lambda: old.b64decode(text),
        "pybase64.b64decode validate": lambda: pybase64.b64decode(text, validate=True),
    }, rr)
    plain = inp.photo_base64
    url = "data:image/jpeg;base64," + plain
    out["decode_base64 JPEG data URL"] = run_group("decode_base64 JPEG data URL (kodim01)", {
        "amulet_native": lambda: _core.decode_base64(url, *DECODE_ARGS),
        "amulet_native before": lambda: old.decode_base64(url, *DECODE_ARGS),
        "pybase64 + amulet_native.decode": lambda: an.decode(pybase64.b64decode(plain, validate=True)),
    }, r)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
