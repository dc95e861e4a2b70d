"""Streamlit integration: bounded, cached upload decoding shared by every session.
Extra ``[streamlit]``.

::

    import streamlit as st
    from amulet_native.integrations import streamlit as an_st

    f = st.file_uploader("Image")
    rgb = an_st.decode_upload(f, max_bytes=20 << 20, max_size=(1024, 1024), show_errors=True)
    if rgb is not None:
        st.image(an_st.thumbnail_bytes(rgb, (256, 256)))
        with an_st.memory_limit(mb=512):
            labels = an_st.cached_model(load_model).run(rgb)
    an_st.status_panel()

Why not ``st.cache_data``: it pickles every value in and out (a copy of each
array per hit) and hashes large arrays by sampling them (different images can
collide, streamlit PR #15412).  Here one process-wide :class:`ImageCache`
(held by ``st.cache_resource``) is keyed by the native BLAKE2b of the full
upload and hands every session read-only views of one array.
"""

from __future__ import annotations

from . import _require

_require("streamlit", "streamlit")

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt
import streamlit as st

from .. import image as _image
from ..cache import Cache, ImageCache
from ..encode import encode_jpeg
from ..errors import (
    AmuletError,
    MemoryLimitError,
    PayloadTooLargeError,
    UnsupportedFormatError,
    ValidationError,
)
from ..memory import MemoryMonitor
from ..memory import memory_limit as _memory_limit
from ..pool import ObjectPool
from ..transform import contain_size, resize
from ._common import check_limits, friendly_message

__all__ = [
    "PooledModel",
    "cached_model",
    "decode_upload",
    "image_cache",
    "memory_limit",
    "status_panel",
    "thumbnail_bytes",
]

T = TypeVar("T")
_MIB = 1 << 20
DEFAULT_MAX_BYTES = 20 * _MIB
DEFAULT_CACHE_BYTES = 256 * _MIB


@st.cache_resource(show_spinner=False)
def _shared_image_cache(max_bytes: int) -> ImageCache:
    return ImageCache(max_bytes=max_bytes)


@st.cache_resource(show_spinner=False)
def _shared_thumbnails(max_bytes: int) -> Cache[Any, bytes]:
    return Cache(max_bytes=max_bytes)


def image_cache(max_bytes: int = DEFAULT_CACHE_BYTES) -> ImageCache:
    """The process-wide ImageCache every session shares (one per ``max_bytes``)."""
    return _shared_image_cache(max_bytes)


def _show(exc: AmuletError) -> None:
    st.error(friendly_message(exc))


def decode_upload(
    uploaded_file: Any,
    *,
    mode: _image.Mode = "RGB",
    max_size: tuple[int, int] | None = None,
    limits: _image.Limits | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    formats: Sequence[str] = ("jpeg", "png"),
    cache: ImageCache | None | bool = None,
    show_errors: bool = False,
) -> npt.NDArray[Any] | None:
    """Decode a ``st.file_uploader`` file (or bytes) into a read-only array.

    The size is checked before anything is read, the format by magic bytes
    (``formats``) and the header against ``limits`` before decoding; then the
    shared :func:`image_cache` decodes it once for every session (``cache=False``:
    uncached, writable).  Returns None for ``None`` (nothing uploaded yet).
    Errors are :class:`AmuletError`; with ``show_errors=True`` they are shown
    with ``st.error`` in plain words and None is returned instead.
    """
    if uploaded_file is None:
        return None
    try:
        return _decode_upload(uploaded_file, mode, max_size, limits, max_bytes, formats, cache)
    except AmuletError as exc:
        if not show_errors:
            raise
        _show(exc)
        return None


def _decode_upload(
    f: Any,
    mode: _image.Mode,
    max_size: tuple[int, int] | None,
    limits: _image.Limits | None,
    max_bytes: int,
    formats: Sequence[str],
    cache: ImageCache | None | bool,
) -> npt.NDArray[Any]:
    size = getattr(f, "size", None)
    if isinstance(size, int) and size > max_bytes:
        raise PayloadTooLargeError(
            f"upload of {size} bytes exceeds max_bytes {max_bytes}",
            limit=max_bytes, received=0, context={"declared": size},
        )
    with contextlib.ExitStack() as stack:
        if isinstance(f, (bytes, bytearray, memoryview)):
            data: Any = f
        elif callable(getattr(f, "getbuffer", None)):
            data = stack.enter_context(f.getbuffer())  # the upload's bytes, no copy
        elif callable(getattr(f, "read", None)):
            data = f.read(max_bytes + 1)
        else:
            raise ValidationError(
                f"expected an UploadedFile or bytes, got {type(f).__name__}",
                code="input.type", field="uploaded_file",
            )
        n = memoryview(data).nbytes
        if n > max_bytes:
            raise PayloadTooLargeError(
                f"upload exceeds max_bytes {max_bytes}", limit=max_bytes, received=n
            )
        if n == 0:
            raise ValidationError("the upload is empty", code="input.empty", field="file")
        info = _image.probe(data)
        if info.format not in formats:
            raise UnsupportedFormatError(
                f"{info.format} images are not accepted here", format=info.format
            )
        lim = limits if limits is not None else _image.get_default_limits()
        check_limits(info, lim)
        if cache is False:
            return _image.decode(data, mode, max_size=max_size, limits=lim)
        store = cache if isinstance(cache, ImageCache) else image_cache()
        return store.decode(data, mode, max_size=max_size, limits=lim)


@contextlib.contextmanager
def memory_limit(
    max_bytes: int | None = None, *, mb: float | None = None, show_errors: bool = True
) -> Iterator[Any]:
    """A memory budget for this rerun (:func:`amulet_native.memory_limit`).
    With ``show_errors`` an exhausted budget shows ``st.error`` and the rest
    of the block is skipped; the app keeps running."""
    try:
        with _memory_limit(max_bytes, mb=mb) as usage:
            yield usage
    except MemoryLimitError as exc:
        if not show_errors:
            raise
        _show(exc)


class PooledModel(Generic[T]):
    """A model shared by every session: ``pool_size`` instances made by the
    loader on first use, lent to one thread at a time."""

    def __init__(self, loader: Callable[[], T], pool_size: int, timeout: float) -> None:
        self.pool: ObjectPool[T] = ObjectPool(loader, max_size=pool_size)
        self.timeout = timeout

    @contextlib.contextmanager
    def acquire(self) -> Iterator[T]:
        """``with model.acquire() as m:`` exclusive use of one instance."""
        with self.pool.acquire(timeout=self.timeout) as obj:
            yield obj

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call one pooled instance: ``model(*args, **kwargs)``."""
        with self.acquire() as obj:
            return obj(*args, **kwargs)  # type: ignore[operator]


_model_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _shared_model(key: str, pool_size: int, timeout: float, _loader: Callable[[], Any]) -> Any:
    return PooledModel(_loader, pool_size, timeout)


_PLAIN = (str, bytes, int, float, bool, type(None))


def _loader_key(loader: Callable[[], Any]) -> str:
    """Stable across reruns (the script's functions are new objects each
    run), yet distinct for different loaders that share a qualified name:
    two lambdas (their source line) or closures of one factory (their plain
    captured values)."""
    key = f"{getattr(loader, '__module__', '?')}.{getattr(loader, '__qualname__', repr(loader))}"
    code = getattr(loader, "__code__", None)
    if code is not None:
        key += f"@{code.co_filename}:{code.co_firstlineno}"
    for cell in getattr(loader, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        key += f"|{value!r}" if isinstance(value, _PLAIN) else "|?"
    return key


def cached_model(
    loader: Callable[[], T], *, pool_size: int = 1, timeout: float = 30.0
) -> PooledModel[T]:
    """The process-wide :class:`PooledModel` for ``loader`` (keyed by its
    qualified name), thread-safe across sessions."""
    key = _loader_key(loader)
    with _model_lock:
        return _shared_model(key, pool_size, timeout, loader)  # type: ignore[no-any-return]


def thumbnail_bytes(
    source: Any,
    size: tuple[int, int] = (256, 256),
    *,
    quality: int = 85,
    cache_bytes: int = 64 * _MIB,
) -> bytes:
    """A JPEG thumbnail (inside ``size``) for ``st.image``: from a decoded
    array or from image bytes / an UploadedFile (decoded straight to the
    small size).  Cached process-wide by content digest."""
    thumbs = _shared_thumbnails(cache_bytes)
    if isinstance(source, np.ndarray):
        arr = np.ascontiguousarray(source)
        h = hashlib.blake2b(arr.data, digest_size=32)
        h.update(repr((arr.shape, arr.dtype.str)).encode())
        key = (h.digest(), size, quality)
        hit = thumbs.get(key)
        if hit is not None:
            return hit
        w, hgt = contain_size((arr.shape[1], arr.shape[0]), size)
        small = arr if (w, hgt) == (arr.shape[1], arr.shape[0]) else resize(arr, (w, hgt))
    else:
        data = source.getvalue() if callable(getattr(source, "getvalue", None)) else source
        key = (hashlib.blake2b(data, digest_size=32).digest(), size, quality)
        hit = thumbs.get(key)
        if hit is not None:
            return hit
        from ..transform import thumbnail

        small = thumbnail(data, size)
    out = encode_jpeg(small, quality=quality, alpha="drop")
    thumbs.set(key, out)
    return out


def _health_summary(health: Any) -> dict[str, Any] | None:
    if health is None:
        return None
    sync = getattr(health, "report_sync", None)
    report = sync(kind="all") if callable(sync) else asyncio.run(health.report(kind="all"))
    return {"status": report.status, "http_status": report.http_status}


def status_panel(
    cache: ImageCache | None = None,
    *,
    health: Any = None,
    monitor: MemoryMonitor | None = None,
    expanded: bool = False,
) -> dict[str, Any]:
    """A small panel for app authors: cache hit rate and bytes, memory
    pressure, and (with a ``health.HealthMonitor``) health.  Returns the
    numbers it shows."""
    stats = (cache or image_cache()).get_stats()
    pressure = (monitor or MemoryMonitor()).pressure()
    info: dict[str, Any] = {
        "cache_hit_rate": stats["hit_rate"],
        "cache_items": stats["items"],
        "cache_bytes": stats["bytes"],
        "cache_max_bytes": stats["max_bytes"],
        "memory_level": pressure.level.name.lower(),
        "memory_ratio": pressure.ratio,
        "memory_source": pressure.source,
        "health": _health_summary(health),
    }
    with st.expander("amulet_native status", expanded=expanded):
        c1, c2, c3 = st.columns(3)
        c1.metric("Cache hit rate", f"{stats['hit_rate']:.0%}")
        c2.metric("Cached images", f"{stats['items']} / {stats['bytes'] / _MIB:.1f} MB")
        c3.metric("Memory", f"{pressure.ratio:.0%} ({info['memory_level']})")
        if info["health"] is not None:
            st.caption(f"health: {info['health']['status']}")
    return info
