"""Decoding JPEG/PNG while the bytes are still arriving.

:class:`IncrementalDecoder` takes the same options as :func:`amulet_native.decode`
and returns exactly the same pixels, but it is fed chunk by chunk (an upload
stream, a socket, an HTTP body): the header is checked against the limits the
moment it is complete, the output array is allocated once at that point, and
every later chunk is decoded straight into it with the GIL released.  Peak
memory is the output plus about one chunk; the input is never accumulated.
Example::

    import amulet_native as an

    with an.IncrementalDecoder(mode="RGB", max_size=(1024, 1024)) as dec:
        async for chunk in request.stream():      # e.g. a FastAPI upload
            dec.feed(chunk)                       # ImageTooLargeError right at the header
            if dec.info is not None:
                progress(dec.rows_done / dec.rows_total)
        rgb = dec.finish()                        # same array as an.decode(all_bytes)
"""

from __future__ import annotations

from fractions import Fraction
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt

from . import _core
from .image import BytesLike, ImageInfo, Limits, Mode, _core_options

__all__ = ["IncrementalDecoder"]

State = Literal["header", "body", "finished", "failed", "closed"]


class IncrementalDecoder:
    """Decode one JPEG or PNG from chunks of bytes, as they arrive.

    Options are those of :func:`amulet_native.decode` (``mode``, ``scale`` or
    ``max_size``, ``orient``, ``limits``, ``strict``, ``dtype``) plus
    ``expect="jpeg"``/``"png"`` to accept only one format.

    :meth:`feed` accepts any bytes-like chunk (bytes, bytearray, memoryview,
    uint8 ndarray) of any size, including 1 byte.  It raises the errors
    :func:`~amulet_native.decode` raises, as early as the bytes allow:
    :class:`UnsupportedFormatError` once the signature is in (16 bytes),
    :class:`ImageTooLargeError` when the frame header is complete or the running
    total passes ``limits.max_bytes``, :class:`DecodeError` for corrupt data in
    strict mode.  :attr:`info` is the :class:`ImageInfo` as soon as the header
    is complete (None before).  :meth:`finish` ends the input and returns the
    array; a truncated stream raises :class:`DecodeError` (``decode.truncated``),
    or with ``strict=False`` returns what arrived and warns, like ``decode``.

    After an error, :meth:`finish` or :meth:`close`, the native state is freed
    and any further call raises :class:`ValidationError` with code
    ``"decoder.state"``.  One thread at a time: a call while another thread is
    inside :meth:`feed`/:meth:`finish` raises ``ValidationError`` with code
    ``"decoder.busy"``.

    >>> dec = IncrementalDecoder(mode="L")
    >>> for chunk in iter(lambda: f.read(65536), b""):
    ...     dec.feed(chunk)
    >>> gray = dec.finish()
    """

    __slots__ = ("_dec",)

    def __init__(
        self,
        mode: Mode = "RGB",
        *,
        scale: float | Fraction | str | None = None,
        max_size: tuple[int, int] | None = None,
        orient: bool = True,
        limits: Limits | None = None,
        strict: bool | None = None,
        dtype: npt.DTypeLike = np.uint8,
        expect: Literal["jpeg", "png", "webp", "gif", "heic", "avif"] | None = None,
        frame: int = 0,
    ) -> None:
        if expect not in (None, "jpeg", "png", "webp", "gif", "heic", "avif"):
            from .errors import ValidationError

            raise ValidationError(
                f"expect must be a format name or None, got {expect!r}",
                code="value.expect",
                field="expect",
            )
        options, _ = _core_options(
            mode, scale, max_size, orient, limits, strict, dtype, expect, frame
        )
        self._dec = _core.IncrementalDecoder(*options)

    def feed(self, data: BytesLike) -> None:
        """Decode the next chunk (any size).  The chunk is not referenced after
        the call returns."""
        self._dec.feed(data)

    def finish(self) -> npt.NDArray[Any]:
        """End of input: the decoded image, exactly what :func:`decode` returns
        for all the bytes fed."""
        return self._dec.finish()

    def close(self) -> None:
        """Free the native state now (also done by finish(), errors and GC)."""
        self._dec.close()

    @property
    def info(self) -> ImageInfo | None:
        """The header, as :func:`probe` reads it, once it is complete."""
        raw = self._dec.info
        return None if raw is None else ImageInfo._make(raw)

    @property
    def bytes_fed(self) -> int:
        """Total bytes fed so far."""
        return self._dec.bytes_fed

    @property
    def rows_done(self) -> int:
        """Rows decoded so far (of the codec's output, before EXIF rotation)."""
        return self._dec.rows_done

    @property
    def rows_total(self) -> int:
        """Rows the codec will produce; 0 until the header is in."""
        return self._dec.rows_total

    @property
    def state(self) -> State:
        """"header", "body", "finished", "failed" or "closed"."""
        state: State = self._dec.state
        return state

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.info
        what = f"{info.format} {info.width}x{info.height}" if info else "no header yet"
        return f"<IncrementalDecoder {self.state}, {what}, {self.bytes_fed} bytes fed>"
