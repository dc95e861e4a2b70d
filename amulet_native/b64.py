"""Base64: a native codec, and images straight from / to base64 text.

Web APIs carry images as base64 strings (JSON bodies, data URLs, caches).
:func:`decode_base64` turns such a string into pixels in one native call: the
text is read in place (no intermediate ``bytes``), decoded with the GIL
released, and the image decoded from the native buffer.  Example::

    import amulet_native as an

    rgb = an.decode_base64(request.json["image"])          # str, data URL or not
    thumb = an.decode_base64(payload, max_size=(256, 256))
    body = {"image": an.encode_base64(rgb, "jpeg", data_url=True, quality=80)}

Accepted base64 (see also ``csrc/core/image/an_base64.h``): the standard (``+/``) or
the URL-safe (``-_``) alphabet, chosen by the first of those characters in the
text (mixing both in one text is an error); ``=`` padding optional but complete
when present; ASCII whitespace and newlines anywhere; an optional
``data:<mediatype>;base64,`` prefix.  Anything else raises
:class:`ValidationError` with code ``"input.base64"`` and
``context["offset"]``, the offset of the offending character (in characters
for ``str``, bytes for bytes-like input).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import ValidationError
from .image import Limits, Mode, _core_options

__all__ = ["b64decode", "b64encode", "decode_base64", "encode_base64"]

Text = str | bytes | bytearray | memoryview
Binary = bytes | bytearray | memoryview | npt.NDArray[np.uint8]
ImageFormat = Literal["jpeg", "png"]

_MEDIA_TYPES = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png"}


def decode_base64(
    data: Text,
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
    """Decode a base64-encoded image (optionally a data URL) to an array.

    Takes the same options as :func:`amulet_native.decode`.  ``limits.max_bytes``
    applies to the decoded image bytes and is checked from the text length
    before anything is decoded or allocated.

    Raises :class:`ValidationError` (``"input.base64"`` with
    ``context["offset"]`` for malformed base64, ``"input.type"`` for other
    argument types), :class:`ImageTooLargeError`, and every error of
    :func:`amulet_native.decode`.

    >>> decode_base64("data:image/png;base64,iVBORw0KGgo...").shape
    (32, 48, 3)
    """
    options, _ = _core_options(mode, scale, max_size, orient, limits, strict, dtype, None)
    return _core.decode_base64(data, *options, out)


def b64decode(data: Text) -> bytes:
    """Decode base64 text (same syntax as :func:`decode_base64`, data URL
    prefix included) to bytes.  Stricter than :func:`base64.b64decode`: every
    character that is not base64 or whitespace is an error.

    >>> b64decode("aGVsbG8")
    b'hello'
    """
    return _core.b64decode(data)


def b64encode(data: Binary, *, urlsafe: bool = False, padding: bool = True) -> str:
    """Encode a bytes-like object as base64 text (one line, no newline).

    ``urlsafe`` uses ``-`` and ``_`` instead of ``+`` and ``/``; ``padding=False``
    leaves out the trailing ``=``.

    >>> b64encode(b"hello"), b64encode(b"hello", padding=False)
    ('aGVsbG8=', 'aGVsbG8')
    """
    return _core.b64encode(data, bool(urlsafe), bool(padding), None)


def encode_base64(
    arr: npt.NDArray[Any],
    format: ImageFormat = "jpeg",
    *,
    data_url: bool = False,
    **encode_options: Any,
) -> str:
    """Encode an image array as JPEG or PNG and return it as base64 text.

    ``encode_options`` go to :func:`amulet_native.encode_jpeg` or
    :func:`amulet_native.encode_png` (``quality=``, ``mode="BGR"``, ...).
    ``data_url=True`` prefixes ``data:image/jpeg;base64,`` (or ``image/png``),
    ready for an ``<img src>``.

    >>> encode_base64(rgb, "png", data_url=True)[:30]
    'data:image/png;base64,iVBORw0K'
    """
    from .encode import encode_jpeg, encode_png

    media = _MEDIA_TYPES.get(format.lower()) if isinstance(format, str) else None
    if media is None:
        raise ValidationError(
            f"format must be 'jpeg' or 'png', got {format!r}", code="value.format", field="format"
        )
    encoded = encode_png(arr, **encode_options) if media == "image/png" else encode_jpeg(
        arr, **encode_options
    )
    prefix = f"data:{media};base64," if data_url else None
    return _core.b64encode(encoded, False, True, prefix)
