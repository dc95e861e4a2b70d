"""The fast paths of branch codecs-fast against their references.

- base64: the SIMD path chosen at run time (``_core.base64_simd()``) gives the
  same bytes, the same errors and the same error offsets as the scalar codec
  (a subprocess with ``AMULET_BASE64_SIMD=scalar``) on valid, wrapped,
  URL-safe, data-URL and damaged inputs of every length around the vector
  block sizes;
- PNG: whole-file decodes (ISA-L igzip) equal the incremental decoder (zlib)
  and Pillow on photos of many sizes and colour types, damaged streams fall
  back to zlib's exact errors; encode_png round-trips and is no larger than
  OpenCV's output at the same level (no timing here: see benchmarks/).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import zlib
from typing import Any

import numpy as np
import pytest
from conftest import PNG_SIG, noise, photo, png_bytes, png_chunk, png_ihdr
from PIL import Image

import amulet_native as an
from amulet_native import _core

# ---- base64 ------------------------------------------------------------------------


def b64_cases() -> list[bytes]:
    rng = random.Random(11)
    cases: list[bytes] = []
    for n in list(range(80)) + [95, 96, 97, 127, 128, 129, 1000, 4099]:
        raw = bytes(rng.getrandbits(8) for _ in range(n))
        std = base64.b64encode(raw)
        url = base64.urlsafe_b64encode(raw)
        cases += [std, url, std.rstrip(b"="), base64.encodebytes(raw),
                  b"data:image/png;base64," + std]
        if len(std) > 4:
            for _ in range(3):  # one damaged byte anywhere
                k = rng.randrange(len(std))
                bad = bytearray(std)
                bad[k] = rng.choice(b"!*\x00\xff=-_ \n+/")
                cases.append(bytes(bad))
    return cases


B64_WORKER = textwrap.dedent(r'''
    import json, sys
    import amulet_native as an
    from amulet_native import _core
    out = [_core.base64_simd()]
    for text in json.loads(sys.stdin.read()):
        data = bytes.fromhex(text)
        try:
            r = ["ok", an.b64decode(data).hex()]
        except an.AmuletError as exc:
            r = [exc.code, str(exc), exc.context.get("offset")]
        out.append(r + [an.b64encode(data), an.b64encode(data, urlsafe=True, padding=False)])
    print(json.dumps(out))
''')


def run_b64(path: str | None, cases: list[bytes]) -> list[Any]:
    env = dict(os.environ)
    env.pop("AMULET_BASE64_SIMD", None)
    if path is not None:
        env["AMULET_BASE64_SIMD"] = path
    proc = subprocess.run([sys.executable, "-c", B64_WORKER], input=json.dumps(
        [c.hex() for c in cases]), capture_output=True, text=True, env=env, timeout=120,
        check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_base64_simd_path_is_reported() -> None:
    assert _core.base64_simd() in ("avx2", "ssse3", "scalar")


def test_base64_simd_matches_scalar_exactly() -> None:
    cases = b64_cases()
    scalar = run_b64("scalar", cases)
    assert scalar[0] == "scalar"
    best = run_b64(None, cases)
    for path, got in (("best", best), ("ssse3", run_b64("ssse3", cases))):
        for case, a, b in zip(cases, scalar[1:], got[1:]):
            assert a == b, (path, got[0], case[:80])


def test_base64_large_wrapped_and_urlsafe_round_trip() -> None:
    raw = noise((3 << 20,), seed=4).tobytes()
    assert an.b64decode(base64.encodebytes(raw)) == raw
    assert an.b64decode(an.b64encode(raw, urlsafe=True, padding=False)) == raw
    assert an.b64encode(raw) == base64.b64encode(raw).decode()


# ---- PNG ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (17, 33), (256, 300), (601, 411)])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_fast_inflate_matches_incremental_and_pillow(size: tuple[int, int],
                                                          channels: int) -> None:
    h, w = size
    arr = photo(h, w, 3, seed=h * w)
    if channels != 3:
        arr = np.dstack([arr, arr[..., :1]])[..., :channels] if channels > 1 else arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=6)
    data = buf.getvalue()
    modes: dict[int, an.Mode] = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    mode = modes[channels]
    whole = an.decode(data, mode)
    dec = an.IncrementalDecoder(mode)
    for k in range(0, len(data), 4096):
        dec.feed(data[k:k + 4096])
    assert np.array_equal(whole, dec.finish())
    assert np.array_equal(whole, np.asarray(Image.open(io.BytesIO(data))))


def test_png_damaged_stream_errors_are_zlibs() -> None:
    """igzip refuses, zlib decodes again: the message is zlib's."""
    raw = png_bytes(photo(40, 50, 3), 2)
    idat = raw.index(b"IDAT")
    data = bytearray(raw)
    data[idat + 4 + 2] ^= 0xFF  # the first deflate block header
    import struct
    length = struct.unpack(">I", raw[idat - 4:idat])[0]
    data[idat + 4 + length:idat + 8 + length] = struct.pack(
        ">I", zlib.crc32(bytes(data[idat:idat + 4 + length])))
    with pytest.raises(an.DecodeError) as exc:
        an.decode(bytes(data))
    assert exc.value.code == "decode.corrupt" and "zlib" in str(exc.value)


def idat_png(h: int, w: int, stream: bytes, cuts: list[int]) -> bytes:
    edges = [0, *cuts, len(stream)]
    return (PNG_SIG + png_ihdr(w, h, 8, 2)
            + b"".join(png_chunk(b"IDAT", stream[a:b]) for a, b in itertools.pairwise(edges))
            + png_chunk(b"IEND", b""))


def decode_both(data: bytes, strict: bool | None) -> tuple[Any, Any]:
    def run(incremental: bool) -> Any:
        try:
            if not incremental:
                return an.decode(data, strict=strict).tobytes()
            dec = an.IncrementalDecoder(strict=strict)
            dec.feed(data)
            return dec.finish().tobytes()
        except an.DecodeError as exc:
            return exc.code, str(exc)
    return run(False), run(True)


@pytest.mark.parametrize("extra", [1, 151, 5000])
@pytest.mark.parametrize("cuts", [[], [50]])
def test_png_inflated_data_beyond_the_image_as_zlib(extra: int, cuts: list[int]) -> None:
    """A stream that inflates to more bytes than the image needs (libpng: too
    much image data, no pixel lost) decodes as Pillow and the zlib path do: the
    igzip path buffers output internally, so its input running out after the
    last row does not mean the stream ended."""
    px = photo(90, 100, 3, seed=extra)
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(90))
    data = idat_png(90, 100, zlib.compress(rows + bytes(extra), 9), cuts)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), px)
    for strict in (None, True, False):
        whole, incremental = decode_both(data, strict)
        assert whole == incremental == px.tobytes(), (strict, whole if whole != px.tobytes() else "")


def test_png_preset_dictionary_flag_refused_on_every_path() -> None:
    """FDICT (a preset dictionary PNG never has): zlib refuses the stream; the
    igzip path must not decode it where the incremental decoder refuses."""
    px = photo(20, 30, 3, seed=1)
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(20))
    stream = zlib.compress(rows)
    fdict = bytes([0x78, 0xBB]) + b"\x00\x00\x00\x01" + stream[2:]  # FLG: FDICT set, FCHECK valid
    data = idat_png(20, 30, fdict, [])
    for strict in (None, True):
        whole, incremental = decode_both(data, strict)
        assert whole == incremental and whole[0] == "decode.corrupt", (whole, incremental)
    whole, incremental = decode_both(data, False)
    assert whole == incremental


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_png_round_trip_and_size(level: int, dtype: Any) -> None:
    arr = photo(96, 130, 3, seed=level).astype(dtype)
    if dtype == np.uint16:
        arr = arr * 257
    data = an.encode_png(arr, compression=level)
    assert np.array_equal(an.decode(data, dtype=dtype), arr)
    if dtype == np.uint8:  # Pillow reads 16-bit RGB as 8-bit
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), arr)
    bgr = an.encode_png(np.ascontiguousarray(arr[..., ::-1]), compression=level, mode="BGR")
    assert bgr == data


def test_encode_png_not_larger_than_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    arr = photo(512, 768, 3, seed=9)
    ours = an.encode_png(arr, compression=6)
    theirs = cv2.imencode(".png", arr[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 6])[1]
    assert len(ours) <= 1.01 * len(theirs)


def test_encode_png_working_memory_is_charged_to_memory_limit() -> None:
    """The writer holds the whole filtered image and the whole deflated stream
    (about twice the image) at once: memory_limit() must see that memory, as
    it sees the decoders' buffers."""
    arr = noise((600, 800, 3), seed=4)  # 1.4 MB of pixels
    with pytest.raises(an.MemoryLimitError), an.memory_limit(mb=1):
        an.encode_png(arr)
    with an.memory_limit(mb=16):
        data = an.encode_png(arr)
    assert np.array_equal(an.decode(data), arr)
