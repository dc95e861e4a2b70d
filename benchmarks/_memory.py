"""Peak memory of one thumbnail (or decode + resize), measured in a fresh process.

    python benchmarks/_memory.py OP WARMUP.jpg INPUT.jpg

Prints one JSON object.  The operation first runs once on the small WARMUP
JPEG, so code pages, lazily built tables and the allocator's first arenas are
in place; then two figures are taken on INPUT:

* ``rss_peak_kib``: the rise of the resident set while OP runs once: the peak
  ("high-water mark") is reset to the current RSS by writing 5 to
  /proc/self/clear_refs (Linux >= 4.0), and VmHWM is read after the call.  It
  counts every allocation the call touches (libjpeg's work buffers, NumPy
  arrays, Pillow's image memory) in 4 KiB pages.  Where clear_refs cannot be
  written, the ru_maxrss rise is used instead (``method`` says which).
* ``tracemalloc_peak_bytes``: the peak of memory traced by tracemalloc during a
  second call: Python objects and NumPy array data (NumPy registers its data
  allocations), not memory a C library mallocs on its own.

Run it with MALLOC_MMAP_THRESHOLD_=131072 in the environment (the benchmark
does).  glibc otherwise raises its mmap threshold to the largest block freed
so far (imports free large blocks too), and the measured call could then be
served from heap memory an earlier call freed, touching no new pages; pinned
at its default, every block of 128 KiB or more is a fresh mapping whose pages
are counted.  For the same reason the warm-up image is a thin strip (2048x16:
the same 1/8 DCT scale and code paths as the mosaic, every buffer small).
"""

from __future__ import annotations

import gc
import importlib
import json
import resource
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _peers import THUMB_BOX, contain, thumbnail_maker

import amulet_native as an

MEMORY_OPS = (
    "amulet_native thumbnail",
    "amulet_native decode + resize",
    "Pillow draft + thumbnail",
    "OpenCV reduced decode + resize (BGR)",
    "OpenCV full decode + resize (BGR)",
)
FULL_DECODE_OP = "amulet_native decode + resize"
THUMBNAIL_OP = "amulet_native thumbnail"


def make_op(name: str, size: tuple[int, int]) -> Callable[[bytes], Any]:
    out = contain(size, THUMB_BOX)
    if name == THUMBNAIL_OP:
        return thumbnail_maker("amulet_native", size)
    if name == FULL_DECODE_OP:
        return lambda b: an.resize(an.decode(b), out, method="area")
    if name == "OpenCV full decode + resize (BGR)":
        cv2: Any = importlib.import_module("cv2")
        cv2.setNumThreads(1)
        return lambda b: cv2.resize(
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
            out,
            interpolation=cv2.INTER_AREA,
        )
    if name == "OpenCV reduced decode + resize (BGR)":
        return thumbnail_maker("OpenCV (BGR)", size)
    return thumbnail_maker(name, size)


def status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_memory(name: str, warm: Callable[[], object], call: Callable[[], Any]) -> dict[str, Any]:
    """The JSON object described above for ``call`` (one run of OP on INPUT), after
    ``warm`` (OP on the WARMUP file) has run twice."""
    warm()
    warm()
    gc.collect()
    if reset_high_water_mark():
        method = "VmHWM after clear_refs"
        base = status_kib("VmRSS")
        result = call()
        peak = status_kib("VmHWM")
    else:
        method = "ru_maxrss rise"
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = call()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    shape = list(np.asarray(result).shape)
    del result
    gc.collect()
    tracemalloc.start()
    result = call()
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "op": name,
        "rss_peak_kib": peak - base,
        "method": method,
        "tracemalloc_peak_bytes": traced_peak,
        "shape": shape,
        "output_bytes": int(np.asarray(result).nbytes),
    }


def measure(name: str, warmup: bytes, data: bytes) -> dict[str, Any]:
    info = an.probe(data)
    op = make_op(name, (info.width, info.height))
    small = an.probe(warmup)
    warm_op = make_op(name, (small.width, small.height))
    return peak_memory(name, lambda: warm_op(warmup), lambda: op(data))


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] not in MEMORY_OPS:
        print(__doc__, file=sys.stderr)
        print("OP is one of: " + ", ".join(MEMORY_OPS), file=sys.stderr)
        return 2
    warmup, data = Path(argv[2]).read_bytes(), Path(argv[3]).read_bytes()
    print(json.dumps(measure(argv[1], warmup, data)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
