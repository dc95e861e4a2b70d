"""Hostile input: truncation, seeded mutation, bogus headers, resource bombs.

The contract under test: whatever bytes arrive, ``probe()`` and ``decode()``
end in a typed :class:`amulet_native.AmuletError` or a valid array; they never
crash, hang, print to stderr, or allocate what the header merely claims.

Images are generated at test time (Pillow for JPEG, a small NumPy encoder here
for PNG, including Adam7, which Pillow cannot write), so nothing depends on the
corpus.  Loops that could crash the interpreter run in a subprocess that must
exit cleanly with an empty stderr (libjpeg/libpng must never print).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import png_filter_rows
from PIL import Image

import amulet_native as an
from amulet_native import (
    AmuletError,
    AmuletWarning,
    DecodeError,
    ImageTooLargeError,
    Limits,
    UnsupportedFormatError,
    ValidationError,
)

CRASHERS = Path(__file__).resolve().parent / "crashers"
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")
# The mutation loop runs in full in `make test`; under ASan (10x slower) a
# quarter of it still exercises every mutation kind on every seed.
MUTATIONS_PER_SEED = 500 if UNDER_ASAN else 2000
SUBPROCESS_TIMEOUT = 600

# ---- generators ------------------------------------------------------------


def pattern(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: real AC energy for JPEG, work for PNG filters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 255 // max(w - 1, 1) + y * 7)[..., None] + np.arange(c) * 50
    arr: np.ndarray = ((base + rng.integers(0, 24, (h, w, c))) % 256).astype(np.uint8)
    return arr


def exif_orientation(orientation: int) -> bytes:
    """An 'Exif\\0\\0' APP1 payload whose IFD0 holds one Orientation tag."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01"
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00\x00\x00\x00"
    return b"Exif\x00\x00" + tiff


def make_jpeg(
    w: int = 33, h: int = 24, *, progressive: bool = False, mode: str = "RGB",
    orientation: int = 0, quality: int = 85,
) -> bytes:
    arr = pattern(h, w, {"RGB": 3, "L": 1, "CMYK": 4}[mode], seed=w * h)
    img = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)
    buf = io.BytesIO()
    extra: dict[str, Any] = {"exif": exif_orientation(orientation)} if orientation else {}
    img.save(buf, "JPEG", quality=quality, progressive=progressive, **extra)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload)
    )


def png_ihdr(w: int, h: int, depth: int = 8, ctype: int = 2, interlace: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))


PNG_SIG = b"\x89PNG\r\n\x1a\n"
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def make_png(
    arr: np.ndarray, *, interlace: bool = False, palette: bytes | None = None,
    trns: bytes | None = None, before_idat: bytes = b"", idat_chunks: int = 1,
) -> bytes:
    """PNG of an (H, W[, C]) uint8/uint16 array (palette: 2-D indices)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    ctype = 3 if palette is not None else {1: 0, 2: 4, 3: 2, 4: 6}[c]
    bpp = c * depth // 8
    raw_bytes = arr.astype(">u2").view(np.uint8) if depth == 16 else arr
    raw_bytes = raw_bytes.reshape(h, w * bpp)
    if interlace:
        data = b""
        for x0, y0, dx, dy in ADAM7:
            sub = raw_bytes.reshape(h, w, bpp)[y0::dy, x0::dx]
            if sub.size:
                data += png_filter_rows(sub.reshape(sub.shape[0], -1), bpp)
    else:
        data = png_filter_rows(raw_bytes, bpp)
    z = zlib.compress(data, 6)
    step = max(1, math.ceil(len(z) / idat_chunks))
    idats = b"".join(png_chunk(b"IDAT", z[i:i + step]) for i in range(0, len(z), step))
    out = PNG_SIG + png_ihdr(w, h, depth, ctype, int(interlace))
    if palette is not None:
        out += png_chunk(b"PLTE", palette)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + before_idat + idats + png_chunk(b"IEND", b"")


def many_scan_jpeg(components: int = 3) -> bytes:
    """A valid 8x8 progressive JPEG with 896 scans per component.

    Every coefficient of every component is sent by successive approximation
    from bit 13 down to bit 0 (14 scans each, 64 coefficients), which is a legal
    progression that libjpeg decodes without a single warning, but costs a scan
    setup per 11 bytes: the shape of libjpeg-turbo #284.  All coefficients are
    zero, so the image is uniform mid-grey.  Huffman tables have one 1-bit code
    (symbol 0: DC diff 0 / EOB), so each scan's entropy data is one byte.
    """
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = struct.pack(">BHHB", 8, 8, 8, components)
    sof += b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    out += b"\xff\xc2" + struct.pack(">H", 2 + len(sof)) + sof
    counts = bytes([1] + [0] * 15)
    dht = b"\x00" + counts + b"\x00" + b"\x10" + counts + b"\x00"
    out += b"\xff\xc4" + struct.pack(">H", 2 + len(dht)) + dht
    for comp in range(1, components + 1):
        for k in range(64):
            for ah in [0, *range(13, 0, -1)]:
                al = 13 if ah == 0 else ah - 1
                sos = bytes([1, comp, 0x00, k, k, (ah << 4) | al])
                out += b"\xff\xda" + struct.pack(">H", 2 + len(sos)) + sos + b"\x7f"
    return bytes(out + b"\xff\xd9")


def run_python(code: str, *args: str, timeout: float = SUBPROCESS_TIMEOUT) -> Any:
    """Runs code in a fresh interpreter; it must exit 0 with an empty stderr and
    print one JSON document on its last stdout line, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, (
        f"subprocess died with {proc.returncode}\nstderr:\n{proc.stderr[-4000:]}"
        f"\nstdout:\n{proc.stdout[-2000:]}"
    )
    assert proc.stderr == "", f"subprocess wrote to stderr:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- fixtures ----------------------------------------------------------------

SEEDS: dict[str, bytes] = {}


def seed(name: str) -> bytes:
    if not SEEDS:
        rgba = pattern(13, 17, 4, seed=5).astype(np.uint16) * 257
        idx = (pattern(12, 19, 1, seed=6)[..., 0] % 16).astype(np.uint8)
        pal = bytes(range(48))
        SEEDS.update({
            "jpeg-baseline": make_jpeg(33, 24),
            "jpeg-progressive": make_jpeg(33, 24, progressive=True),
            "jpeg-exif-gray": make_jpeg(21, 14, mode="L", orientation=6),
            "jpeg-cmyk": make_jpeg(17, 9, mode="CMYK"),
            "png-plain": make_png(pattern(24, 33, 3), idat_chunks=3),
            "png-interlaced": make_png(pattern(24, 33, 3), interlace=True),
            "png-rgba16-interlaced": make_png(rgba, interlace=True),
            "png-palette-trns": make_png(idx, palette=pal, trns=bytes(range(0, 200, 25))),
        })
    return SEEDS[name]


def assert_typed(exc: BaseException) -> None:
    assert isinstance(exc, (DecodeError, ValidationError, ImageTooLargeError)), repr(exc)
    assert isinstance(exc.code, str) and exc.code, repr(exc)
    assert str(exc)


# ---- truncation --------------------------------------------------------------

TRUNCATION_SEEDS = ["jpeg-baseline", "jpeg-progressive", "png-plain", "png-interlaced"]


@pytest.mark.parametrize("name", TRUNCATION_SEEDS)
def test_truncation_strict(name: str) -> None:
    """Every proper prefix raises: strict mode accepts no missing byte."""
    data = seed(name)
    full = an.decode(data)
    magic = 3 if name.startswith("jpeg") else 8
    for cut in range(len(data)):
        with pytest.raises(AmuletError) as info:
            an.decode(data[:cut])
        exc = info.value
        if cut == 0:
            assert isinstance(exc, ValidationError) and exc.code == "input.empty"
        elif cut < magic:
            assert isinstance(exc, UnsupportedFormatError), (cut, exc)
        else:
            assert isinstance(exc, DecodeError), (cut, exc)
            assert exc.code.startswith("decode."), (cut, exc)
    assert full.shape == (24, 33, 3)


@pytest.mark.parametrize("name", TRUNCATION_SEEDS)
def test_truncation_tolerant(name: str) -> None:
    """strict=False: a typed error or an array of the full shape; what was
    decoded before the cut matches the intact image; damage warns."""
    data = seed(name)
    full = an.decode(data)
    arrays = 0
    for cut in range(len(data)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                arr = an.decode(data[:cut], strict=False)
            except AmuletError as exc:
                assert_typed(exc)
                continue
        assert all(issubclass(w.category, AmuletWarning) for w in caught), caught
        assert arr.shape == full.shape and arr.dtype == np.uint8 and arr.flags.c_contiguous
        if cut < len(data) // 2:
            assert caught, f"a half-missing image decoded without a warning (cut {cut})"
        arrays += 1
    if name == "jpeg-baseline":
        assert arrays > len(data) // 4
    else:
        assert arrays > 0


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_truncation_tolerant_keeps_decoded_rows(kind: str) -> None:
    """A tall image cut at 3/4: the top rows come out exactly as from the
    intact file (the first MCU row / first PNG rows are long complete)."""
    data = make_jpeg(33, 128) if kind == "jpeg" else make_png(pattern(128, 33, 3))
    full = an.decode(data)
    with pytest.warns(AmuletWarning):
        part = an.decode(data[: len(data) * 3 // 4], strict=False)
    assert part.shape == full.shape
    np.testing.assert_array_equal(part[:8], full[:8])
    assert not np.array_equal(part, full)


# ---- seeded mutation -----------------------------------------------------------

MUTATION_WORKER = textwrap.dedent(r'''
    import json, struct, sys, traceback, warnings, zlib
    from fractions import Fraction
    import numpy as np
    import amulet_native as an
    from amulet_native import AmuletWarning, DecodeError, ImageTooLargeError, ValidationError

    ALLOWED = (DecodeError, ValidationError, ImageTooLargeError)
    MODES = ("RGB", "BGR", "RGBA", "L", "LA")
    CHANNELS = {"RGB": 3, "BGR": 3, "RGBA": 4, "L": 1, "LA": 2}
    SCALES = (None, None, None, Fraction(1, 2), Fraction(1, 4), Fraction(1, 8))
    LIMITS = an.Limits(max_pixels=4_000_000)  # mutated headers may claim anything

    def jpeg_fields(b):
        """(offset, size) of segment lengths and SOF dimensions, up to SOS."""
        out, pos = [], 2
        while pos + 4 <= len(b) and b[pos] == 0xFF:
            m = b[pos + 1]
            if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7 or m == 0xFF:
                pos += 1 if m == 0xFF else 2
                continue
            out.append((pos + 2, 2))
            if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
                out += [(pos + 5, 2), (pos + 7, 2), (pos + 9, 1)]
            if m == 0xDA:
                out.append((pos + 4, 1))
                break
            pos += 2 + ((b[pos + 2] << 8) | b[pos + 3])
        return out

    def png_chunks(b):
        out, pos = [], 8
        while pos + 12 <= len(b):
            n = struct.unpack(">I", b[pos:pos + 4])[0]
            if pos + 12 + n > len(b):
                break
            out.append((pos, n))
            pos += 12 + n
        return out

    def png_fields(b):
        out = [(pos, 4) for pos, _ in png_chunks(b)]
        return out + [(16, 4), (20, 4), (24, 1), (25, 1), (28, 1)]

    def fix_crcs(b):
        for pos, n in png_chunks(b):
            crc = zlib.crc32(bytes(b[pos + 4:pos + 8 + n]))
            b[pos + 8 + n:pos + 12 + n] = struct.pack(">I", crc)

    def position(rng, b):
        # Half the edits land in the first 256 bytes, where the headers are.
        hi = len(b) if rng.random() < 0.5 else min(len(b), 256)
        return int(rng.integers(0, max(hi, 1)))

    def mutate(rng, data, is_png):
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            if not b:
                break
            kind = int(rng.integers(0, 7))
            if kind == 0:      # bit flips
                for _ in range(int(rng.integers(1, 9))):
                    b[position(rng, b)] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:    # byte sets
                for _ in range(int(rng.integers(1, 5))):
                    b[position(rng, b)] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF,
                                                          int(rng.integers(0, 256))]))
            elif kind == 2:    # length / dimension fields
                fields = png_fields(b) if is_png else jpeg_fields(b)
                fields = [f for f in fields if f[0] + f[1] <= len(b)]
                if not fields:
                    continue
                off, size = fields[int(rng.integers(0, len(fields)))]
                old = int.from_bytes(b[off:off + size], "big")
                top = (1 << (8 * size)) - 1
                val = int(rng.choice([0, 1, 2, 3, top, top >> 1, (top >> 1) + 1,
                                      old + 1, old - 1, old * 2, old // 2,
                                      int(rng.integers(0, top, endpoint=True))]))
                b[off:off + size] = (val & top).to_bytes(size, "big")
            elif kind == 3:    # insertion: random bytes or a copy of a slice
                i = position(rng, b)
                if rng.random() < 0.5:
                    ins = rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8)
                    b[i:i] = ins.tobytes()
                else:
                    j = int(rng.integers(0, len(b)))
                    b[i:i] = b[j:j + int(rng.integers(1, 200))]
            elif kind == 4:    # deletion
                i = position(rng, b)
                del b[i:i + int(rng.integers(1, 64))]
            elif kind == 5:    # truncation
                del b[int(rng.integers(0, len(b))):]
            else:              # marker / chunk-type damage
                i = position(rng, b)
                b[i:i + 2] = bytes([0xFF, int(rng.integers(0xC0, 0x100))]) if not is_png \
                    else rng.choice([b"IDAT", b"IEND", b"tRNS", b"PLTE", b"IHDR"])[:2]
        if is_png and rng.random() < 0.7:
            fix_crcs(b)    # let most mutations past the CRC check into zlib/filters
        return bytes(b)

    def one(data, i, stats):
        mode = MODES[i % 5]
        strict = (i // 5) % 2 == 0
        scale = SCALES[(i // 10) % len(SCALES)]
        orient = i % 7 != 0
        try:
            info = an.probe(data)
        except ALLOWED as exc:
            info = None
            assert exc.code and str(exc)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                arr = an.decode(data, mode, strict=strict, scale=scale, orient=orient,
                                limits=LIMITS)
            except ALLOWED as exc:
                assert exc.code and str(exc)
                return "error:" + exc.code
        assert all(issubclass(w.category, AmuletWarning) for w in caught), caught
        assert info is not None, "decode() accepted what probe() refused"
        assert arr.dtype == np.uint8 and arr.flags.c_contiguous, arr.dtype
        assert arr.ndim == (2 if mode == "L" else 3), arr.shape
        if mode != "L":
            assert arr.shape[2] == CHANNELS[mode], arr.shape
        w, h = info.oriented_size if orient else info.size
        d = scale.denominator if scale else 1
        assert arr.shape[:2] == (-(-h // d), -(-w // d)), (arr.shape, info, d)
        if caught:
            return "ok-warned-strict" if strict else "ok-warned"
        return "ok"

    def main():
        seed_path, count, rng_seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        data = open(seed_path, "rb").read()
        is_png = data.startswith(b"\x89PNG")
        rng = np.random.default_rng(rng_seed)
        stats, failures = {}, []
        for i in range(count):
            m = mutate(rng, data, is_png)
            try:
                outcome = one(m, i, stats)
            except BaseException as exc:
                outcome = "FAILURE"
                if len(failures) < 5:
                    failures.append({"index": i, "input": m.hex(),
                                     "error": "".join(traceback.format_exception(exc))[-1500:]})
            key = outcome if outcome.startswith(("ok", "FAIL")) else outcome
            stats[key] = stats.get(key, 0) + 1
        print(json.dumps({"count": count, "stats": stats, "failures": failures}))

    main()
''')

MUTATION_SEEDS = [
    "jpeg-baseline", "jpeg-progressive", "jpeg-exif-gray", "jpeg-cmyk",
    "png-plain", "png-interlaced", "png-rgba16-interlaced", "png-palette-trns",
]


@pytest.mark.parametrize("name", MUTATION_SEEDS)
def test_mutations(name: str, tmp_path: Path) -> None:
    """Seeded random mutations (bit flips, byte sets, length/dimension fields,
    insertions, deletions, truncation, marker damage; PNG CRCs mostly
    recomputed) decoded in a subprocess across modes, scales, orientation and
    strictness: each ends in a typed error or a valid array, and nothing is
    written to stderr.  8 seeds x 2000 = 16,000 mutations."""
    path = tmp_path / name
    path.write_bytes(seed(name))
    rng_seed = MUTATION_SEEDS.index(name) + 1000
    result = run_python(MUTATION_WORKER, str(path), str(MUTATIONS_PER_SEED), str(rng_seed))
    assert result["failures"] == [], json.dumps(result["failures"], indent=1)
    stats = result["stats"]
    assert sum(stats.values()) == MUTATIONS_PER_SEED
    assert stats.get("ok-warned-strict", 0) == 0, stats
    # Both outcomes must occur, or the mutator is not testing anything.
    assert stats.get("ok", 0) + stats.get("ok-warned", 0) > 0, stats
    assert sum(v for k, v in stats.items() if k.startswith("error:")) > 0, stats


# ---- bogus headers -------------------------------------------------------------


def with_sof_size(jpeg: bytes, w: int, h: int) -> bytes:
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9:]


def test_jpeg_zero_size() -> None:
    for w, h in [(0, 24), (33, 0), (0, 0)]:
        data = with_sof_size(seed("jpeg-baseline"), w, h)
        for call in (an.probe, an.decode):
            with pytest.raises(DecodeError) as info:
                call(data)
            assert info.value.code == "decode.header"


def test_png_zero_size() -> None:
    for w, h in [(0, 24), (33, 0)]:
        data = PNG_SIG + png_ihdr(w, h) + png_chunk(b"IDAT", zlib.compress(b"")) + \
            png_chunk(b"IEND", b"")
        for call in (an.probe, an.decode):
            with pytest.raises(DecodeError) as info:
                call(data)
            assert info.value.code == "decode.header"


def test_jpeg_65535_square() -> None:
    data = with_sof_size(seed("jpeg-baseline"), 65535, 65535)
    info = an.probe(data)
    assert (info.width, info.height) == (65535, 65535)
    with pytest.raises(ImageTooLargeError) as exc:
        an.decode(data)
    assert exc.value.code == "limits.width"
    with pytest.raises(ImageTooLargeError) as exc:
        an.decode(data, limits=Limits(max_width=0, max_height=0))
    assert exc.value.code == "limits.pixels"


def huge_png(w: int = 100_000, h: int = 100_000) -> bytes:
    """A ~100-byte PNG whose IHDR (valid CRC) claims w x h RGB pixels."""
    return PNG_SIG + png_ihdr(w, h) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "limits, code",
    [(None, "limits.width"), (Limits(max_width=0, max_height=0), "limits.pixels"),
     (Limits(max_width=0, max_height=50_000), "limits.height")],
)
def test_png_huge_ihdr_refused_without_allocating(limits: Limits | None, code: str) -> None:
    data = huge_png()
    assert an.probe(data).size == (100_000, 100_000)
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc
    try:
        with pytest.raises(ImageTooLargeError) as exc:
            an.decode(data, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.code == code
    assert peak < 256 * 1024, f"refusal traced {peak} bytes of allocations"


def test_huge_headers_peak_rss() -> None:
    """1,000 refusals of 100000x100000 PNGs and 65535x65535 JPEGs in a fresh
    process: peak RSS may not grow by more than 8 MiB."""
    code = textwrap.dedent('''
        import json, resource, struct, sys
        import amulet_native as an
        png, jpeg = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
        codes = set()
        def run():
            for lim in (None, an.Limits(max_width=0, max_height=0)):
                for data in (png, jpeg):
                    try:
                        an.decode(data, limits=lim)
                    except an.ImageTooLargeError as exc:
                        codes.add(exc.code)
        run()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(250):
            run()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_kib": after - before, "codes": sorted(codes)}))
    ''')
    jpeg = with_sof_size(seed("jpeg-baseline"), 65535, 65535)
    result = run_python(code, huge_png().hex(), jpeg.hex(), timeout=120)
    assert result["codes"] == ["limits.pixels", "limits.width"]
    assert result["growth_kib"] < 8 * 1024, result


def test_png_huge_ihdr_every_format_path() -> None:
    """The same lie through decode_png, probe and strict=False."""
    data = huge_png(70_000, 3)
    with pytest.raises(ImageTooLargeError):
        an.decode_png(data)
    with pytest.raises(ImageTooLargeError):
        an.decode(data, strict=False, mode="L")
    assert an.probe(data).width == 70_000


@pytest.mark.parametrize(
    "data",
    [b"\x00" + seed("jpeg-baseline")[1:], b"\xff\xd9\xff" + b"\x00" * 40,
     b"\x88PNG\r\n\x1a\n" + b"\x00" * 40, b"PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["jpeg-first-byte", "jpeg-eoi", "png-first-byte", "png-no-high-byte"],
)
def test_wrong_magic(data: bytes) -> None:
    for call in (an.probe, an.decode):
        with pytest.raises(UnsupportedFormatError) as exc:
            call(data)
        assert exc.value.format == "unknown"


@pytest.mark.parametrize(
    "empty", [b"", bytearray(), memoryview(b""), np.empty(0, np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "ndarray"],
)
def test_empty_input(empty: Any) -> None:
    for call in (an.probe, an.decode):
        with pytest.raises(ValidationError) as exc:
            call(empty)
        assert exc.value.code == "input.empty"


def test_text_file() -> None:
    text = b"#!/bin/sh\necho 'this is not an image'\n" * 20
    for call in (an.probe, an.decode, an.decode_jpeg, an.decode_png):
        with pytest.raises(UnsupportedFormatError) as exc:
            call(text)
        assert exc.value.format == "unknown"


def _pil_bytes(fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pattern(8, 8, 3)).save(buf, fmt, **kw)
    return buf.getvalue()


# GIF, WebP, HEIC and AVIF are decoded since issue 15 (tests/test_formats.py).
OTHER_FORMATS = {
    "tiff": lambda: _pil_bytes("TIFF"),
    "bmp": lambda: _pil_bytes("BMP"),
    "ico": lambda: _pil_bytes("ICO"),
}


@pytest.mark.parametrize("fmt", sorted(OTHER_FORMATS))
def test_other_formats_named(fmt: str) -> None:
    data = OTHER_FORMATS[fmt]()
    for call in (an.probe, an.decode):
        with pytest.raises(UnsupportedFormatError) as exc:
            call(data)
        assert exc.value.format == fmt
        assert fmt in str(exc.value).lower()
    # The name alone never decides: a GIF in a ".jpg" stays a GIF, and a JPEG is
    # decoded whatever its caller thinks it is.
    assert an.decode(seed("jpeg-baseline")).shape == (24, 33, 3)


# ---- decompression-cost bombs ------------------------------------------------


def test_many_scan_jpeg_is_valid_and_refused() -> None:
    data = many_scan_jpeg(3)
    info = an.probe(data)
    assert info.progressive and info.size == (8, 8)
    # With the limit off it is a legal image: uniform grey, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr = an.decode(data, limits=Limits(max_jpeg_scans=0))
    assert arr.shape == (8, 8, 3) and (arr == 128).all()
    for limits, limit in [(None, 256), (Limits(max_jpeg_scans=100), 100),
                          (Limits(max_jpeg_scans=2687), 2687)]:
        for strict in (True, False):
            with pytest.raises(ImageTooLargeError) as exc:
                an.decode(data, limits=limits, strict=strict)
            assert exc.value.code == "limits.jpeg_scans"
            assert exc.value.limit == limit
    # Exactly at the limit is fine.
    assert an.decode(data, limits=Limits(max_jpeg_scans=2688)).shape == (8, 8, 3)


def test_many_scan_jpeg_refused_by_process_default() -> None:
    previous = an.set_default_limits(Limits(max_jpeg_scans=5))
    try:
        with pytest.raises(ImageTooLargeError) as exc:
            an.decode(seed("jpeg-progressive"))  # Pillow writes 10 scans
        assert exc.value.code == "limits.jpeg_scans"
    finally:
        an.set_default_limits(previous)
    assert an.decode(seed("jpeg-progressive")).shape == (24, 33, 3)


ANCILLARY_WORKER = textwrap.dedent(r'''
    import json, resource, struct, sys, warnings, zlib
    import numpy as np
    import amulet_native as an

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
            ">I", zlib.crc32(kind + payload))

    base = bytes.fromhex(sys.argv[1])          # a small valid PNG
    ihdr_end = 8 + 25
    head, tail = base[:ihdr_end], base[ihdr_end:]
    expected = an.decode(base)
    big = 50 * 1024 * 1024
    cases = {
        "zTXt-50MB": head + chunk(b"zTXt", b"Comment\x00\x00" + b"\x00" * big) + tail,
        "iCCP-50MB": head + chunk(b"iCCP", b"icc\x00\x00" + b"\x78" * big) + tail,
        "eXIf-50MB": head + chunk(b"eXIf", b"MM\x00\x2a" + b"\x00" * big) + tail,
        "private-50MB": head + chunk(b"prVt", b"\x00" * big) + tail,
        "tEXt-200k-chunks": head + chunk(b"tEXt", b"k\x00v") * 200_000 + tail,
        "len-2^31-1": head + struct.pack(">I", 2**31 - 1) + b"tEXt" + b"\x00" * 64,
        "len-2^31": head + struct.pack(">I", 2**31) + b"tEXt" + b"\x00" * 64,
        "len-2^32-1": head + struct.pack(">I", 2**32 - 1) + b"zTXt" + b"\x00" * 64,
        "idat-len-2^31-1": head + struct.pack(">I", 2**31 - 1) + b"IDAT" + tail[8:],
    }
    out = {}
    for name, data in cases.items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # The default policy skips a damaged ancillary chunk with a warning.
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                arr = an.decode(data)
                outcome = "ok" if np.array_equal(arr, expected) else "WRONG PIXELS"
            except an.AmuletError as exc:
                outcome = type(exc).__name__ + ":" + exc.code
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out[name] = {"outcome": outcome, "growth_kib": after - before}
        del data
    print(json.dumps(out))
''')


def test_png_huge_ancillary_chunks_bounded() -> None:
    """50 MB text/ICC/eXIf/private chunks, 200,000 small chunks and chunk
    lengths of 2^31-1 and beyond: each decode ends in the right pixels or a typed
    error, and peak RSS grows by less than 16 MiB beyond the input itself."""
    result = run_python(ANCILLARY_WORKER, make_png(pattern(9, 11, 3)).hex(), timeout=300)
    for name, r in result.items():
        assert r["outcome"] == "ok" or r["outcome"].split(":")[0] in (
            "DecodeError", "ImageTooLargeError"), (name, r)
        assert r["growth_kib"] < 16 * 1024, (name, r)
    for name in ("len-2^31-1", "len-2^31", "len-2^32-1", "idat-len-2^31-1"):
        assert result[name]["outcome"].startswith("DecodeError"), (name, result[name])
    assert result["tEXt-200k-chunks"]["outcome"] == "ok", result


# ---- regression inputs ----------------------------------------------------------

CRASHER_WORKER = textwrap.dedent(r'''
    import json, sys, traceback, warnings
    from fractions import Fraction
    import amulet_native as an
    ALLOWED = (an.DecodeError, an.ValidationError, an.ImageTooLargeError)
    results = {}
    for path in sys.argv[1:]:
        data = open(path, "rb").read()
        outcomes = []
        try:
            an.probe(data)
            outcomes.append("probe:ok")
        except ALLOWED as exc:
            outcomes.append("probe:" + exc.code)
        for mode in ("RGB", "RGBA", "L", "LA", "BGR"):
            for strict in (True, False):
                for scale in (None, Fraction(1, 4)):
                    with warnings.catch_warnings(record=True):
                        warnings.simplefilter("always")
                        try:
                            an.decode(data, mode, strict=strict, scale=scale,
                                      limits=an.Limits(max_pixels=16_000_000))
                            outcomes.append("ok")
                        except ALLOWED as exc:
                            outcomes.append(exc.code)
                        except BaseException:
                            outcomes.append("FAILURE " + traceback.format_exc()[-800:])
        results[path] = outcomes
    print(json.dumps(results))
''')


def crasher_files() -> list[Path]:
    return sorted(p for p in CRASHERS.iterdir() if p.is_file() and p.suffix != ".md")


def test_crashers_replay() -> None:
    """Every file in tests/crashers/ goes through probe() and decode() (all
    modes, strict and tolerant, scaled) in a subprocess: typed outcomes only,
    nothing on stderr."""
    files = crasher_files()
    assert files, "tests/crashers/ holds the regression inputs; it must not be empty"
    results = run_python(CRASHER_WORKER, *map(str, files), timeout=300)
    assert sorted(results) == sorted(map(str, files))
    bad = {p: [o for o in r if o.startswith("FAILURE")] for p, r in results.items()}
    assert not any(bad.values()), bad


@pytest.mark.parametrize(
    "name", ["png-bad-adler32.png", "png-interlaced16-bad-adler32.png"]
)
def test_png_bad_zlib_checksum(name: str) -> None:
    """Regression: on the libpng path (Adam7, 16-bit) a wrong Adler-32 at the end
    of the image data was a libpng "benign" error, so strict mode returned the
    image and only emitted a warning.  Strict must raise on both PNG paths;
    tolerant mode returns the (complete) pixels and warns."""
    data = (CRASHERS / name).read_bytes()
    with pytest.raises(DecodeError) as exc:
        an.decode(data)
    assert exc.value.code == "decode.corrupt"
    with pytest.warns(AmuletWarning):
        arr = an.decode(data, strict=False)
    assert arr.shape[2] == 3 and arr.dtype == np.uint8


@pytest.mark.skipif(UNDER_ASAN, reason="ASan aborts on impossible mallocs "
                    "(allocator_may_return_null=0) instead of returning NULL")
def test_output_allocation_failure_is_typed() -> None:
    """Regression: with every limit disabled, a header claiming 100000x100000
    RGB made NumPy raise its own untyped MemoryError for the 28 GiB output.
    It must be a MemoryLimitError (an AmuletError that is also a MemoryError).
    2^31-1 x 2^20 RGB (6 PB) exceeds any address space, so the allocation fails
    even where memory is overcommitted."""
    unlimited = Limits(max_bytes=0, max_pixels=0, max_width=0, max_height=0,
                       max_jpeg_scans=0)
    for strict in (True, False):
        with pytest.raises(an.MemoryLimitError) as exc:
            an.decode(huge_png(2**31 - 1, 2**20), limits=unlimited, strict=strict)
        assert isinstance(exc.value, MemoryError)
        assert exc.value.code == "memory.alloc"
