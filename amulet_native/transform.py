"""Resizing arrays and making thumbnails from encoded images.

Both run natively with the GIL released.  ``resize`` reads any NumPy layout in
place (slices, crops, flips, transposes: no copy) and returns a new C-contiguous
array.  ``thumbnail`` never decodes a JPEG at full size when DCT scaling can
deliver a smaller image that still covers the result.  Example::

    import amulet_native as an

    small = an.resize(rgb, (320, 240))                   # area averaging
    smooth = an.resize(rgb, (1024, 768), method="bilinear")
    thumb = an.thumbnail(upload, (256, 256))             # fits inside 256x256
    square = an.thumbnail(upload, (256, 256), fit="cover")  # exactly 256x256
"""

from __future__ import annotations

import math
import operator
from typing import Any, Literal

import numpy.typing as npt

from . import _core
from .errors import ImageTooLargeError, ValidationError
from .image import Limits, Mode, Source, _read_source, decode, get_default_limits, probe

__all__ = ["Fit", "ResizeMethod", "contain_size", "resize", "thumbnail"]

ResizeMethod = Literal["area", "bilinear"]
Fit = Literal["contain", "cover"]

_METHODS = {"area": 1, "bilinear": 2}
_MAX_SIDE = 2**31 - 1


def _check_size(size: Any, field: str) -> tuple[int, int]:
    """(width, height) as two ints in [1, 2**31 - 1], or ValidationError."""
    try:
        if isinstance(size, (str, bytes)):
            raise TypeError
        w, h = size
        if isinstance(w, bool) or isinstance(h, bool):
            raise TypeError
        w, h = operator.index(w), operator.index(h)
    except (TypeError, ValueError):
        raise ValidationError(
            f"{field} must be a (width, height) pair of integers, got {size!r}",
            code="value.invalid",
            field=field,
        ) from None
    if not (1 <= w <= _MAX_SIDE and 1 <= h <= _MAX_SIDE):
        raise ValidationError(
            f"{field} must be (width, height) with both in [1, {_MAX_SIDE}], got {size!r}",
            code="value.invalid",
            field=field,
        )
    return w, h


def _check_output_limits(w: int, h: int, lim: Limits) -> None:
    """The decoder's bounds, applied to an output size the caller asked for."""
    if not isinstance(lim, Limits):
        raise ValidationError("limits must be an amulet_native.Limits", field="limits")
    for name, actual, bound in (
        ("max_width", w, lim.max_width),
        ("max_height", h, lim.max_height),
        ("max_pixels", w * h, lim.max_pixels),
    ):
        if bound and actual > bound:
            raise ImageTooLargeError(
                f"output size {w}x{h} exceeds {name} {bound}",
                code=f"limits.{name[4:]}",
                limit_name=name,
                actual=actual,
                limit=bound,
            )


def resize(
    arr: npt.NDArray[Any],
    size: tuple[int, int],
    *,
    method: ResizeMethod = "area",
    limits: Limits | None = None,
) -> npt.NDArray[Any]:
    """Resample ``arr`` to ``size=(width, height)``; returns a new C-contiguous
    array of the same dtype and number of dimensions.

    ``arr``: uint8 or uint16, ``(H, W)`` or ``(H, W, C)`` with C in 1..4, any
    strides (read in place, never copied).  Channels are filtered independently
    (no alpha premultiplication).

    ``method``:

    * ``"area"`` (default): exact area averaging, each output pixel is the mean
      of the input area it covers, with fractional coverage at its borders
      (OpenCV ``INTER_AREA``; identical to Pillow's ``BOX``/``reduce()`` at
      integer factors).  The right filter for downscaling.  When enlarging, an
      output pixel covers part of one input pixel, so this becomes "pixel
      mixing": nearest neighbour with blended seams (blocky, never blurred); use
      ``"bilinear"`` for smooth enlargement.
    * ``"bilinear"``: Pillow's ``BILINEAR``, a triangle filter whose support
      grows with the downscale factor (antialiased); bit-identical to
      ``Image.resize(size, Image.BILINEAR)`` for uint8 single-band images.

    The same size returns an exact copy.  The output size is held to
    ``limits`` (default: the process default :class:`Limits`): a size over
    ``max_width``/``max_height``/``max_pixels`` raises
    :class:`ImageTooLargeError` before anything is allocated.  Raises
    :class:`ValidationError` (code ``"value.array"``, field ``"arr"``) for an
    unsupported dtype, shape or byte order, and (code ``"value.invalid"``) for a
    bad ``size`` or ``method``.

    >>> resize(np.zeros((480, 640, 3), np.uint8), (320, 240)).shape
    (240, 320, 3)
    """
    w, h = _check_size(size, "size")
    _check_output_limits(w, h, get_default_limits() if limits is None else limits)
    code = _METHODS.get(method) if isinstance(method, str) else None
    if code is None:
        raise ValidationError(
            f"method must be one of {', '.join(_METHODS)}, got {method!r}",
            code="value.invalid",
            field="method",
        )
    return _core.resize(arr, w, h, code)


def contain_size(image_size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size ``thumbnail(fit="contain")`` produces for an image of
    ``image_size`` and a ``box`` (both ``(width, height)``): Pillow's
    ``Image.thumbnail`` rule.  The image is never enlarged; otherwise the side
    that limits the fit matches the box and the other side is whichever of its
    floor/ceil keeps the aspect ratio closest to the original (at least 1).

    >>> contain_size((3072, 2048), (256, 256))
    (256, 171)
    """
    iw, ih = image_size
    x, y = box
    if x >= iw and y >= ih:
        return iw, ih
    aspect = iw / ih
    if x / y >= aspect:
        n = y * aspect
        x = max(min(math.floor(n), math.ceil(n), key=lambda v: abs(aspect - v / y)), 1)
    else:
        n = x / aspect
        y = max(
            min(math.floor(n), math.ceil(n), key=lambda v: 0 if v == 0 else abs(aspect - x / v)),
            1,
        )
    return x, y


def _cover_decode_box(iw: int, ih: int, bw: int, bh: int) -> tuple[int, int]:
    """The image scaled (aspect kept) so that it just covers bw x bh."""
    if bw * ih >= bh * iw:
        return bw, -(-ih * bw // iw)
    return -(-iw * bh // ih), bh


def _centre_crop(img: npt.NDArray[Any], bw: int, bh: int) -> npt.NDArray[Any]:
    """The centred view of img with the aspect ratio of bw x bh (no copy)."""
    dh, dw = img.shape[:2]
    if bw * dh >= bh * dw:
        cw, ch = dw, min(max((2 * dw * bh + bw) // (2 * bw), 1), dh)
    else:
        cw, ch = min(max((2 * dh * bw + bh) // (2 * bh), 1), dw), dh
    x0, y0 = (dw - cw) // 2, (dh - ch) // 2
    return img[y0 : y0 + ch, x0 : x0 + cw]


def thumbnail(
    data: Source,
    size: tuple[int, int],
    *,
    mode: Mode = "RGB",
    fit: Fit = "contain",
    limits: Limits | None = None,
    orient: bool = True,
) -> npt.NDArray[Any]:
    """Decode a JPEG or PNG straight to a thumbnail of ``size=(width, height)``.

    ``fit="contain"`` (default) keeps the aspect ratio inside the box, so one
    side may be shorter; sizes follow Pillow's ``Image.thumbnail``
    (:func:`contain_size`), and an image already inside the box is returned at
    its own size (never enlarged).  ``fit="cover"`` returns exactly ``size``:
    the image is scaled to cover the box and centre-cropped (an image smaller
    than the box is enlarged by pixel mixing).

    JPEGs are decoded in the DCT domain at the smallest scale (1/8, 1/4, 1/2)
    whose output still covers what the result needs, so a 3072x2048 photo never
    exists at full size in memory; PNGs are decoded, box-reduced by the same
    rule, then resampled.  The final step is area averaging (:func:`resize`).
    ``mode``, ``limits`` and ``orient`` (EXIF orientation, applied before the
    geometry is computed) are as for :func:`decode`.

    >>> thumbnail(jpeg_bytes, (256, 256)).shape        # a 3072x2048 photo
    (171, 256, 3)
    >>> thumbnail(jpeg_bytes, (256, 256), fit="cover").shape
    (256, 256, 3)
    """
    bw, bh = _check_size(size, "size")
    if fit not in ("contain", "cover"):
        raise ValidationError(
            f"fit must be 'contain' or 'cover', got {fit!r}", code="value.invalid", field="fit"
        )
    lim = get_default_limits() if limits is None else limits
    if fit == "cover":
        _check_output_limits(bw, bh, lim)  # cover may enlarge to the whole box
    elif not isinstance(lim, Limits):
        raise ValidationError("limits must be an amulet_native.Limits", field="limits")
    buf = _read_source(data, lim.max_bytes)
    info = probe(buf)
    iw, ih = info.oriented_size if orient else info.size
    if fit == "contain":
        tw, th = contain_size((iw, ih), (bw, bh))
        img = decode(buf, mode, max_size=(tw, th), orient=orient, limits=lim)
    else:
        tw, th = bw, bh
        img = decode(buf, mode, max_size=_cover_decode_box(iw, ih, bw, bh), orient=orient,
                     limits=lim)
        img = _centre_crop(img, bw, bh)
    if img.shape[0] == th and img.shape[1] == tw and img.flags.c_contiguous:
        return img
    return _core.resize(img, tw, th, _METHODS["area"])
