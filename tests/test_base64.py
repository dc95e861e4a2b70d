"""Base64: the native codec against Python's base64 module, its error offsets,
and base64 -> image decoding against decode(bytes).

The codec is checked on every length 0..300 (so every tail length meets both
gears of the decoder: 16-character blocks, single quads and the per-character
path) and on 1 MB, in both alphabets, with and without padding, with
whitespace at random positions and behind data-URL prefixes.  Every malformed
input must fail with ValidationError("input.base64") and the exact offset of
the offending character.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MEMORY_PROBES, jpeg_bytes, noise, photo, png_bytes

import amulet_native as an

CRASHERS = Path(__file__).parent / "crashers"
WHITESPACE = " \t\n\r\v\f"


def ref_encode(data: bytes, urlsafe: bool = False, padding: bool = True) -> str:
    text = (base64.urlsafe_b64encode(data) if urlsafe else base64.b64encode(data)).decode()
    return text if padding else text.rstrip("=")


def sprinkle(text: str, rng: random.Random, count: int) -> str:
    """Inserts count whitespace characters at random positions."""
    chars = list(text)
    for _ in range(count):
        chars.insert(rng.randint(0, len(chars)), rng.choice(WHITESPACE))
    return "".join(chars)


def expect_offset(text: str | bytes, offset: int) -> an.ValidationError:
    with pytest.raises(an.ValidationError) as info:
        an.b64decode(text)
    err = info.value
    assert err.code == "input.base64", err
    assert err.context["offset"] == offset, (text[:80], err)
    assert err.context["field"] == "data"
    return err


# ---- the codec against Python's base64 module ----------------------------------


@pytest.mark.parametrize("urlsafe", [False, True])
@pytest.mark.parametrize("padding", [True, False])
def test_round_trip_all_lengths(urlsafe: bool, padding: bool) -> None:
    rng = random.Random(1234)
    for n in range(301):
        data = rng.randbytes(n)
        text = an.b64encode(data, urlsafe=urlsafe, padding=padding)
        assert isinstance(text, str)
        assert text == ref_encode(data, urlsafe, padding), n
        assert an.b64decode(text) == data, n
        assert an.b64decode(text.encode()) == data, n
        assert an.b64decode(bytearray(text.encode())) == data, n
        assert an.b64decode(memoryview(text.encode())) == data, n


@pytest.mark.parametrize("urlsafe", [False, True])
def test_round_trip_1mb(urlsafe: bool) -> None:
    data = random.Random(7).randbytes(1 << 20)
    ref = ref_encode(data, urlsafe)
    assert an.b64encode(data, urlsafe=urlsafe) == ref
    assert an.b64decode(ref) == data
    assert an.b64decode(ref.encode()) == data
    assert an.b64decode(ref.rstrip("=")) == data
    # MIME-style 76-character lines with CRLF, as base64.encodebytes writes them (LF).
    wrapped = base64.encodebytes(data).decode()
    assert an.b64decode(wrapped) == data
    assert an.b64decode(wrapped.replace("\n", "\r\n")) == data
    assert an.b64encode(np.frombuffer(data, np.uint8)) == base64.b64encode(data).decode()


def test_whitespace_anywhere() -> None:
    rng = random.Random(99)
    for n in [*range(120), 1000, 4099]:
        data = rng.randbytes(n)
        for urlsafe in (False, True):
            for padding in (True, False):
                text = ref_encode(data, urlsafe, padding)
                spaced = sprinkle(text, rng, rng.randint(1, 1 + len(text) // 3))
                assert an.b64decode(spaced) == data, (n, spaced)
                assert an.b64decode(spaced.encode()) == data
    # whitespace between padding characters and around everything
    assert an.b64decode(" \n YW\tJj\r\nZA = \n = \n") == b"abcd"
    assert an.b64decode(" \n ") == b""


def test_empty_and_tails() -> None:
    assert an.b64decode("") == b""
    assert an.b64decode(b"") == b""
    assert an.b64encode(b"") == ""
    assert an.b64decode("YQ") == b"a"
    assert an.b64decode("YWI") == b"ab"
    # Non-zero leftover bits are ignored, as Python's base64 does.
    assert an.b64decode("YR==") == base64.b64decode("YR==") == b"a"


DATA_URL_PREFIXES = [
    "data:image/png;base64,",
    "data:image/jpeg;base64,",
    "DATA:IMAGE/PNG;BASE64,",
    "Data:image/webp;Base64,",
    "data:;base64,",
    "data:image/png;name=x.png;base64,",
    "  \n data:image/png;base64,",
    "data:image/png;base64,\n",
]


@pytest.mark.parametrize("prefix", DATA_URL_PREFIXES)
def test_data_url_prefix(prefix: str) -> None:
    data = random.Random(3).randbytes(500)
    for urlsafe in (False, True):
        text = prefix + ref_encode(data, urlsafe)
        assert an.b64decode(text) == data
        assert an.b64decode(text.encode()) == data


# ---- malformed base64: exact offsets ------------------------------------------------

MALFORMED = [
    ("a", 0),  # a lone character cannot encode anything
    ("abcde", 4),
    ("abcd e", 5),
    ("a===", 1),  # '=' after a single character
    ("=", 0),
    ("==", 0),
    ("abcd=", 4),  # padding at a quad boundary
    ("ab=c", 3),  # '=' expected
    ("ab=", 3),  # incomplete padding: reported at the end
    ("ab= \n", 5),
    ("abc==", 4),  # too much padding
    ("ab==c", 4),  # data after the padding
    ("ab== =", 5),
    ("abc=d", 4),
    ("ab*d", 2),
    ("abcd\x00", 4),
    ("abcdefgh!", 8),
    ("ab.cdefghijklmnopqrstuvwx", 2),
    ("abcdefghijklmnopqrstuvwxyz012345678.", 35),  # inside a fast 16-char block
    ("ab+c-d", 4),  # standard alphabet, then a URL-safe character
    ("ab_c/d", 4),  # URL-safe, then standard
    ("abcdefghijklmnopqrstuv+wxyz_1234", 27),
    ("data:image/png,YWJj", 14),  # a data URL that is not base64
    ("data:image/png;base64", 21),  # no ','
    ("data:image png;base64,YWJj", 10),  # whitespace in the media type
    ("data:image/png;base64,YW*j", 24),  # offsets count the prefix
    ("\n data:image/png;base64,\nYW*j", 27),
]


@pytest.mark.parametrize(("text", "offset"), MALFORMED)
def test_malformed_offsets(text: str, offset: int) -> None:
    err = expect_offset(text, offset)
    assert str(offset) in str(err)
    expect_offset(text.encode("latin-1"), offset)


def test_invalid_character_at_every_position() -> None:
    """An invalid byte at any position of a long valid text is reported there,
    whichever gear (16-char block, quad, single character) meets it."""
    rng = random.Random(5)
    text = ref_encode(rng.randbytes(96))  # 128 characters, no padding
    for pos in range(len(text)):
        for bad in ("*", "\x00", "\x7f", "é", ":"):
            expect_offset(text[:pos] + bad + text[pos + 1 :], pos)
        expect_offset((text[:pos] + "!" + text[pos + 1 :]).encode(), pos)
    # the same with whitespace before it: offsets are in the original text
    spaced = "\n".join(text[i : i + 10] for i in range(0, len(text), 10))
    for pos in range(len(spaced)):
        if spaced[pos] != "\n":
            expect_offset(spaced[:pos] + "#" + spaced[pos + 1 :], pos)


def test_random_corruption_matches_reference() -> None:
    """Seeded mutations: whatever Python's strict decoder rejects, we reject
    (we accept only what validate=True accepts, after removing whitespace
    and mapping one alphabet), and accepted texts decode identically."""
    rng = random.Random(11)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    for _ in range(3000):
        text = list(ref_encode(rng.randbytes(rng.randint(0, 40))))
        for _ in range(rng.randint(1, 3)):
            if text and rng.random() < 0.5:
                text[rng.randrange(len(text))] = rng.choice(alphabet + "-_ \n*")
            else:
                text.insert(rng.randint(0, len(text)), rng.choice(alphabet))
        s = "".join(text)
        compact = "".join(s.split())
        if "-" in compact or "_" in compact:
            ref_input = compact.replace("-", "+").replace("_", "/")
            mixed = ("+" in compact or "/" in compact)
        else:
            ref_input, mixed = compact, False
        stripped = ref_input.rstrip("=")
        padded = stripped + "=" * (-len(stripped) % 4)
        try:
            expected: bytes | None = base64.b64decode(padded, validate=True)
        except ValueError:
            expected = None
        if mixed or len(stripped) % 4 == 1 or (
            ref_input != stripped and ref_input != padded
        ):
            expected = None  # mixed alphabets, impossible length, wrong padding
        if expected is None:
            with pytest.raises(an.ValidationError) as info:
                an.b64decode(s)
            assert info.value.code == "input.base64"
            assert 0 <= info.value.context["offset"] <= len(s)
        else:
            assert an.b64decode(s) == expected, s


def test_non_ascii_str() -> None:
    expect_offset("YWJj€ZA==", 4)  # beyond Latin-1 (2-byte kind)
    expect_offset("YWJjZA==\U0001f600", 8)  # 4-byte kind
    expect_offset("YWJjé", 4)  # Latin-1 (1-byte kind, not ASCII)
    with pytest.raises(an.ValidationError) as info:
        an.decode_base64("€" + "A" * 10)
    assert info.value.code == "input.base64" and info.value.context["offset"] == 0


@pytest.mark.parametrize("bad", [None, 123, 1.5, ["YQ=="], object()])
def test_wrong_types(bad: Any) -> None:
    with pytest.raises(an.ValidationError) as info:
        an.b64decode(bad)
    assert info.value.code == "input.type"
    with pytest.raises(an.ValidationError) as info:
        an.decode_base64(bad)
    assert info.value.code == "input.type"
    if bad is not None:
        with pytest.raises(an.ValidationError):
            an.b64encode(bad)
    with pytest.raises(an.ValidationError) as info:
        an.b64encode("text is not bytes")  # type: ignore[arg-type]
    assert info.value.code == "input.type"


# ---- base64 -> image ------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    rgb = photo(67, 93, 3, seed=1)
    rgba = photo(40, 52, 4, seed=2)
    return {
        "jpeg": jpeg_bytes(rgb, quality=90),
        "jpeg_progressive": jpeg_bytes(rgb, quality=85, progressive=True),
        "png": png_bytes(rgb, 2),
        "png_rgba": png_bytes(rgba, 6),
        "png16": png_bytes(noise((20, 30, 3), seed=4, dtype=np.uint16, high=65536), 2, 16),
    }


@pytest.mark.parametrize("name", ["jpeg", "jpeg_progressive", "png", "png_rgba"])
@pytest.mark.parametrize("mode", ["RGB", "BGR", "RGBA", "L", "LA"])
def test_decode_base64_equals_decode(images: dict[str, bytes], name: str, mode: Any) -> None:
    data = images[name]
    ref = an.decode(data, mode)
    text = base64.b64encode(data).decode()
    for variant in (
        text,
        text.encode(),
        bytearray(text.encode()),
        memoryview(text.encode()),
        "data:image/x;base64," + text,
        base64.encodebytes(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
    ):
        got = an.decode_base64(variant, mode)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref), (name, mode, type(variant))


@pytest.mark.parametrize("name", ["jpeg", "png"])
def test_decode_base64_options(images: dict[str, bytes], name: str) -> None:
    data = images[name]
    text = base64.b64encode(data).decode()
    for kw in ({"scale": "1/2"}, {"scale": 0.25}, {"max_size": (30, 30)}, {"orient": False}):
        assert np.array_equal(an.decode_base64(text, **kw), an.decode(data, **kw)), kw
    ref = an.decode(data)
    out = np.empty_like(ref)
    res = an.decode_base64(text, out=out)
    assert res is out and np.array_equal(out, ref)
    with pytest.raises(an.ValidationError) as info:
        an.decode_base64(text, out=np.empty((1, 1, 3), np.uint8))
    assert info.value.code == "value.out"
    with pytest.raises(an.ValidationError):
        an.decode_base64(text, mode="XYZ")  # type: ignore[arg-type]


def test_decode_base64_uint16(images: dict[str, bytes]) -> None:
    data = images["png16"]
    got = an.decode_base64(base64.b64encode(data), dtype=np.uint16)
    assert got.dtype == np.uint16
    assert np.array_equal(got, an.decode(data, dtype=np.uint16))


def test_decode_base64_errors(images: dict[str, bytes]) -> None:
    with pytest.raises(an.ValidationError) as info:
        an.decode_base64("")
    assert info.value.code == "input.empty"
    with pytest.raises(an.UnsupportedFormatError):
        an.decode_base64(base64.b64encode(b"II*\x00" + bytes(30)))
    truncated = images["jpeg"][: len(images["jpeg"]) // 2]
    with pytest.raises(an.DecodeError):
        an.decode_base64(base64.b64encode(truncated))
    # Malformed base64 around a valid image: the offset of the bad character.
    text = base64.b64encode(images["png"]).decode()
    bad = text[:100] + "*" + text[101:]
    with pytest.raises(an.ValidationError) as info:
        an.decode_base64(bad)
    assert info.value.context["offset"] == 100


def test_tolerant_warning_points_at_caller(images: dict[str, bytes]) -> None:
    truncated = images["jpeg"][: len(images["jpeg"]) * 2 // 3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr = an.decode_base64(base64.b64encode(truncated), strict=False)
    assert arr.shape == (67, 93, 3)
    assert [w.category for w in caught] == [an.AmuletWarning]
    assert caught[0].filename == __file__


# ---- limits --------------------------------------------------------------------


def test_max_bytes_boundary(images: dict[str, bytes]) -> None:
    data = images["png"]
    n = len(data)
    for text in (base64.b64encode(data).decode(), base64.encodebytes(data).decode()):
        assert np.array_equal(an.decode_base64(text, limits=an.Limits(max_bytes=n)), an.decode(data))
        with pytest.raises(an.ImageTooLargeError) as info:
            an.decode_base64(text, limits=an.Limits(max_bytes=n - 1))
        err = info.value
        assert err.code == "limits.bytes"
        assert err.context["limit_name"] == "max_bytes"
        assert err.context["actual"] == n and err.context["limit"] == n - 1


def test_max_bytes_refused_before_decoding() -> None:
    """A text decoding to ~48 MB with an invalid character at its end: the
    limit error (not the base64 one) proves nothing was decoded, and nothing
    of that size was allocated."""
    import tracemalloc

    text = "A" * (64 << 20) + "*"
    limits = an.Limits(max_bytes=1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(an.ImageTooLargeError) as info:
            an.decode_base64(text, limits=limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "limits.bytes"
    assert info.value.context["actual"] == 48 << 20
    assert peak < 1 << 20
    # default limits (64 MiB) apply too
    big = "A" * (90 << 20)
    with pytest.raises(an.ImageTooLargeError):
        an.decode_base64(big)


def test_max_bytes_counts_whitespace_out() -> None:
    """The quick bound counts whitespace; an image that fits once whitespace is
    removed is accepted."""
    data = jpeg_bytes(photo(16, 16, 3))
    text = " \n".join(base64.b64encode(data).decode())  # 3 characters per data character
    got = an.decode_base64(text, limits=an.Limits(max_bytes=len(data)))
    assert np.array_equal(got, an.decode(data))


@pytest.mark.parametrize("name", ["jpeg-sof-65535x65535.jpg", "png-ihdr-100000x100000.png"])
def test_huge_dimensions_inside_base64(name: str) -> None:
    text = base64.b64encode((CRASHERS / name).read_bytes()).decode()
    with pytest.raises(an.ImageTooLargeError) as info:
        an.decode_base64(text)
    assert info.value.code in ("limits.width", "limits.height", "limits.pixels")
    with pytest.raises(an.ImageTooLargeError):
        an.decode_base64("data:image/png;base64," + text, limits=an.Limits(max_pixels=1000))


# ---- encode_base64 ---------------------------------------------------------------


def test_encode_base64_png_round_trip() -> None:
    rgb = photo(30, 41, 3, seed=8)
    text = an.encode_base64(rgb, "png")
    assert text == base64.b64encode(an.encode_png(rgb)).decode()
    assert np.array_equal(an.decode_base64(text), rgb)
    url = an.encode_base64(rgb, "png", data_url=True, compression=9)
    assert url.startswith("data:image/png;base64,iVBORw0KGgo")
    assert np.array_equal(an.decode_base64(url), rgb)
    bgr = an.encode_base64(rgb[:, :, ::-1], "png", mode="BGR")
    assert np.array_equal(an.decode_base64(bgr), rgb)


def test_encode_base64_jpeg() -> None:
    rgb = photo(48, 64, 3, seed=9)
    text = an.encode_base64(rgb, data_url=True, quality=80)
    assert text.startswith("data:image/jpeg;base64,/9j/")
    payload = base64.b64decode(text.split(",", 1)[1])
    assert payload == an.encode_jpeg(rgb, quality=80)
    assert np.array_equal(an.decode_base64(text), an.decode(payload))
    upper = an.encode_base64(rgb, "JPG", quality=80)  # type: ignore[arg-type]
    assert upper == text.split(",", 1)[1]


def test_encode_base64_errors() -> None:
    rgb = photo(8, 8, 3)
    with pytest.raises(an.ValidationError) as info:
        an.encode_base64(rgb, "gif")  # type: ignore[arg-type]
    assert info.value.code == "value.format"
    with pytest.raises(TypeError):
        an.encode_base64(rgb, "png", quality=80)


# ---- threads, stderr, leaks ------------------------------------------------------


def test_threads_match_serial(images: dict[str, bytes]) -> None:
    texts = [base64.b64encode(images[k]).decode() for k in ("jpeg", "png", "png_rgba")] * 8
    texts.append("A" * 4096 + "*")  # a malformed one among them
    big = random.Random(2).randbytes(300_000)
    serial = [an.decode_base64(t) if not t.endswith("*") else None for t in texts]

    def work(i: int) -> Any:
        t = texts[i % len(texts)]
        if t.endswith("*"):
            with pytest.raises(an.ValidationError):
                an.decode_base64(t)
            return None
        assert an.b64decode(an.b64encode(big)) == big
        return an.decode_base64(t)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, range(len(texts) * 4)))
    for i, got in enumerate(results):
        ref = serial[i % len(texts)]
        if ref is None:
            assert got is None
        else:
            assert np.array_equal(got, ref)


def test_nothing_on_stderr(capfd: pytest.CaptureFixture[str], images: dict[str, bytes]) -> None:
    for text, _ in MALFORMED:
        with pytest.raises(an.ValidationError):
            an.b64decode(text)
    with pytest.raises(an.DecodeError):
        an.decode_base64(base64.b64encode(images["jpeg"][:300]))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


LEAK_WORKER = MEMORY_PROBES + textwrap.dedent(r'''
    import base64, ctypes, io, json, os, sys
    import numpy as np
    from PIL import Image
    import amulet_native as an

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, "PNG"); png = buf.getvalue()
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, "JPEG"); jpg = buf.getvalue()
    P = base64.b64encode(png).decode()
    J = "data:image/jpeg;base64," + base64.encodebytes(jpg).decode()
    TRUNC = base64.b64encode(jpg[: len(jpg) // 2]).decode()
    BAD = P[:200] + "*" + P[201:]
    SMALL = an.Limits(max_bytes=100)
    BLOB = bytes(range(256)) * 40

    def expect(exc, fn, *a, **kw):
        try:
            fn(*a, **kw)
        except exc:
            return
        raise AssertionError(fn.__name__)

    def once():
        an.decode_base64(P)
        an.decode_base64(J, mode="L")
        an.decode_base64(P.encode(), scale="1/2")
        expect(an.ValidationError, an.decode_base64, BAD)
        expect(an.ValidationError, an.b64decode, "ab=c")
        expect(an.ValidationError, an.b64decode, "abc\u20ac")
        expect(an.ImageTooLargeError, an.decode_base64, P, limits=SMALL)
        expect(an.DecodeError, an.decode_base64, TRUNC)
        an.decode_base64(TRUNC, strict=False)
        an.b64decode(an.b64encode(BLOB, urlsafe=True))
        an.b64decode(" \n".join(P[i:i + 76] for i in range(0, len(P), 76)))

    import warnings
    warnings.simplefilter("ignore")
    for _ in range(500):
        once()
    n = int(sys.argv[1])
    marks = [(heap(), rss())]
    for _ in range(2):
        for _ in range(n):
            once()
        marks.append((heap(), rss()))
    print(json.dumps(marks))
''')


@pytest.mark.slow
def test_no_leaks() -> None:
    n = 2500  # x 11 calls per iteration, twice
    proc = subprocess.run(
        [sys.executable, "-c", LEAK_WORKER, str(n)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    marks = json.loads(proc.stdout)
    heap_growth = [marks[i + 1][0] - marks[i][0] for i in range(2)]
    rss_growth = [marks[i + 1][1] - marks[i][1] for i in range(2)]
    # A leak grows both halves; a one-time allocation shows in at most one.
    assert min(heap_growth) < 64 * 1024, heap_growth
    assert min(rss_growth) < 2 * 1024 * 1024, rss_growth
