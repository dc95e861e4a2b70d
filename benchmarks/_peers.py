"""The decoders under comparison, each a callable ``bytes -> result``.

Every peer is looked up lazily: one that cannot be imported (or whose native
library is missing) is reported as unavailable with the reason, and its
benchmarks skip cleanly.  Fairness choices, stated once:

* All peers decode single-threaded.  OpenCV's ``imdecode`` does not use its
  thread pool for JPEG/PNG, but ``cv2.setNumThreads(1)`` is set anyway so no
  worker threads compete on this 2-core machine.
* OpenCV returns BGR.  It is compared with ``amulet_native`` ``mode="BGR"``
  (like for like); the RGB row is shown next to it.
* JPEG settings are the libjpeg defaults everywhere (accurate integer DCT,
  fancy upsampling): simplejpeg ``fastdct=False, fastupsample=False`` and
  PyTurboJPEG ``flags=0`` are their defaults.
* Pillow is measured exactly as the spec writes it, including the copy that
  ``np.asarray`` makes of the decoded image.

Pipeline peers (batch decode, thumbnail, encode, base64) follow at the end of
the file, each section stating its own fairness choices.
"""

from __future__ import annotations

import base64
import binascii
import io
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from _baseline import Baseline

import amulet_native as an

Decoder = Callable[[bytes], Any]


def reference_for(peer: str) -> str | None:
    """The amulet_native variant a peer is paired with (None for the reference)."""
    if peer == "amulet_native":
        return None
    if peer.endswith("(BGR)"):
        return "amulet_native BGR"
    return "amulet_native"


class Unavailable(Exception):
    """A peer that cannot run here; the message says why."""


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise Unavailable(f"Pillow not importable: {exc}") from None
    return Image


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise Unavailable(f"OpenCV not importable: {exc}") from None
    cv2.setNumThreads(1)
    return cv2


def _simplejpeg() -> Any:
    try:
        import simplejpeg
    except ImportError as exc:
        raise Unavailable(f"simplejpeg not importable: {exc}") from None
    return simplejpeg


def _turbojpeg() -> Any:
    try:
        import turbojpeg
    except ImportError as exc:
        raise Unavailable(f"PyTurboJPEG not importable: {exc}") from None
    try:
        return turbojpeg, turbojpeg.TurboJPEG()
    except (RuntimeError, OSError) as exc:  # libturbojpeg missing or too old
        first = str(exc).strip().splitlines()[0]
        raise Unavailable(f"PyTurboJPEG cannot load libturbojpeg: {first}") from None


def _pyspng() -> Any:
    try:
        import pyspng
    except ImportError as exc:
        raise Unavailable(f"pyspng not importable: {exc}") from None
    return pyspng


_baseline: Baseline | None = None


def baseline() -> Baseline:
    global _baseline
    if _baseline is None:
        try:
            _baseline = Baseline()
        except (OSError, subprocess.CalledProcessError) as exc:  # no gcc or -dev headers
            raise Unavailable(f"raw C baseline did not build: {exc}") from None
    return _baseline


def _check(status: int) -> int:
    if status != 0:
        raise RuntimeError(f"baseline decoder failed with status {status}")
    return status


# ---- full-size decode to an 8-bit colour array ----


def jpeg_decoder(peer: str) -> Decoder:
    if peer == "amulet_native":
        return lambda b: an.decode(b)
    if peer == "amulet_native BGR":
        return lambda b: an.decode(b, mode="BGR")
    if peer == "raw C libjpeg":
        bl = baseline()
        return lambda b: _check(bl.jpeg(b))
    if peer == "Pillow":
        image = _pillow()
        return lambda b: np.asarray(image.open(io.BytesIO(b)).convert("RGB"))
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        flag = cv2.IMREAD_COLOR
        return lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flag)
    if peer == "simplejpeg":
        sj = _simplejpeg()
        return lambda b: sj.decode_jpeg(b, colorspace="RGB")
    if peer == "PyTurboJPEG":
        tjmod, tj = _turbojpeg()
        fmt = tjmod.TJPF_RGB
        return lambda b: tj.decode(b, pixel_format=fmt)
    raise KeyError(peer)


def png_decoder(peer: str) -> Decoder:
    if peer == "amulet_native":
        return lambda b: an.decode(b)
    if peer == "amulet_native BGR":
        return lambda b: an.decode(b, mode="BGR")
    if peer == "raw C libpng":
        bl = baseline()
        return lambda b: _check(bl.png(b))
    if peer == "Pillow":
        image = _pillow()
        return lambda b: np.asarray(image.open(io.BytesIO(b)).convert("RGB"))
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        flag = cv2.IMREAD_UNCHANGED
        return lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flag)
    if peer == "pyspng":
        spng = _pyspng()
        return lambda b: spng.load(b)
    raise KeyError(peer)


JPEG_PEERS = (
    "amulet_native",
    "amulet_native BGR",
    "raw C libjpeg",
    "Pillow",
    "OpenCV (BGR)",
    "simplejpeg",
    "PyTurboJPEG",
)
PNG_PEERS = (
    "amulet_native",
    "amulet_native BGR",
    "raw C libpng",
    "Pillow",
    "OpenCV (BGR)",
    "pyspng",
)


# ---- header only ----

PROBE_PEERS = ("amulet_native", "Pillow")


def probe_decoder(peer: str) -> Decoder:
    if peer == "amulet_native":
        return an.probe
    if peer == "Pillow":
        image = _pillow()
        return lambda b: image.open(io.BytesIO(b)).size
    raise KeyError(peer)


# ---- reduced decode of the mosaic to about 384x256 ----

MAX_SIZE = (384, 256)
MAX_SIZE_PEERS = (
    "amulet_native",
    "raw C libjpeg",
    "Pillow",
    "OpenCV (BGR)",
    "simplejpeg",
    "PyTurboJPEG",
)


def max_size_decoder(peer: str) -> Decoder:
    w, h = MAX_SIZE
    if peer == "amulet_native":
        return lambda b: an.decode(b, max_size=MAX_SIZE)
    if peer == "raw C libjpeg":
        bl = baseline()
        return lambda b: _check(bl.jpeg(b, denom=8))
    if peer == "Pillow":
        image = _pillow()

        def pillow_draft(b: bytes) -> Any:
            im = image.open(io.BytesIO(b))
            im.draft("RGB", MAX_SIZE)
            rgb = im.convert("RGB")
            if rgb.size != MAX_SIZE:  # draft only scales by 1/2^n; finish honestly
                rgb = rgb.resize(MAX_SIZE, image.Resampling.BILINEAR)
            return np.asarray(rgb)

        return pillow_draft
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        flag = cv2.IMREAD_REDUCED_COLOR_8
        return lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flag)
    if peer == "simplejpeg":
        sj = _simplejpeg()
        return lambda b: sj.decode_jpeg(b, colorspace="RGB", min_width=w, min_height=h)
    if peer == "PyTurboJPEG":
        tjmod, tj = _turbojpeg()
        fmt = tjmod.TJPF_RGB
        return lambda b: tj.decode(b, pixel_format=fmt, scaling_factor=(1, 8))
    raise KeyError(peer)


# ======================================================================
# Pipeline peers
# ======================================================================


def _api(name: str) -> Any:
    """amulet_native.<name>, or Unavailable while that API has not landed."""
    fn = getattr(an, name, None)
    if fn is None:
        raise Unavailable(f"amulet_native.{name} is not available in this build")
    return fn


# ---- decode_many: a batch of 64 JPEGs (768x512) per call ----
#
# amulet_native decodes the batch on its native pthread pool with
# threads=available_cpus() (the reference) and with threads=1 (same call,
# one thread: the ratio of the two is the parallel speed-up).  The peers get
# the same number of threads their own way:
#
# * Pillow and OpenCV in a ThreadPoolExecutor(max_workers=cpus) created once,
#   outside the timing (Pillow releases the GIL while decoding and converting,
#   OpenCV's Python binding around imdecode).
# * "OpenCV setNumThreads (BGR)": the literal "OpenCV with its own threads",
#   cv2.setNumThreads(cpus) and imdecode in a loop.  imdecode does not use the
#   OpenCV thread pool for JPEG, so this runs serially; it is shown to make
#   that visible, and the executor row is the fair parallel OpenCV figure.
# * "amulet_native decode in ThreadPoolExecutor": amulet_native's single-image
#   decode (GIL released) fanned out by Python threads: what the native pool
#   saves over doing it in Python.

BatchDecoder = Callable[[Sequence[bytes]], Any]
BATCH_PEERS = (
    "amulet_native",
    "amulet_native BGR",
    "amulet_native threads=1",
    "amulet_native decode in ThreadPoolExecutor",
    "Pillow ThreadPoolExecutor",
    "OpenCV ThreadPoolExecutor (BGR)",
    "OpenCV setNumThreads (BGR)",
)

_executors: dict[int, ThreadPoolExecutor] = {}


def executor(workers: int) -> ThreadPoolExecutor:
    """One long-lived executor per size, so thread start-up is never timed."""
    if workers not in _executors:
        _executors[workers] = ThreadPoolExecutor(max_workers=workers)
    return _executors[workers]


def cpus() -> int:
    return int(_api("available_cpus")())


def batch_decoder(peer: str) -> BatchDecoder:
    n = cpus()
    if peer in ("amulet_native", "amulet_native BGR", "amulet_native threads=1"):
        decode_many = _api("decode_many")
        mode = "BGR" if peer.endswith("BGR") else "RGB"
        threads = 1 if peer.endswith("threads=1") else n
        return lambda items: decode_many(items, mode, threads=threads)
    if peer == "amulet_native decode in ThreadPoolExecutor":
        pool = executor(n)
        one = jpeg_decoder("amulet_native")
        return lambda items: list(pool.map(one, items))
    if peer == "Pillow ThreadPoolExecutor":
        pool = executor(n)
        one = jpeg_decoder("Pillow")
        return lambda items: list(pool.map(one, items))
    if peer == "OpenCV ThreadPoolExecutor (BGR)":
        pool = executor(n)
        one = jpeg_decoder("OpenCV (BGR)")  # also sets cv2.setNumThreads(1)
        return lambda items: list(pool.map(one, items))
    if peer == "OpenCV setNumThreads (BGR)":
        cv2 = _cv2()
        cv2.setNumThreads(n)  # every later _cv2() call sets it back to 1
        flag = cv2.IMREAD_COLOR
        return lambda items: [cv2.imdecode(np.frombuffer(b, np.uint8), flag) for b in items]
    raise KeyError(peer)


# ---- thumbnail: 256x256 box ("contain") from the 3072x2048 mosaic JPEG ----
#
# Every peer decodes at the smallest DCT scale that still covers the result
# (1/8 here: 384x256 for a 256x171 thumbnail) and then resamples:
#
# * Pillow exactly as its docs recommend: draft("RGB", box) + thumbnail(box)
#   (BICUBIC with reducing_gap=2.0) + np.asarray.
# * OpenCV: imdecode(IMREAD_REDUCED_COLOR_<n>) with the largest n that still
#   covers the result, then cv2.resize(INTER_AREA): BGR, so it is compared with
#   amulet_native thumbnail(mode="BGR").
# * simplejpeg (min_width/min_height) and PyTurboJPEG (scaling_factor), each
#   followed by cv2.resize(INTER_AREA): the same two steps with other wrappers.

THUMB_BOX = (256, 256)
THUMB_PEERS = (
    "amulet_native",
    "amulet_native BGR",
    "Pillow draft + thumbnail",
    "OpenCV (BGR)",
    "simplejpeg + cv2.resize",
    "PyTurboJPEG + cv2.resize",
)


def contain(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The thumbnail size for ``size`` inside ``box`` (never enlarged; Pillow's
    rounding for the 3:2 mosaic: (256, 171))."""
    w, h = size
    if w <= box[0] and h <= box[1]:
        return size
    scale = min(box[0] / w, box[1] / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def dct_denominator(size: tuple[int, int], out: tuple[int, int]) -> int:
    """The largest 1/n (n in 1, 2, 4, 8) whose decode still covers ``out``."""
    return max(n for n in (1, 2, 4, 8) if -(-size[0] // n) >= out[0] and -(-size[1] // n) >= out[1])


def thumbnail_maker(peer: str, size: tuple[int, int]) -> Decoder:
    out = contain(size, THUMB_BOX)
    n = dct_denominator(size, out)
    if peer in ("amulet_native", "amulet_native BGR"):
        thumbnail = _api("thumbnail")
        mode = "BGR" if peer.endswith("BGR") else "RGB"
        return lambda b: thumbnail(b, THUMB_BOX, mode=mode)
    if peer == "Pillow draft + thumbnail":
        image = _pillow()

        def pillow_thumb(b: bytes) -> Any:
            im = image.open(io.BytesIO(b))
            im.draft("RGB", THUMB_BOX)
            im.thumbnail(THUMB_BOX)
            return np.asarray(im)

        return pillow_thumb
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        flag = {
            1: cv2.IMREAD_COLOR,
            2: cv2.IMREAD_REDUCED_COLOR_2,
            4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8,
        }[n]
        area = cv2.INTER_AREA
        return lambda b: cv2.resize(
            cv2.imdecode(np.frombuffer(b, np.uint8), flag), out, interpolation=area
        )
    if peer == "simplejpeg + cv2.resize":
        sj, cv2 = _simplejpeg(), _cv2()
        area = cv2.INTER_AREA
        return lambda b: cv2.resize(
            sj.decode_jpeg(b, colorspace="RGB", min_width=out[0], min_height=out[1]),
            out,
            interpolation=area,
        )
    if peer == "PyTurboJPEG + cv2.resize":
        (tjmod, tj), cv2 = _turbojpeg(), _cv2()
        fmt, area = tjmod.TJPF_RGB, cv2.INTER_AREA
        return lambda b: cv2.resize(
            tj.decode(b, pixel_format=fmt, scaling_factor=(1, n)), out, interpolation=area
        )
    raise KeyError(peer)


# ---- encode: a decoded picture -> JPEG (q85, 4:2:0) or PNG (zlib level 6) ----
#
# Same settings everywhere: JPEG quality 85, 4:2:0, baseline, Huffman tables
# not optimised, accurate integer DCT (Pillow, OpenCV and PyTurboJPEG flags=0
# default to it; simplejpeg is given fastdct=False).  PNG: zlib level 6
# (OpenCV must be told: its default is level 1 with Z_RLE), each library's
# default filter choice.  OpenCV encodes BGR and is compared with
# amulet_native mode="BGR" on the BGR copy; every other peer gets the RGB
# array.  Pillow is timed as written, Image.fromarray(a).save(BytesIO(), ...).
# Output sizes are recorded next to the times.

Encoder = Callable[[Any], Any]  # Pixels -> encoded bytes (or a NumPy buffer)
JPEG_ENCODE_PEERS = (
    "amulet_native",
    "amulet_native BGR",
    "Pillow",
    "OpenCV (BGR)",
    "simplejpeg",
    "PyTurboJPEG",
)
PNG_ENCODE_PEERS = ("amulet_native", "amulet_native BGR", "Pillow", "OpenCV (BGR)")
JPEG_QUALITY = 85
PNG_LEVEL = 6


def jpeg_encoder(peer: str) -> Encoder:
    q = JPEG_QUALITY
    if peer == "amulet_native":
        enc = _api("encode_jpeg")
        return lambda p: enc(p.rgb, quality=q, subsampling="4:2:0")
    if peer == "amulet_native BGR":
        enc = _api("encode_jpeg")
        return lambda p: enc(p.bgr, quality=q, subsampling="4:2:0", mode="BGR")
    if peer == "Pillow":
        image = _pillow()

        def pillow_jpeg(p: Any) -> bytes:
            buf = io.BytesIO()
            image.fromarray(p.rgb).save(buf, "JPEG", quality=q, subsampling=2)
            return buf.getvalue()

        return pillow_jpeg
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        params = [cv2.IMWRITE_JPEG_QUALITY, q]
        return lambda p: cv2.imencode(".jpg", p.bgr, params)[1]
    if peer == "simplejpeg":
        sj = _simplejpeg()
        return lambda p: sj.encode_jpeg(
            p.rgb, quality=q, colorspace="RGB", colorsubsampling="420", fastdct=False
        )
    if peer == "PyTurboJPEG":
        tjmod, tj = _turbojpeg()
        fmt, samp = tjmod.TJPF_RGB, tjmod.TJSAMP_420
        return lambda p: tj.encode(p.rgb, quality=q, pixel_format=fmt, jpeg_subsample=samp, flags=0)
    raise KeyError(peer)


def png_encoder(peer: str) -> Encoder:
    level = PNG_LEVEL
    if peer == "amulet_native":
        enc = _api("encode_png")
        return lambda p: enc(p.rgb, compression=level)
    if peer == "amulet_native BGR":
        enc = _api("encode_png")
        return lambda p: enc(p.bgr, compression=level, mode="BGR")
    if peer == "Pillow":
        image = _pillow()

        def pillow_png(p: Any) -> bytes:
            buf = io.BytesIO()
            image.fromarray(p.rgb).save(buf, "PNG", compress_level=level)
            return buf.getvalue()

        return pillow_png
    if peer == "OpenCV (BGR)":
        cv2 = _cv2()
        params = [cv2.IMWRITE_PNG_COMPRESSION, level]
        return lambda p: cv2.imencode(".png", p.bgr, params)[1]
    raise KeyError(peer)


# ---- base64 codec on 1 MiB of random bytes ----
#
# amulet_native.b64encode returns str; the stdlib and pybase64.b64encode return
# bytes, so the str-returning variants (binascii + .decode("ascii"),
# pybase64.b64encode_as_string) are shown too.  Decoding reads the encoded
# text as bytes.  amulet_native validates the alphabet and reports the offset
# of a bad character; binascii.a2b_base64 (and base64.b64decode) by default
# skip non-alphabet characters instead, so binascii with strict_mode=True
# (Python >= 3.11) is the like-for-like validating decoder.  pybase64 is the
# speed reference (SIMD); its documented fast path is validate=True.

Codec = Callable[[Any], Any]
B64ENCODE_PEERS = (
    "amulet_native",
    "base64.b64encode",
    "binascii.b2a_base64",
    "binascii.b2a_base64 + decode (str)",
    "pybase64.b64encode",
    "pybase64.b64encode_as_string (str)",
)
B64DECODE_PEERS = (
    "amulet_native",
    "base64.b64decode",
    "binascii.a2b_base64",
    "binascii.a2b_base64 strict",
    "pybase64.b64decode validate",
)


def _pybase64() -> Any:
    try:
        import pybase64
    except ImportError as exc:
        raise Unavailable(f"pybase64 not importable: {exc}") from None
    return pybase64


def b64encoder(peer: str) -> Codec:
    if peer == "amulet_native":
        return _api("b64encode")  # type: ignore[no-any-return]
    if peer == "base64.b64encode":
        return base64.b64encode
    if peer == "binascii.b2a_base64":
        return lambda b: binascii.b2a_base64(b, newline=False)
    if peer == "binascii.b2a_base64 + decode (str)":
        return lambda b: binascii.b2a_base64(b, newline=False).decode("ascii")
    if peer == "pybase64.b64encode":
        return _pybase64().b64encode  # type: ignore[no-any-return]
    if peer == "pybase64.b64encode_as_string (str)":
        return _pybase64().b64encode_as_string  # type: ignore[no-any-return]
    raise KeyError(peer)


def b64decoder(peer: str) -> Codec:
    if peer == "amulet_native":
        return _api("b64decode")  # type: ignore[no-any-return]
    if peer == "base64.b64decode":
        return base64.b64decode
    if peer == "binascii.a2b_base64":
        return binascii.a2b_base64
    if peer == "binascii.a2b_base64 strict":
        return lambda s: binascii.a2b_base64(s, strict_mode=True)
    if peer == "pybase64.b64decode validate":
        pb = _pybase64()
        return lambda s: pb.b64decode(s, validate=True)
    raise KeyError(peer)


# ---- images as base64 text (JSON bodies, data URLs) ----
#
# decode_base64: base64 text (str, as it comes out of a JSON body) of a q90
# JPEG to RGB pixels; the peers decode the text to bytes first, then decode
# the image.  encode_base64: RGB pixels to base64 text (str) of a q85 JPEG.

B64IMAGE_DECODE_PEERS = (
    "amulet_native",
    "binascii + amulet_native.decode",
    "pybase64 + amulet_native.decode",
    "base64 + Pillow",
)
B64IMAGE_ENCODE_PEERS = (
    "amulet_native",
    "amulet_native.encode_jpeg + binascii",
    "Pillow + base64",
)


def b64image_decoder(peer: str) -> Decoder:
    if peer == "amulet_native":
        return _api("decode_base64")  # type: ignore[no-any-return]
    if peer == "binascii + amulet_native.decode":
        return lambda s: an.decode(binascii.a2b_base64(s))
    if peer == "pybase64 + amulet_native.decode":
        pb = _pybase64()
        return lambda s: an.decode(pb.b64decode(s, validate=True))
    if peer == "base64 + Pillow":
        pillow = jpeg_decoder("Pillow")
        return lambda s: pillow(base64.b64decode(s))
    raise KeyError(peer)


def b64image_encoder(peer: str) -> Encoder:
    q = JPEG_QUALITY
    if peer == "amulet_native":
        enc = _api("encode_base64")
        return lambda p: enc(p.rgb, "jpeg", quality=q)
    if peer == "amulet_native.encode_jpeg + binascii":
        jpeg = jpeg_encoder("amulet_native")
        return lambda p: binascii.b2a_base64(jpeg(p), newline=False).decode("ascii")
    if peer == "Pillow + base64":
        pillow = jpeg_encoder("Pillow")
        return lambda p: base64.b64encode(pillow(p)).decode("ascii")
    raise KeyError(peer)
