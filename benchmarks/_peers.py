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
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
from _baseline import Baseline

import amulet_native as an

Decoder = Callable[[bytes], Any]


def reference_for(peer: str) -> str | None:
    """The amulet_native variant a peer is paired with (None for the reference)."""
    if peer == "amulet_native":
        return None
    if peer == "OpenCV (BGR)":
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
