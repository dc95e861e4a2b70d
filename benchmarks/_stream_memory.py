"""Peak memory of reading a large upload and decoding it, in a fresh process.

    python benchmarks/_stream_memory.py OP WARMUP.jpg UPLOAD.jpg

Prints one JSON object, measured like ``_memory.py`` (run it with
MALLOC_MMAP_THRESHOLD_=131072; see there): OP runs once on the small WARMUP
file, then ``rss_peak_kib`` is the VmHWM rise (after clear_refs) while OP reads
UPLOAD from an open binary file (as an upload handler reads its spooled file)
and decodes it to an RGB array, and ``tracemalloc_peak_bytes`` the traced peak
of a second call.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _memory import peak_memory

import amulet_native as an

MAX_BYTES = 64 << 20
STREAM_MEMORY_OPS = (
    "amulet_native read_limited + decode",
    "Pillow f.read + Image.open + convert + np.asarray",
)


def amulet_op(f: BinaryIO) -> Any:
    body = an.read_limited(f, MAX_BYTES)
    return an.decode(body.data)


def pillow_op(f: BinaryIO) -> Any:
    from PIL import Image

    body = f.read(MAX_BYTES + 1)
    with Image.open(io.BytesIO(body)) as im:
        return np.asarray(im.convert("RGB"))


OPS: dict[str, Callable[[BinaryIO], Any]] = dict(zip(STREAM_MEMORY_OPS, (amulet_op, pillow_op)))


def run(op: Callable[[BinaryIO], Any], path: str) -> Any:
    with open(path, "rb") as f:
        return op(f)


def measure(name: str, warmup: str, upload: str) -> dict[str, Any]:
    op = OPS[name]
    return peak_memory(name, lambda: run(op, warmup), lambda: run(op, upload))


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in OPS:
        print(__doc__, file=sys.stderr)
        print("OP is one of: " + ", ".join(STREAM_MEMORY_OPS), file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[1], argv[2], argv[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
