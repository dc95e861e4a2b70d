"""Shared fixtures and image generators for the amulet_native test suite.

Every fixture image is made at test time (Pillow for JPEG, a small NumPy PNG
encoder below for PNG variants Pillow cannot write: 16-bit colour, Adam7,
tRNS on every colour type, eXIf).  Reference pixels come from Pillow, an
independent decoder, or from the very array that was encoded when the format is
lossless.

The conformance corpus is optional: ``corpus_dir`` looks in ``$AMULET_CORPUS``
then ``<repo>/../shared/corpus`` and skips with a clear reason when absent.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
import textwrap
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent

U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]


# ---- leak tests ---------------------------------------------------------------

#: Prelude of the leak-test subprocesses: ``heap()`` is glibc's count of bytes in
#: use (``mallinfo2``: arena + mmapped blocks), ``rss()`` the resident set size.
MEMORY_PROBES = textwrap.dedent('''
    import ctypes, os

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    PAGE = os.sysconf("SC_PAGE_SIZE")

    def heap():
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
''')


# ---- corpus -------------------------------------------------------------------


def find_corpus() -> Path | None:
    """The conformance corpus folder, or None when this machine has none."""
    env = os.environ.get("AMULET_CORPUS")
    # An explicit AMULET_CORPUS wins, even when it points nowhere (then: skip).
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    path = find_corpus()
    if path is None:
        where = os.environ.get("AMULET_CORPUS") or str(REPO_ROOT.parent / "shared" / "corpus")
        pytest.skip(
            f"conformance corpus not found at {where} (set AMULET_CORPUS or provide "
            "../shared/corpus next to the repository)"
        )
    return path


def corpus_subdir(name: str) -> Path:
    """A corpus sub-folder for parametrisation at collection time (may not exist)."""
    base = find_corpus()
    return (base / name) if base is not None else Path("/nonexistent-amulet-corpus") / name


# ---- pixel generators ---------------------------------------------------------


def photo(h: int, w: int, channels: int = 3, seed: int = 0) -> U8:
    """Photo-like content: smooth gradients, a hard edge and mild noise, so that
    JPEG exercises all DCT frequencies and chroma upsampling matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    planes = []
    for c in range(channels):
        fx, fy = 0.7 + 0.3 * c, 1.1 - 0.2 * c
        base = 128 + 90 * np.sin(x / max(w, 1) * 6.28 * fx + c) * np.cos(y / max(h, 1) * 6.28 * fy)
        base += np.where((x + 2 * y) % 23 < 11, 25.0, -25.0)
        base += rng.normal(0, 12, size=(h, w))
        planes.append(base)
    arr: U8 = np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)
    return arr


def noise(shape: tuple[int, ...], seed: int = 0, dtype: Any = np.uint8, high: int = 256) -> Any:
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, size=shape, dtype=np.uint64).astype(dtype)


# ---- JPEG (Pillow's encoder) ----------------------------------------------------


def jpeg_bytes(arr_or_img: Any, *, quality: int = 90, **save: Any) -> bytes:
    """Encode with Pillow.  ``subsampling``: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0."""
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    b = io.BytesIO()
    img.save(b, "JPEG", quality=quality, **save)
    return b.getvalue()


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def ycck_bytes(cmyk: U8) -> bytes:
    """A YCCK JPEG (Adobe transform 2) from CMYK pixels, made by libjpeg-turbo's
    TurboJPEG encoder: PyTurboJPEG when libturbojpeg is installed, else the copy
    bundled in simplejpeg.  Skips when neither is available."""
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG()
        return bytes(
            tj.encode(cmyk, quality=92, pixel_format=turbojpeg.TJPF_CMYK,
                      jpeg_subsample=turbojpeg.TJSAMP_444)
        )
    except (ImportError, RuntimeError, OSError):
        pass
    simplejpeg = pytest.importorskip(
        "simplejpeg", reason="no TurboJPEG encoder (PyTurboJPEG+libturbojpeg or simplejpeg)"
    )
    return bytes(simplejpeg.encode_jpeg(cmyk, quality=92, colorspace="CMYK",
                                        colorsubsampling="444"))


# ---- PNG (a small, independent encoder) --------------------------------------------

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))
CT_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF
    )


def png_ihdr(width: int, height: int, bit_depth: int = 8, color_type: int = 2,
             interlace: int = 0) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0,
                                          interlace))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _pack_rows(samples: npt.NDArray[Any], bit_depth: int) -> npt.NDArray[np.uint8]:
    """(h, w*c) samples -> (h, rowbytes) bytes, PNG bit packing (MSB first)."""
    h, n = samples.shape
    if bit_depth == 16:
        return np.ascontiguousarray(samples.astype(">u2")).view(np.uint8).reshape(h, n * 2)
    if bit_depth == 8:
        return samples.astype(np.uint8)
    per = 8 // bit_depth
    padded = np.zeros((h, -(-n // per) * per), np.uint8)
    padded[:, :n] = samples
    groups = padded.reshape(h, -1, per).astype(np.uint16)
    out = np.zeros(groups.shape[:2], np.uint16)
    for i in range(per):
        out |= groups[:, :, i] << (8 - bit_depth * (i + 1))
    return out.astype(np.uint8)


def png_filter_rows(raw: npt.NDArray[np.uint8], bpp: int) -> bytes:
    """Cycle filter types None, Sub, Up, Average, Paeth over the rows."""
    out = bytearray()
    prev = np.zeros(raw.shape[1], np.int32)
    for y, row8 in enumerate(raw):
        row = row8.astype(np.int32)
        ftype = y % 5
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]]) if bpp < len(row) else \
            np.zeros_like(row)
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]]) if bpp < len(row) else \
            np.zeros_like(row)
        if ftype == 0:
            f = row
        elif ftype == 1:
            f = row - left
        elif ftype == 2:
            f = row - prev
        elif ftype == 3:
            f = row - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
            f = row - pred
        out.append(ftype)
        out += (f & 0xFF).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


def png_bytes(
    samples: npt.NDArray[Any],
    color_type: int,
    bit_depth: int = 8,
    *,
    palette: npt.NDArray[np.uint8] | None = None,
    trns: bytes | None = None,
    interlace: bool = False,
    exif: bytes | None = None,
    exif_after_idat: bool = False,
) -> bytes:
    """Encode ``samples`` ((h, w) or (h, w, c), values already within bit_depth) as
    a PNG of the given colour type, with every filter type and optional Adam7."""
    arr = samples if samples.ndim == 3 else samples[:, :, None]
    h, w, c = arr.shape
    assert c == CT_CHANNELS[color_type], (c, color_type)
    bpp = max(1, c * bit_depth // 8)
    if interlace:
        data = b""
        for x0, y0, dx, dy in _ADAM7:
            sub = arr[y0::dy, x0::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            data += png_filter_rows(_pack_rows(sub.reshape(sub.shape[0], -1), bit_depth), bpp)
    else:
        data = png_filter_rows(_pack_rows(arr.reshape(h, w * c), bit_depth), bpp)
    out = PNG_SIG + png_ihdr(w, h, bit_depth, color_type, int(interlace))
    if exif is not None and not exif_after_idat:
        out += png_chunk(b"eXIf", exif)
    if palette is not None:
        out += png_chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(data, 6))
    if exif is not None and exif_after_idat:
        out += png_chunk(b"eXIf", exif)
    return out + png_chunk(b"IEND", b"")


# ---- Pillow as the reference decoder ------------------------------------------------


def pil_open(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _pil_convert(im: Image.Image, mode: str) -> Image.Image:
    with warnings.catch_warnings():
        # "Palette images with Transparency expressed in bytes should be converted
        # to RGBA images": advice to Pillow users, not a problem with the file.
        warnings.simplefilter("ignore", UserWarning)
        return im.convert(mode)


def pil_decode(data: bytes, mode: str = "RGB") -> npt.NDArray[Any]:
    """What Pillow returns for ``mode``; BGR is Pillow's RGB reversed."""
    im = pil_open(data)
    if mode == "BGR":
        return np.ascontiguousarray(np.asarray(_pil_convert(im, "RGB"))[:, :, ::-1])
    return np.asarray(_pil_convert(im, mode))


def assert_same(actual: npt.NDArray[Any], expected: npt.NDArray[Any], what: str = "") -> None:
    """Bit-exact equality with a readable failure."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if not np.array_equal(actual, expected):
        diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
        idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise AssertionError(
            f"{what}: {int(np.count_nonzero(diff))} samples differ, max |diff| {int(diff.max())} "
            f"at {idx}"
        )


def max_abs_diff(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.fixture(autouse=True)
def _restore_default_limits() -> Any:
    """No test may leak a changed process-wide default."""
    import amulet_native as an

    before = an.get_default_limits()
    yield
    an.set_default_limits(before)


# ---- a NumPy reference for the PNGs made by png_bytes ---------------------------


def luma(rgb: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Pillow's L conversion (ITU-R 601-2, 16-bit fixed point, rounded)."""
    r, g, b = (rgb[..., i].astype(np.uint64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(rgb.dtype)


def png_reference(
    samples: npt.NDArray[Any],
    color_type: int,
    bit_depth: int,
    mode: str,
    *,
    palette: npt.NDArray[np.uint8] | None = None,
    trns: bytes | None = None,
    depth16: bool = False,
) -> npt.NDArray[Any]:
    """What the PNG specification says the pixels of a png_bytes() image are, in
    ``mode``: low bit depths scaled by replication (1 -> 255, 2 -> 85, 4 -> 17),
    16 -> 8 bits by the high byte, 8 -> 16 bits by x257, tRNS keys compared with
    the raw samples, no gamma."""
    arr = samples if samples.ndim == 3 else samples[:, :, None]
    arr = arr.astype(np.uint32)
    h, w, _ = arr.shape
    maxval = 65535 if depth16 else 255

    def scale(v: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if bit_depth == 16:
            return v if depth16 else v >> 8
        v8 = v * (255 // ((1 << bit_depth) - 1))
        return v8 * 257 if depth16 else v8

    alpha = np.full((h, w), maxval, np.uint32)
    if color_type == 3:
        assert palette is not None
        pal = palette.astype(np.uint32) * (257 if depth16 else 1)
        rgb: npt.NDArray[Any] = pal[arr[:, :, 0]]
        if trns is not None:
            table = np.full(256, 255, np.uint32)
            table[: len(trns)] = np.frombuffer(trns, np.uint8)
            alpha = table[arr[:, :, 0]] * (257 if depth16 else 1)
        colour = True
    else:
        colour = color_type in (2, 6)
        nc = 3 if colour else 1
        rgb = scale(arr[:, :, :nc])
        if color_type in (4, 6):
            alpha = scale(arr[:, :, nc])
        elif trns is not None:
            key = np.frombuffer(trns, ">u2").astype(np.uint32)
            hit = np.all(arr[:, :, :nc] == key[:nc], axis=-1)
            alpha = np.where(hit, 0, maxval).astype(np.uint32)
        if not colour:
            rgb = np.repeat(rgb, 3, axis=-1)
    dtype = np.uint16 if depth16 else np.uint8
    rgb = rgb.astype(dtype)
    a = alpha.astype(dtype)
    if mode in ("L", "LA"):
        grey = luma(rgb) if colour else rgb[:, :, 0]
        return grey if mode == "L" else np.stack([grey, a], axis=-1)
    if mode == "RGB":
        return rgb
    if mode == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return np.concatenate([rgb, a[:, :, None]], axis=-1)


def block_mean(img: npt.NDArray[Any], d: int) -> npt.NDArray[Any]:
    """Area average over d x d blocks (partial blocks at the right/bottom edge
    average what they hold), rounded half up: the reference for PNG scaling."""
    h, w = img.shape[:2]
    a = img.astype(np.uint64)
    sums = np.add.reduceat(np.add.reduceat(a, np.arange(0, h, d), axis=0), np.arange(0, w, d),
                           axis=1)
    rows = np.minimum(d, h - np.arange(0, h, d)).astype(np.uint64)
    cols = np.minimum(d, w - np.arange(0, w, d)).astype(np.uint64)
    count = rows[:, None] * cols[None, :]
    if img.ndim == 3:
        count = count[:, :, None]
    out: npt.NDArray[Any] = ((sums + count // 2) // count).astype(img.dtype)
    return out


# ---- concurrency ------------------------------------------------------------------


@contextlib.contextmanager
def switch_often() -> Iterator[None]:
    """Let the interpreter switch threads every microsecond inside the block (the
    previous interval is restored on exit), so races show up in a few iterations."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.fixture
def fast_switch() -> Iterator[None]:
    """The whole test runs under :func:`switch_often`."""
    with switch_often():
        yield


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` for i in range(n) on n real threads; fail if one hangs
    (60 s each) and re-raise the first exception a thread raised."""
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "threads hung"
    if errors:
        raise errors[0]


# ---- testing an installed wheel (.ci/wheel-check) -------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    """With AMULET_EXPECT_INSTALLED=<site-packages>, refuse to run unless
    amulet_native (and its extension) come from there, not from a source tree."""
    site = os.environ.get("AMULET_EXPECT_INSTALLED")
    if not site:
        return
    import amulet_native
    import amulet_native._core

    expected = os.path.realpath(os.path.join(site, "amulet_native"))
    for mod in (amulet_native, amulet_native._core):
        where = os.path.dirname(os.path.realpath(mod.__file__ or ""))
        if where != expected:
            raise pytest.UsageError(
                f"AMULET_EXPECT_INSTALLED: {mod.__name__} was imported from {where}, "
                f"not from the installed wheel in {expected}"
            )
    print(f"amulet_native under test: the installed wheel in {expected}")
