"""Where the time of a 256x256 thumbnail of the 3072x2048 mosaic goes.

Interleaved rounds (shuffled order each round):

* thumbnail        - amulet_native.thumbnail(data, (256, 256))  (-> 256x171)
* decode 1/8       - amulet_native.decode(data, max_size=(384, 256)): the DCT-scaled
                     decode inside the thumbnail
* resize           - amulet_native.resize of that 384x256 array to 256x171 (area)
* probe            - amulet_native.probe(data): the header walk thumbnail() does first
* raw C 1/8        - libjpeg-turbo called from C at scale 1/8 (the baseline)
* raw C Huffman    - jpeg_read_coefficients only: entropy decoding of every
                     coefficient and no IDCT, upsampling or colour conversion at all
* OpenCV           - imdecode(IMREAD_REDUCED_COLOR_8) + resize(INTER_AREA), the
                     fastest peer of the benchmark
* full decode      - amulet_native.decode(data) at 3072x2048, for scale

The Huffman row is a floor for any decoder built on libjpeg-turbo: a baseline
JPEG without restart markers has to be entropy-decoded in full, sequentially,
whatever the output scale.

    .venv/bin/python benchmarks/thumb_breakdown.py [--rounds N]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _baseline import Baseline
from _inputs import build_inputs
from _interleave import interleaved

import amulet_native as an


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args()
    cv2: Any = importlib.import_module("cv2")
    cv2.setNumThreads(1)
    data = build_inputs().mosaic_jpeg
    buf = np.frombuffer(data, np.uint8)
    bl = Baseline()
    eighth = an.decode(data, max_size=(384, 256))
    fns: dict[str, Callable[[], object]] = {
        "thumbnail": lambda: an.thumbnail(data, (256, 256)),
        "decode 1/8": lambda: an.decode(data, max_size=(384, 256)),
        "resize": lambda: an.resize(eighth, (256, 171)),
        "probe": lambda: an.probe(data),
        "raw C 1/8": lambda: bl.jpeg(data, denom=8),
        "raw C Huffman": lambda: bl.jpeg_stage(data, 0),
        "OpenCV": lambda: cv2.resize(
            cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_8), (256, 171), interpolation=cv2.INTER_AREA
        ),
        "full decode": lambda: an.decode(data),
    }
    times = interleaved(fns, args.rounds)
    print(f"## thumbnail of the 3072x2048 mosaic ({args.rounds} interleaved rounds)")
    print(f"{'stage':14s} {'median':>10s}  {'/ thumbnail':>11s}")
    for k in fns:
        share = statistics.median(a / b for a, b in zip(times[k], times["thumbnail"], strict=True))
        print(f"{k:14s} {statistics.median(times[k]) * 1e3:7.3f} ms  {share:10.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
