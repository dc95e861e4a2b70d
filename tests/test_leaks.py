"""Memory stays flat over many thousands of decodes, valid and malformed.

This is the test that would have caught pytorch/vision #9383 (a longjmp out of
libjpeg on a malformed file skipped the cleanup and leaked the decoder): every
error path that jumps out of libjpeg or libpng, every limit refusal and every
tolerant partial decode is looped here.

Each group of scenarios runs in a fresh subprocess (so the rest of the suite cannot blur
the numbers), is warmed up first (NumPy, the warnings machinery and malloc
arenas reach their steady state), then run ITERATIONS times in two halves while
two things are measured; a leak grows memory in both halves, a one-time
allocation (glibc mapping a block for a cache that then stays put: one such
~530 KB step shows up once per process) in at most one, so the test fails
when *both* halves exceed the bound:

* ``heap``: bytes in use according to glibc's ``mallinfo2()`` (``uordblks +
  hblkhd``).  Python objects live in pymalloc arenas that are not malloc'd, so
  this counts what the C core, libjpeg, libpng, zlib and NumPy buffers hold:
  a leak of 16 bytes per decode shows as 80 KB per half.  Bound: 64 KiB per
  half (5,000 decodes).
* ``rss``: resident set size from ``/proc/self/statm``.  Bound: 2 MiB per
  half (a 1 KB-per-decode leak would be 5 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from conftest import MEMORY_PROBES

ITERATIONS = 10_000
WARMUP = 1_000
HEAP_BOUND = 64 * 1024
RSS_BOUND = 2 * 1024 * 1024

WORKER = MEMORY_PROBES + textwrap.dedent(r'''
    import ctypes, io, json, os, struct, sys, warnings, zlib
    import numpy as np
    from PIL import Image
    import amulet_native as an

    def pattern(h, w, c, seed=0):
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:h, 0:w]
        base = (x * 255 // max(w - 1, 1) + y * 7)[..., None] + np.arange(c) * 50
        return ((base + rng.integers(0, 24, (h, w, c))) % 256).astype(np.uint8)

    def jpeg(h=48, w=64, progressive=False):
        buf = io.BytesIO()
        Image.fromarray(pattern(h, w, 3)).save(buf, "JPEG", quality=90,
                                               progressive=progressive)
        return buf.getvalue()

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload))

    def png(arr, interlace=False, corrupt_idat=False, bad_crc=False):
        h, w, c = arr.shape
        if interlace:
            raw = b""
            for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                                   (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
                sub = arr[y0::dy, x0::dx]
                raw += b"".join(b"\x00" + r.tobytes() for r in sub) if sub.size else b""
        else:
            raw = b"".join(b"\x00" + r.tobytes() for r in arr)
        z = bytearray(zlib.compress(raw))
        if corrupt_idat:          # a bad distance code mid-stream, CRC still valid
            for i in range(len(z) // 2, len(z) // 2 + 8):
                z[i] ^= 0xA5
        idat = chunk(b"IDAT", bytes(z))
        if bad_crc:
            idat = idat[:-1] + bytes([idat[-1] ^ 1])
        ihdr = struct.pack(">IIBBBBB", w, h, 8, {3: 2, 4: 6}[c], 0, 0, int(interlace))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")

    def corrupt_scan(data, strict_only=True):
        """Garbage in the middle of the entropy-coded data."""
        b = bytearray(data)
        sos = b.index(b"\xff\xda")
        mid = sos + (len(b) - sos) // 2
        for i in range(mid, mid + 24):
            b[i] = (b[i] * 31 + 7) & 0xFF
            if b[i] == 0xFF:
                b[i] = 0xFE
        b[mid + 10:mid + 12] = b"\xff\xd3"     # a restart marker out of nowhere
        return bytes(b)

    def many_scans():
        out = bytearray(b"\xff\xd8\xff\xdb\x00\x43\x00" + bytes([1] * 64))
        out += b"\xff\xc2\x00\x11\x08\x00\x08\x00\x08\x03\x01\x11\x00\x02\x11\x00\x03\x11\x00"
        counts = bytes([1] + [0] * 15)
        dht = b"\x00" + counts + b"\x00" + b"\x10" + counts + b"\x00"
        out += b"\xff\xc4" + struct.pack(">H", 2 + len(dht)) + dht
        for comp in (1, 2, 3):
            for k in range(64):
                for ah in [0, *range(13, 0, -1)]:
                    al = 13 if ah == 0 else ah - 1
                    out += b"\xff\xda\x00\x08\x01" + bytes([comp, 0, k, k, (ah << 4) | al, 0x7F])
        return bytes(out + b"\xff\xd9")

    J = jpeg()
    JP = jpeg(progressive=True)
    RGB = pattern(40, 56, 3)
    P = png(RGB)
    PI = png(pattern(40, 56, 4), interlace=True)
    HUGE = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000,
            8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    MANY = many_scans()
    OUT = np.empty((48, 64, 3), np.uint8)
    SMALL = an.Limits(max_pixels=1000)

    def expect(exc_type, fn, *a, **kw):
        try:
            fn(*a, **kw)
        except exc_type:
            return
        raise AssertionError(f"{fn.__name__} did not raise {exc_type.__name__}")

    SCENARIOS = {
        "valid-jpeg": lambda: an.decode(J),
        "valid-jpeg-progressive-scaled": lambda: an.decode(JP, scale=0.5, mode="L"),
        "valid-png": lambda: an.decode(P, mode="RGBA"),
        "valid-png-interlaced": lambda: an.decode(PI, mode="LA"),
        "valid-jpeg-out": lambda: an.decode(J, out=OUT),
        "probe": lambda: (an.probe(J), an.probe(P)),
        "truncated-jpeg": lambda: expect(an.DecodeError, an.decode, J[: len(J) * 2 // 3]),
        "truncated-jpeg-progressive": lambda: expect(an.DecodeError, an.decode, JP[:-200]),
        "corrupt-scan-jpeg": lambda: expect(an.DecodeError, an.decode, CJ),
        "corrupt-scan-jpeg-progressive": lambda: expect(an.DecodeError, an.decode, CJP),
        "corrupt-idat-png": lambda: expect(an.DecodeError, an.decode, CP),
        "corrupt-idat-png-interlaced": lambda: expect(an.DecodeError, an.decode, CPI),
        "bad-crc-png-interlaced": lambda: expect(an.DecodeError, an.decode, BPI),
        "truncated-png-interlaced": lambda: expect(an.DecodeError, an.decode, PI[:-100]),
        "limit-huge-png": lambda: expect(an.ImageTooLargeError, an.decode, HUGE),
        "limit-pixels-jpeg": lambda: expect(an.ImageTooLargeError, an.decode, J, limits=SMALL),
        "limit-scans-jpeg": lambda: expect(an.ImageTooLargeError, an.decode, MANY),
        "unsupported-format": lambda: expect(an.UnsupportedFormatError, an.decode, b"II*\x00" * 9),
        "out-mismatch": lambda: expect(an.ValidationError, an.decode, P, out=OUT),
        "tolerant-truncated-jpeg": lambda: an.decode(J[: len(J) * 2 // 3], strict=False),
        "tolerant-corrupt-jpeg-progressive": lambda: an.decode(CJP, strict=False),
        "tolerant-truncated-png": lambda: an.decode(P[: len(P) * 2 // 3], strict=False),
        "tolerant-corrupt-png-interlaced": lambda: an.decode(CPI, strict=False, mode="RGB"),
    }
    CJ, CJP = corrupt_scan(J), corrupt_scan(JP)
    CP = png(RGB, corrupt_idat=True)
    CPI = png(pattern(40, 56, 4), interlace=True, corrupt_idat=True)
    BPI = png(pattern(40, 56, 4), interlace=True, bad_crc=True)

    names, iterations, warmup = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
    warnings.simplefilter("ignore", an.AmuletWarning)
    results = {}
    for name in names:
        fn = SCENARIOS[name]
        for _ in range(warmup):
            fn()
        # Two halves: a leak grows memory in both; a one-time allocation (a
        # cache filled, an arena mapped) lands in at most one of them.
        marks = [(heap(), rss())]
        for _ in range(2):
            for _ in range(iterations // 2):
                fn()
            marks.append((heap(), rss()))
        results[name] = {"heap": [marks[1][0] - marks[0][0], marks[2][0] - marks[1][0]],
                         "rss": [marks[1][1] - marks[0][1], marks[2][1] - marks[1][1]]}
    print(json.dumps(results))
''')

GROUPS = {
    "valid": ["valid-jpeg", "valid-jpeg-progressive-scaled", "valid-png", "valid-png-interlaced",
              "valid-jpeg-out", "probe"],
    "libjpeg-longjmp": ["truncated-jpeg", "truncated-jpeg-progressive", "corrupt-scan-jpeg",
                        "corrupt-scan-jpeg-progressive"],
    "libpng-longjmp": ["corrupt-idat-png", "corrupt-idat-png-interlaced",
                       "bad-crc-png-interlaced", "truncated-png-interlaced"],
    "refusals": ["limit-huge-png", "limit-pixels-jpeg", "limit-scans-jpeg",
                 "unsupported-format", "out-mismatch"],
    "tolerant": ["tolerant-truncated-jpeg", "tolerant-corrupt-jpeg-progressive",
                 "tolerant-truncated-png", "tolerant-corrupt-png-interlaced"],
}


def run_group(names: list[str], iterations: int = ITERATIONS,
              warmup: int = WARMUP) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, ",".join(names), str(iterations), str(warmup)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stderr == "", proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow  # ~70 s on 2 cores: CI runs it; test_memory_flat_quick is in `make test`
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_memory_flat(group: str) -> None:
    """23 scenarios x 10,000 decodes (after 1,000 warm-up): 230,000 decodes, of
    which 170,000 malformed or refused."""
    result = run_group(GROUPS[group])
    assert sorted(result) == sorted(GROUPS[group])
    over = {name: r for name, r in result.items()
            if min(r["heap"]) > HEAP_BOUND or min(r["rss"]) > RSS_BOUND}
    assert not over, f"memory grew in both halves of {ITERATIONS} decodes: {over}"


def test_memory_flat_quick() -> None:
    """The same scenarios at a fifth of the iterations (1,000 per half), all in
    one subprocess, for `make test`: the same bounds then catch leaks of 64
    bytes or more per decode (a leaked decoder or row buffer is kilobytes);
    the slow test above catches 16 bytes."""
    names = [name for group in sorted(GROUPS) for name in GROUPS[group]]
    result = run_group(names, ITERATIONS // 5, WARMUP // 5)
    assert sorted(result) == sorted(names)
    over = {name: r for name, r in result.items()
            if min(r["heap"]) > HEAP_BOUND or min(r["rss"]) > RSS_BOUND}
    assert not over, f"memory grew in both halves of {ITERATIONS // 5} decodes: {over}"


def test_leak_detector_detects_a_leak() -> None:
    """The measurement itself works: holding on to one decoded image per
    iteration (about 9 KB each) must blow both bounds."""
    code = WORKER.replace(
        '"valid-jpeg": lambda: an.decode(J),',
        '"valid-jpeg": lambda: KEEP.append(an.decode(J)),',
    ).replace("J = jpeg()\n", "KEEP = []\nJ = jpeg()\n")
    proc = subprocess.run(
        [sys.executable, "-c", code, "valid-jpeg", "2000", "10"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])["valid-jpeg"]
    assert min(r["heap"]) > HEAP_BOUND and min(r["rss"]) > RSS_BOUND, r
