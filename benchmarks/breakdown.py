"""Where the time of a JPEG decode goes, measured through the raw C baseline.

Interleaved rounds (shuffled order each round) on the same input:

* full      - the baseline decode (ISLOW IDCT, fancy upsampling, RGB), = amulet_native
* entropy   - Huffman decoding only (jpeg_read_coefficients)
* scale 1/8 - full pipeline at 1/8 scale: all Huffman work, almost no IDCT/colour work
* fast      - IFAST IDCT and plain upsampling (different pixels; an upper bound on
              what relaxing the pixel-exact settings could buy)

    .venv/bin/python benchmarks/breakdown.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _baseline import Baseline
from _inputs import build_inputs
from _interleave import interleaved

import amulet_native as an


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    inputs = build_inputs()
    bl = Baseline()
    for name in ("jpeg kodim01 768x512", "jpeg mosaic 3072x2048"):
        run_one(name, inputs.jpeg[name].data, bl, args.rounds)
    return 0


def run_one(name: str, data: bytes, bl: Baseline, rounds: int) -> None:
    fns: dict[str, Callable[[], object]] = {
        "amulet_native": lambda: an.decode(data),
        "full": lambda: bl.jpeg(data),
        "entropy": lambda: bl.jpeg_stage(data, 0),
        "scale 1/8": lambda: bl.jpeg(data, denom=8),
        "fast": lambda: bl.jpeg_stage(data, 1),
    }
    times = interleaved(fns, rounds)
    print(f"\n## {name} ({rounds} interleaved rounds)")
    for k in fns:
        share = statistics.median(a / b for a, b in zip(times[k], times["full"], strict=True))
        print(f"{k:14s} {statistics.median(times[k]) * 1e3:8.3f} ms  {share:6.1%} of full")


if __name__ == "__main__":
    sys.exit(main())
