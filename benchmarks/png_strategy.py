"""Why OpenCV's PNG encoder is faster than amulet_native's at the same zlib level.

Both run libpng over the same system zlib.  OpenCV, when given
IMWRITE_PNG_COMPRESSION, switches zlib to Z_DEFAULT_STRATEGY; libpng's own
default for filtered rows (what amulet_native gets) is Z_FILTERED.  This
script encodes the same photo at level 6 with OpenCV under both strategies,
interleaved with amulet_native.encode_png: if OpenCV with Z_FILTERED produces
amulet_native's output size at amulet_native's speed, the strategy is the
whole difference.  A second check takes libpng out: Python's zlib (the same
system library) compresses the Sub-filtered rows of the photo with either
strategy.

    .venv/bin/python benchmarks/png_strategy.py [--rounds N] [--photo kodim01]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _inputs import load_photos
from _interleave import interleaved

import amulet_native as an


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--photo", default="kodim01")
    args = ap.parse_args()
    cv2: Any = importlib.import_module("cv2")
    cv2.setNumThreads(1)
    rgb = load_photos()[0][args.photo]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    level = [cv2.IMWRITE_PNG_COMPRESSION, 6]
    filtered = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED]
    fns: dict[str, Callable[[], Any]] = {
        "amulet_native": lambda: an.encode_png(rgb, compression=6),
        "OpenCV, Z_DEFAULT_STRATEGY (its default)": lambda: cv2.imencode(".png", bgr, level)[1],
        "OpenCV, Z_FILTERED": lambda: cv2.imencode(".png", bgr, level + filtered)[1],
    }
    sizes = {k: len(bytes(fn())) for k, fn in fns.items()}
    times = interleaved(fns, args.rounds)
    ref = times["amulet_native"]
    print(f"## PNG level 6, {args.photo} ({args.rounds} interleaved rounds)")
    for k in fns:
        paired = statistics.median(a / b for a, b in zip(times[k], ref, strict=True))
        print(
            f"{k:44s} {statistics.median(times[k]) * 1e3:7.1f} ms  "
            f"/ amulet_native {paired:.2f}  {sizes[k]:>10,} B"
        )
    zlib_check(rgb, args.rounds)
    return 0


def zlib_check(rgb: Any, rounds: int) -> None:
    """zlib level 6 on Sub-filtered rows (filter byte 1), both strategies."""
    h, w, c = rgb.shape
    rows = rgb.reshape(h, w * c).astype(np.int16)
    sub = rows.copy()
    sub[:, c:] = (rows[:, c:] - rows[:, :-c]) & 0xFF
    data = np.concatenate([np.ones((h, 1), np.uint8), sub.astype(np.uint8)], axis=1).tobytes()

    def deflate(strategy: int) -> bytes:
        z = zlib.compressobj(6, zlib.DEFLATED, 15, 8, strategy)
        return z.compress(data) + z.flush()

    strategies = {"Z_DEFAULT_STRATEGY": zlib.Z_DEFAULT_STRATEGY, "Z_FILTERED": zlib.Z_FILTERED}
    times: dict[str, list[float]] = {k: [] for k in strategies}
    sizes = {k: len(deflate(v)) for k, v in strategies.items()}
    for _ in range(rounds):
        for k, v in strategies.items():
            t0 = time.perf_counter()
            deflate(v)
            times[k].append(time.perf_counter() - t0)
    print(f"## Python zlib {zlib.ZLIB_RUNTIME_VERSION}, level 6, Sub-filtered rows")
    for k in strategies:
        print(f"{k:44s} {statistics.median(times[k]) * 1e3:7.1f} ms  {sizes[k]:>10,} B")


if __name__ == "__main__":
    sys.exit(main())
