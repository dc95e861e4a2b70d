"""Encoding NumPy arrays as JPEG, PNG or WebP bytes.

Thin wrappers over :mod:`amulet_native._core`: they check the keyword options
and map them to the native codes; the native code reads the array in place
(any strides, no contiguous copy) and encodes it with the GIL released.
Example::

    import amulet_native as an

    rgb = an.decode(upload)
    body = an.encode_jpeg(rgb[::2, ::2], quality=80)       # strided views are fine
    lossless = an.encode_png(frame_bgr, mode="BGR")          # OpenCV channel order
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import ValidationError

__all__ = ["Subsampling", "encode_jpeg", "encode_png", "encode_webp"]

Subsampling = Literal["4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1"]
EncodeMode = Literal["RGB", "BGR"]

# Must match an_subsampling in csrc/core/image/an_encode.h.
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2, "4:4:0": 3, "4:1:1": 4}
_MODES = ("RGB", "BGR")
_ALPHA = ("error", "drop")


def _as_array(arr: Any) -> npt.NDArray[Any]:
    # ndarrays (views included) pass through untouched; anything else that
    # NumPy understands (e.g. a PIL image) is converted once.
    return arr if isinstance(arr, np.ndarray) else np.asarray(arr)


def _int_option(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (
        low <= value <= high
    ):
        raise ValidationError(
            f"{name} must be an integer in {low}..{high}, got {value!r}",
            code="value.invalid",
            field=name,
        )
    return int(value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}",
            code="value.invalid",
            field=name,
        )
    return str(value)


def encode_jpeg(
    arr: npt.ArrayLike,
    *,
    quality: int = 85,
    subsampling: Subsampling = "4:2:0",
    progressive: bool = False,
    optimize: bool = False,
    mode: EncodeMode = "RGB",
    alpha: Literal["error", "drop"] = "error",
) -> bytes:
    """Encode a uint8 image as a JFIF JPEG and return the bytes.

    ``arr`` is a uint8 ndarray (or anything ``numpy.asarray`` turns into one,
    such as a PIL image), ``(H, W)`` grey or ``(H, W, 3)`` colour, in any
    memory layout;
    ``(H, W, 4)`` (and ``(H, W, 2)`` grey + alpha) only with ``alpha="drop"``,
    since JPEG cannot store alpha.  ``mode="BGR"`` means the colour channels are
    in B, G, R(, A) order (OpenCV's).  ``quality`` is libjpeg's 1..100 scale
    with baseline-compatible tables; ``subsampling`` is the chroma sampling
    (ignored for grey).  ``progressive`` writes libjpeg's standard progressive
    script; ``optimize`` computes optimal Huffman tables (smaller, slower).
    Both go through the libjpeg API the same way Pillow's ``Image.save(...,
    "JPEG")`` does: at equal settings the files measured byte-identical.

    Raises :class:`ValidationError`: code ``"value.array"`` for an unsupported
    dtype, shape or size (empty, or a side over 65500), ``"value.invalid"`` for
    a bad option (``.field`` names it); :class:`ProcessingError`
    ``"encode.failed"`` if libjpeg fails.

    >>> data = encode_jpeg(np.zeros((48, 64, 3), np.uint8), quality=90)
    >>> data[:2]
    b'\\xff\\xd8'
    """
    q = _int_option("quality", quality, 1, 100)
    sub = _SUBSAMPLING.get(subsampling) if isinstance(subsampling, str) else None
    if sub is None:
        raise ValidationError(
            f"subsampling must be one of {', '.join(map(repr, _SUBSAMPLING))}, "
            f"got {subsampling!r}",
            code="value.invalid",
            field="subsampling",
        )
    bgr = _choice("mode", mode, _MODES) == "BGR"
    drop = _choice("alpha", alpha, _ALPHA) == "drop"
    return _core.encode_jpeg(
        _as_array(arr), q, sub, bool(progressive), bool(optimize), bgr, drop
    )


def encode_png(
    arr: npt.ArrayLike,
    *,
    compression: int = 6,
    mode: EncodeMode = "RGB",
) -> bytes:
    """Encode an image losslessly as PNG and return the bytes.

    ``arr`` is ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 2)`` grey + alpha,
    ``(H, W, 3)`` colour or ``(H, W, 4)`` colour + alpha, in any memory layout;
    uint8 gives an 8-bit PNG, uint16 (either byte order) a 16-bit one.  ``mode="BGR"`` means
    the colour channels are in B, G, R(, A) order.  ``compression`` is the zlib
    level 0..9 (0 stores without compression or row filters).

    Raises :class:`ValidationError` (``"value.array"`` / ``"value.invalid"``)
    like :func:`encode_jpeg`, :class:`ProcessingError` ``"encode.failed"`` if
    libpng fails.

    >>> import amulet_native as an
    >>> gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> bool((an.decode(encode_png(gray), mode="L") == gray).all())
    True
    """
    level = _int_option("compression", compression, 0, 9)
    bgr = _choice("mode", mode, _MODES) == "BGR"
    return _core.encode_png(_as_array(arr), level, bgr)


def encode_webp(
    arr: npt.ArrayLike,
    *,
    quality: float = 80,
    lossless: bool = False,
    method: int = 4,
    mode: EncodeMode = "RGB",
) -> bytes:
    """Encode a uint8 image as WebP (libwebp) and return the bytes.

    ``arr`` is ``(H, W)`` grey, ``(H, W, 3)`` colour or ``(H, W, 4)`` colour +
    alpha (grey is stored as colour: WebP has no grey mode), in any layout.
    ``quality`` 0..100 (lossy quality; with ``lossless`` the compression
    effort), ``method`` 0 (fast) .. 6 (smallest).  Lossless output is exact,
    the colour under fully transparent pixels included.  Defaults as Pillow's
    ``Image.save(..., "WEBP")``.

    >>> import amulet_native as an
    >>> rgb = np.zeros((8, 8, 3), np.uint8)
    >>> bool((an.decode(encode_webp(rgb, lossless=True)) == rgb).all())
    True
    """
    if isinstance(quality, bool) or not isinstance(quality, (int, float, np.number)) or not (
        0 <= quality <= 100
    ):
        raise ValidationError(
            f"quality must be a number in 0..100, got {quality!r}",
            code="value.invalid",
            field="quality",
        )
    m = _int_option("method", method, 0, 6)
    bgr = _choice("mode", mode, _MODES) == "BGR"
    a = _as_array(arr)
    if a.dtype != np.uint8:
        raise ValidationError(
            f"array dtype must be uint8, got {a.dtype}", code="value.array", field="arr"
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 2:
        a = np.concatenate([np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1:]], axis=2)
    return _core.encode_webp(np.ascontiguousarray(a), float(quality), bool(lossless), m, bgr)
