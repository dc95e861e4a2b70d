"""Decoding untrusted image bytes (JPEG, PNG, WebP, GIF, HEIC, AVIF) into NumPy arrays.

Thin wrappers over :mod:`amulet_native._core`: they normalise arguments and
turn file objects and paths into bytes; the native code does the rest with the
GIL released.  Example::

    import amulet_native as an

    info = an.probe(upload)                  # header only, microseconds
    rgb = an.decode(upload)                  # (H, W, 3) uint8, EXIF-oriented
    small = an.decode(upload, max_size=(512, 512))   # DCT-scaled JPEG decode
    gray = an.decode_file("photo.png", mode="L", limits=an.Limits(max_pixels=4_000_000))
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, fields, replace
from fractions import Fraction
from typing import IO, Any, Literal, NamedTuple, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import ImageTooLargeError, ValidationError

__all__ = [
    "ImageInfo",
    "Limits",
    "Mode",
    "decode",
    "decode_file",
    "decode_jpeg",
    "decode_png",
    "get_default_limits",
    "probe",
    "set_default_limits",
]

Mode = Literal["RGB", "BGR", "RGBA", "L", "LA"]
#: Anything exposing a contiguous buffer is accepted at run time; these are the
#: types the stubs name.
BytesLike: TypeAlias = (
    "bytes | bytearray | memoryview | mmap.mmap | _core.MappedFile | npt.NDArray[np.uint8]"
)
Source: TypeAlias = "BytesLike | IO[bytes]"

_MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "BGR": 5}
_FORMAT_CODES = {None: 0, "jpeg": 1, "png": 2, "gif": 3, "webp": 4, "heic": 7, "avif": 8}
_DTYPES = {np.dtype(np.uint8): False, np.dtype(np.uint16): True}
_CORE_DEFAULTS = _core.default_limits()


class ImageInfo(NamedTuple):
    """What :func:`probe` reads from an image header."""

    format: str
    """"jpeg", "png", "webp", "gif", "heic" or "avif"."""
    width: int
    """Stored width in pixels (before EXIF orientation)."""
    height: int
    channels: int
    """Components in the file: 1 grey, 2 grey+alpha, 3 colour, 4 with alpha or CMYK."""
    bit_depth: int
    progressive: bool
    """JPEG progressive, or PNG Adam7 interlaced."""
    orientation: int
    """EXIF orientation 1..8 (1 when absent; HEIC/AVIF: 1, their size is
    already the displayed one since libheif applies irot/imir)."""
    frames: int = 1
    """Frames in the file: GIF and animated WebP count them, others have 1."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as stored."""
        return (self.width, self.height)

    @property
    def oriented_size(self) -> tuple[int, int]:
        """(width, height) after applying the EXIF orientation."""
        if self.orientation >= 5:
            return (self.height, self.width)
        return (self.width, self.height)


@dataclass(frozen=True)
class Limits:
    """Bounds checked from the header before any output memory is allocated.

    0 disables a bound.  Defaults: 64 MiB input, 100 megapixels, 32768 px per
    side, 256 progressive JPEG scans, 4096 frames (GIF, animated WebP; the work
    of composing frames 0..k for ``frame=k`` -- each frame's pixels plus one
    canvas -- is also bounded, by 8 x max_pixels, with code ``limits.frames``).  Process-wide defaults come from :func:`set_default_limits`
    or the environment (``AMULET_MAX_BYTES``, ``AMULET_MAX_PIXELS``,
    ``AMULET_MAX_WIDTH``, ``AMULET_MAX_HEIGHT``, ``AMULET_MAX_JPEG_SCANS``,
    ``AMULET_MAX_FRAMES``) read at import.
    """

    max_bytes: int = _CORE_DEFAULTS[0]
    max_pixels: int = _CORE_DEFAULTS[1]
    max_width: int = _CORE_DEFAULTS[2]
    max_height: int = _CORE_DEFAULTS[3]
    max_jpeg_scans: int = _CORE_DEFAULTS[4]
    max_frames: int = _CORE_DEFAULTS[5]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            bound = 2**64 - 1 if f.name in ("max_bytes", "max_pixels") else 2**32 - 1
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
                raise ValidationError(
                    f"Limits.{f.name} must be an integer in [0, {bound}], got {value!r}",
                    code="value.limits",
                    field=f.name,
                )
        object.__setattr__(self, "_tuple", tuple(getattr(self, f.name) for f in fields(self)))

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return self._tuple  # type: ignore[attr-defined,no-any-return]


def _limits_from_env(base: Limits) -> Limits:
    changes: dict[str, int] = {}
    for f in fields(Limits):
        raw = os.environ.get("AMULET_" + f.name.upper())
        if raw is None:
            continue
        try:
            changes[f.name] = int(raw)
        except ValueError:
            raise ValidationError(
                f"environment variable AMULET_{f.name.upper()}={raw!r} is not an integer",
                code="value.limits",
                field=f.name,
            ) from None
    return replace(base, **changes) if changes else base


_default_limits = _limits_from_env(Limits())


def set_default_limits(limits: Limits) -> Limits:
    """Set the process-wide default :class:`Limits`; returns the previous ones."""
    global _default_limits
    if not isinstance(limits, Limits):
        raise ValidationError("set_default_limits() expects a Limits", field="limits")
    previous, _default_limits = _default_limits, limits
    return previous


def get_default_limits() -> Limits:
    """The process-wide default :class:`Limits`."""
    return _default_limits


def _too_many_bytes(message: str, actual: int, limit: int) -> ImageTooLargeError:
    """The error the C core raises for max_bytes, for checks made in Python."""
    return ImageTooLargeError(
        message, code="limits.bytes", limit_name="max_bytes", actual=actual, limit=limit
    )


def _read_source(data: Source, max_bytes: int) -> BytesLike:
    """Bytes-like objects pass through untouched (zero copy); file objects are
    read, but never more than max_bytes + 1 bytes.  mmap has read() too but is a
    buffer: it passes through (no copy, its file position untouched)."""
    if isinstance(data, (bytes, bytearray, memoryview, mmap.mmap)):
        return data
    read = getattr(data, "read", None)
    if read is not None:
        chunk = read(max_bytes + 1) if max_bytes else read()
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise ValidationError(
                f"read() returned {type(chunk).__name__}, expected bytes (open the file in 'rb')",
                code="input.type",
                field="data",
            )
        if max_bytes and len(chunk) > max_bytes:
            raise _too_many_bytes(f"input exceeds max_bytes {max_bytes}", len(chunk), max_bytes)
        return chunk
    if isinstance(data, (str, os.PathLike)):
        raise ValidationError(
            "decode() takes image bytes, not a path; use decode_file()",
            code="input.type",
            field="data",
        )
    return cast("BytesLike", data)  # any other buffer: the C layer checks it


def _scale_denominator(scale: Any) -> int:
    if scale is None:
        return 1
    try:
        frac = Fraction(scale) if not isinstance(scale, str) else Fraction(scale.strip())
    except (TypeError, ValueError, ZeroDivisionError):
        frac = Fraction(0)
    if frac.numerator != 1 or frac.denominator not in (1, 2, 4, 8):
        raise ValidationError(
            f"scale must be 1, 1/2, 1/4 or 1/8, got {scale!r}", code="value.scale", field="scale"
        )
    return frac.denominator


#: The nine option arguments of ``_core.decode``/``decode_many`` after the input.
#: The last is the limits tuple followed by the frame index.
CoreOptions = tuple[
    int, bool, int, int, int, bool, bool | None, int, tuple[int, int, int, int, int, int, int]
]


def _core_options(
    mode: str,
    scale: Any,
    max_size: tuple[int, int] | None,
    orient: bool,
    limits: Limits | None,
    strict: bool | None,
    dtype: Any,
    expect: str | None,
    frame: int = 0,
) -> tuple[CoreOptions, Limits]:
    """Validates the decode keyword arguments; returns the core's option tuple
    and the effective limits."""
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < 2**32:
        raise ValidationError(
            f"frame must be an integer >= 0, got {frame!r}", code="value.frame", field="frame"
        )
    lim = _default_limits if limits is None else limits
    if not isinstance(lim, Limits):
        raise ValidationError("limits must be an amulet_native.Limits", field="limits")
    code = _MODES.get(mode)
    if code is None:
        raise ValidationError(
            f"mode must be one of {', '.join(_MODES)}, got {mode!r}", code="value.mode", field="mode"
        )
    try:
        depth16 = _DTYPES[np.dtype(dtype)]
    except (TypeError, KeyError):
        raise ValidationError(
            f"dtype must be uint8 or uint16, got {dtype!r}", code="value.dtype", field="dtype"
        ) from None
    max_w = max_h = 0
    if max_size is not None:
        if scale is not None:
            raise ValidationError("give scale or max_size, not both", field="max_size")
        try:
            max_w, max_h = (int(v) for v in max_size)
        except (TypeError, ValueError):
            max_w = max_h = -1
        if max_w <= 0 or max_h <= 0:
            raise ValidationError(
                f"max_size must be (width, height) > 0, got {max_size!r}",
                code="value.max_size",
                field="max_size",
            )
        denom = 0
    else:
        denom = _scale_denominator(scale)
    options: CoreOptions = (
        code, depth16, denom, max_w, max_h, bool(orient),
        None if strict is None else bool(strict), _FORMAT_CODES[expect],
        (*lim.as_tuple(), frame),
    )
    return options, lim


def _decode(
    data: Source,
    mode: str,
    scale: Any,
    max_size: tuple[int, int] | None,
    orient: bool,
    limits: Limits | None,
    out: npt.NDArray[Any] | None,
    strict: bool | None,
    dtype: Any,
    expect: str | None,
    frame: int = 0,
) -> npt.NDArray[Any]:
    options, lim = _core_options(
        mode, scale, max_size, orient, limits, strict, dtype, expect, frame
    )
    return _core.decode(_read_source(data, lim.max_bytes), *options, out)


def decode(
    data: Source,
    mode: Mode = "RGB",
    *,
    scale: float | Fraction | str | None = None,
    max_size: tuple[int, int] | None = None,
    orient: bool = True,
    limits: Limits | None = None,
    out: npt.NDArray[Any] | None = None,
    strict: bool | None = None,
    dtype: npt.DTypeLike = np.uint8,
    frame: int = 0,
) -> npt.NDArray[Any]:
    """Decode a JPEG, PNG, WebP, GIF, HEIC or AVIF (detected by magic bytes)
    into a C-contiguous array.

    ``data``: bytes, bytearray, memoryview, mmap, uint8 ndarray (used without a
    copy) or a binary file object.  ``mode``: "RGB", "BGR", "RGBA", "L" (2-D
    result) or "LA".  ``scale`` (1/2, 1/4, 1/8) or ``max_size=(w, h)`` decode
    JPEGs in the DCT domain (the smallest scale still covering the box; PNGs are
    area-averaged to the same size).  ``orient`` applies the EXIF orientation.
    ``dtype=np.uint16`` keeps 16-bit PNG samples (HEIC/AVIF: 10/12-bit
    samples, shifted to the top of 16 bits as pillow-heif does).  ``frame``
    selects a frame of an animated GIF or WebP (composed with the frames
    before it; :attr:`ImageInfo.frames` counts them).  ``out`` receives the pixels
    when it has exactly the right shape and dtype.

    ``strict`` chooses what damage is tolerated (JPEG and PNG alike):

=======
    =============  ==============================  ================================
    ``strict``     problems that lose no pixels    data loss: truncation, a missing
                   (junk bytes between JPEG        scan, corrupt entropy data (also
                   header markers, an APPn/COM     bytes left over after a scan),
                   segment with a bad length, a    corrupt zlib data, a bad IDAT or
                   malformed EXIF block -          critical-chunk CRC, a bad
                   orientation then ignored -,     Adler-32
                   an ancillary PNG chunk with a
                   bad CRC or invalid content -
                   skipped)
    =============  ==============================  ================================
    ``None``       decoded, one                    :class:`DecodeError`
    (default)      :class:`AmuletWarning`
    ``True``       :class:`DecodeError`            :class:`DecodeError`
    ``False``      decoded, one                    what can be decoded (the rest
                   :class:`AmuletWarning`          zero-filled), one
                                                   :class:`AmuletWarning`
    =============  ==============================  ================================

    Orientation comes from the EXIF block (JPEG APP1, PNG eXIf before or after
    the image data) and, without an EXIF orientation tag, from XMP's
    ``tiff:Orientation`` (JPEG APP1, PNG iTXt/tEXt), as Pillow's
    ``ImageOps.exif_transpose`` reads them.

    Raises :class:`UnsupportedFormatError`, :class:`ImageTooLargeError`,
    :class:`DecodeError` or :class:`ValidationError`.

    >>> rgb = decode(open("photo.jpg", "rb").read())
    >>> rgb.shape, rgb.dtype
    ((2048, 3072, 3), dtype('uint8'))
    """
    return _decode(data, mode, scale, max_size, orient, limits, out, strict, dtype, None, frame)


def decode_jpeg(
    data: Source,
    mode: Mode = "RGB",
    *,
    scale: float | Fraction | str | None = None,
    max_size: tuple[int, int] | None = None,
    orient: bool = True,
    limits: Limits | None = None,
    out: npt.NDArray[Any] | None = None,
    strict: bool | None = None,
) -> npt.NDArray[Any]:
    """Like :func:`decode`, but only accepts JPEG data (others raise
    :class:`UnsupportedFormatError` with code ``"format.mismatch"``)."""
    return _decode(data, mode, scale, max_size, orient, limits, out, strict, np.uint8, "jpeg")


def decode_png(
    data: Source,
    mode: Mode = "RGB",
    *,
    scale: float | Fraction | str | None = None,
    max_size: tuple[int, int] | None = None,
    orient: bool = True,
    limits: Limits | None = None,
    out: npt.NDArray[Any] | None = None,
    strict: bool | None = None,
    dtype: npt.DTypeLike = np.uint8,
) -> npt.NDArray[Any]:
    """Like :func:`decode`, but only accepts PNG data."""
    return _decode(data, mode, scale, max_size, orient, limits, out, strict, dtype, "png")


def decode_file(
    path: str | os.PathLike[str],
    mode: Mode = "RGB",
    *,
    scale: float | Fraction | str | None = None,
    max_size: tuple[int, int] | None = None,
    orient: bool = True,
    limits: Limits | None = None,
    out: npt.NDArray[Any] | None = None,
    strict: bool | None = None,
    dtype: npt.DTypeLike = np.uint8,
    frame: int = 0,
) -> npt.NDArray[Any]:
    """Decode the image file at ``path``.  Its size is checked against
    ``limits.max_bytes`` before anything is read."""
    lim = _default_limits if limits is None else limits
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if isinstance(lim, Limits) and lim.max_bytes and size > lim.max_bytes:
            raise _too_many_bytes(
                f"file of {size} bytes exceeds max_bytes {lim.max_bytes}", size, lim.max_bytes
            )
        data = f.read()
    return _decode(data, mode, scale, max_size, orient, limits, out, strict, dtype, None, frame)


def probe(data: Source) -> ImageInfo:
    """Read only the header: format, size, channels, bit depth, progressive,
    EXIF orientation, frame count.  Formats other than JPEG, PNG, WebP, GIF,
    HEIC and AVIF raise :class:`UnsupportedFormatError` naming the detected
    format.

    >>> probe(jpeg_bytes)
    ImageInfo(format='jpeg', width=768, height=512, channels=3, bit_depth=8,
              progressive=False, orientation=1)
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = _read_source(data, _default_limits.max_bytes)
    return ImageInfo._make(_core.probe(data))


