"""The ``ImageUpload`` FastAPI dependency and the ``DecodedImage`` it returns
(re-exported by :mod:`amulet_native.integrations.fastapi`)."""

from __future__ import annotations

from . import _require

_require("starlette", "fastapi")

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .. import _core
from .. import image as _image
from ..cache import ImageCache
from ..errors import PayloadTooLargeError, UnsupportedFormatError, ValidationError
from ..stream import aread_limited
from ._common import DECLARED_FORMATS, check_limits

__all__ = ["DecodedImage", "ImageUpload"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

_log = logging.getLogger("amulet_native.http")
_MIB = 1 << 20


# ---- the upload dependency -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """What :class:`ImageUpload` hands the endpoint."""

    array: npt.NDArray[Any]
    """The decoded pixels (read-only when it came through the cache)."""
    info: _image.ImageInfo
    """The probed header (format by magic bytes)."""
    digest: str
    """BLAKE2b hex digest of the uploaded bytes (computed while reading)."""
    nbytes: int
    """Size of the upload in bytes."""
    cached: bool
    """True when the decoded image came from the cache."""
    content_type: str | None = None
    """The declared media type (header or multipart part), if any."""
    filename: str | None = None
    """The multipart part's file name as a bare name: no directories (``/``
    or ``\\``), no control characters (NUL, CR, LF); None when nothing is left."""
    type_mismatch: bool = False
    """True when the declared image type differs from the detected format."""


_MULTIPART_OVERHEAD = 16 << 10
_CONTROL = dict.fromkeys(range(32)) | {127: None}


def _bare_filename(name: str | None) -> str | None:
    """The client's file name without directories or control characters
    (endpoints tend to join it to a path or log it)."""
    if not name:
        return None
    bare = name.replace("\\", "/").rpartition("/")[2].translate(_CONTROL).strip()
    return bare if bare not in ("", ".", "..") else None


def _multipart_error(text: str, upload: ImageUpload) -> ValidationError:
    if "Too many files" in text:
        code, extra = "multipart.too_many_files", {"max_files": upload.max_files}
    elif "Too many fields" in text:
        code, extra = "multipart.too_many_fields", {"max_fields": upload.max_fields}
    elif "maximum size" in text:
        code, extra = "multipart.part_too_large", {"max_part_size": upload.max_part_size}
    else:
        code, extra = "multipart.malformed", {}
    return ValidationError(text, code=code, context=extra)


class _LimitedReceive:
    """receive for the multipart parser: PayloadTooLargeError past ``limit``."""

    __slots__ = ("limit", "receive", "total")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.total = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.limit:
                raise PayloadTooLargeError(
                    f"multipart body exceeds {self.limit} bytes",
                    limit=self.limit, received=self.total,
                )
        return message


_default_cache: ImageCache | None = None


def _shared_default_cache() -> ImageCache:
    global _default_cache
    if _default_cache is None:
        _default_cache = ImageCache(max_bytes=256 * _MIB)
    return _default_cache


class ImageUpload:
    """FastAPI dependency: the request's image, read under a cap, probed,
    checked and decoded (through an :class:`ImageCache`, off the event loop).

    ``upload: DecodedImage = Depends(ImageUpload(max_bytes=20 << 20))``

    Accepts a raw body (``image/*``, ``application/octet-stream`` or no type)
    and ``multipart/form-data`` (the file in ``field``, or the first file).
    The format comes from the magic bytes, never from the declared type: a
    mismatch is reported in :attr:`DecodedImage.type_mismatch` (and logged),
    or refused with 415 ``format.mismatch`` when ``on_type_mismatch="reject"``.

    ``cache``: an ImageCache, ``None`` for the app's (``install(image_cache=)``)
    or a process-wide 256 MiB one, or ``False`` to decode uncached (writable
    arrays).  Multipart: ``max_files``, ``max_fields`` and ``max_part_size``
    (non-file parts) are Starlette's own knobs, set tight; the whole form is
    capped at ``max_bytes`` plus the fields' allowance, so no spooled file
    grows past it.

    ``strict`` is :func:`amulet_native.decode`'s damage policy: the default
    (``None``) accepts what loses no pixels (junk between JPEG markers, a bad
    EXIF block) as browsers do and refuses data loss with 422; ``True``
    refuses any damage.
    """

    def __init__(
        self,
        *,
        max_bytes: int = 20 * _MIB,
        limits: _image.Limits | None = None,
        mode: _image.Mode = "RGB",
        max_size: tuple[int, int] | None = None,
        cache: ImageCache | None | bool = None,
        field: str | None = "file",
        max_files: int = 1,
        max_fields: int = 8,
        max_part_size: int = 64 << 10,
        on_type_mismatch: str = "report",
        strict: bool | None = None,
    ) -> None:
        if on_type_mismatch not in ("report", "reject"):
            raise ValidationError("on_type_mismatch must be 'report' or 'reject'",
                                  field="on_type_mismatch")
        self.max_bytes = int(max_bytes)
        self.limits = limits if limits is not None else _image.get_default_limits()
        self.mode = mode
        self.max_size = max_size
        self.cache = cache
        self.field = field
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_part_size = max_part_size
        self.on_type_mismatch = on_type_mismatch
        self.strict = strict
        self._options, _ = _image._core_options(
            mode, None, max_size, True, self.limits, strict, np.uint8, None
        )

    @property
    def body_cap(self) -> int:
        """The largest request body this dependency can accept."""
        return self.max_bytes + self.max_fields * self.max_part_size + _MULTIPART_OVERHEAD

    def __repr__(self) -> str:
        return f"ImageUpload(max_bytes={self.max_bytes}, mode={self.mode!r})"

    async def __call__(self, request: Request) -> DecodedImage:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        filename: str | None = None
        if media == "multipart/form-data":
            body, declared, filename = await self._read_multipart(request)
        elif media in ("", "application/octet-stream") or media.startswith("image/"):
            body = await aread_limited(request, self.max_bytes)
            declared = media or None
        else:
            raise ValidationError(
                f"expected an image body or multipart/form-data, got {media!r}",
                code="input.content_type", field="content-type",
            )
        if body.size == 0:
            raise ValidationError("the upload is empty", code="input.empty", field="file")
        info = _image.probe(body.data)  # magic bytes: UnsupportedFormatError for non-images
        expected = DECLARED_FORMATS.get(declared or "")
        mismatch = expected is not None and expected != info.format
        if mismatch:
            ctx = {"declared_type": declared, "detected_type": info.format}
            if self.on_type_mismatch == "reject":
                raise UnsupportedFormatError(
                    f"declared {declared} but the data is {info.format}",
                    code="format.mismatch", format=info.format, context=ctx,
                )
            _log.warning("upload declared %s but is %s", declared, info.format)
        check_limits(info, self.limits)
        cache = self._cache_for(request)
        assert body.digest is not None
        array, hit = await asyncio.to_thread(self._decode, cache, body.data, body.digest)
        return DecodedImage(array, info, body.digest, body.size, hit, declared, filename,
                            mismatch)

    def _cache_for(self, request: Request) -> ImageCache | None:
        if self.cache is False:
            return None
        if isinstance(self.cache, ImageCache):
            return self.cache
        app_cache = getattr(getattr(request.app, "state", None), "amulet_image_cache", None)
        return app_cache if isinstance(app_cache, ImageCache) else _shared_default_cache()

    def _decode(
        self, cache: ImageCache | None, data: Any, digest: str
    ) -> tuple[npt.NDArray[Any], bool]:
        if cache is None:
            return _core.decode(data, *self._options, None), False
        key = ("upload", digest, self._options)
        hit = cache.cache.peek(key, None) is not None
        return cache._get_or_decode(key, data, self._options), hit

    async def _read_multipart(self, request: Request) -> tuple[Any, str | None, str | None]:
        cap = self.body_cap
        declared_len = request.headers.get("content-length")
        if declared_len is not None and declared_len.isdigit() and int(declared_len) > cap:
            raise PayloadTooLargeError(
                f"multipart body of {declared_len} bytes exceeds {cap}",
                limit=cap, received=0, context={"declared": int(declared_len)},
            )
        form_request = Request(request.scope, _LimitedReceive(request.receive, cap))
        try:
            form = await form_request.form(
                max_files=self.max_files, max_fields=self.max_fields,
                max_part_size=self.max_part_size,
            )
        except MultiPartException as exc:
            raise _multipart_error(str(exc.message), self) from None
        except HTTPException as exc:  # Starlette re-raises parser errors as a 400
            if exc.status_code != 400:
                raise
            raise _multipart_error(str(exc.detail), self) from None
        try:
            upload = form.get(self.field) if self.field is not None else None
            if not isinstance(upload, UploadFile):
                upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise ValidationError(
                    f"no file in the form field {self.field!r}", code="input.missing",
                    field=self.field,
                )
            body = await aread_limited(upload, self.max_bytes)
            ctype = (upload.content_type or "").partition(";")[0].strip().lower() or None
            return body, ctype, _bare_filename(upload.filename)
        finally:
            await form.close()
