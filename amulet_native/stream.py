"""Streaming input: large files in bounded memory, uploads under a hard byte limit.

Upload handlers that call ``await file.read()`` and hope get a 2 GB body one day.
These helpers never hold more than they must:

* :func:`stream_file` iterates over a path or a binary file in chunks through one
  reused buffer (``readinto``), or, above ``mmap_threshold``, through read-only
  views of a memory map whose pages are dropped from the resident set behind
  the reader.
* :func:`read_limited` / :func:`aread_limited` read a whole upload (bytes, file
  object, Starlette ``UploadFile`` or ``Request``, chunk iterator, async
  iterator) into one buffer, stop at the first byte past ``max_bytes`` with
  :class:`PayloadTooLargeError` (HTTP 413), and hash the content in the same pass.
* :func:`open_mapped` maps a file read-only; :func:`amulet_native.decode`,
  :func:`amulet_native.probe`, ``hashlib`` and ``numpy.frombuffer`` read it in place.

Example::

    import amulet_native as an

    for chunk in an.stream_file("/data/big.tar"):     # memoryview, valid until the next
        sink.write(chunk)

    body = await an.aread_limited(upload, 20 << 20)    # Starlette UploadFile
    rgb = an.decode(body.data); key = body.digest      # blake2b hex of the same bytes

    with an.open_mapped("/spool/scan.jpg") as m:       # no copy into the heap
        rgb = an.decode(m, limits=an.Limits(max_bytes=0))

Memory maps and truncation: if another process truncates a file while it is
mapped, reading a page past the new end kills the process with SIGBUS (there is
no way to turn that into an exception).  Map only files this process controls,
such as its own spooled uploads; set ``mmap_threshold=None`` to never map.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import io
import os
import select
import stat
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from . import _core
from .errors import PayloadTooLargeError, ValidationError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "ChunkStream",
    "LimitedRead",
    "MappedFile",
    "aread_limited",
    "open_mapped",
    "read_limited",
    "stream_file",
]

MappedFile = _core.MappedFile

_MIB = 1 << 20
#: Bytes read (and hashed) per call while reading an upload: the hash then
#: reads bytes that are still in the CPU cache.
_STEP = _MIB
#: First buffer size when the total is unknown; it doubles up to max_bytes + 1.
_FIRST_CAPACITY = 64 << 10
#: Wait slice for a non-blocking source with no data (Ctrl-C gets through).
_POLL_SECONDS = 0.05

ReadInto = Callable[[memoryview], "int | None"]


# ---- shared helpers -----------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(
            f"{name} must be an integer >= {minimum}, got {value!r}",
            code=f"value.{name}",
            field=name,
        )
    return value


def _type_error(what: str, source: object) -> ValidationError:
    return ValidationError(
        f"{what}, got {type(source).__name__}", code="input.type", field="source"
    )


def _text_mode_error(source: object) -> ValidationError:
    return ValidationError(
        f"{type(source).__name__} is a text stream; open the file in binary mode ('rb')",
        code="input.text_mode",
        field="source",
    )


def _check_binary(f: object) -> None:
    if isinstance(f, io.TextIOBase):
        raise _text_mode_error(f)


def _check_open(f: object) -> None:
    """ValidationError ``input.closed`` for a file object that is already closed
    (at once, rather than a bare ValueError at the first read)."""
    if getattr(f, "closed", False) is True:
        raise ValidationError(
            f"{type(f).__name__} is closed", code="input.closed", field="source"
        )


def _bad_count(f: object, asked: int, got: object) -> ValidationError:
    return ValidationError(
        f"{type(f).__name__}.readinto() of {asked} bytes returned {got!r}",
        code="input.read",
        field="source",
    )


def _readinto_of(f: Any) -> ReadInto:
    """f.readinto (its result checked: a count outside [0, len] would hang the
    reader or silently drop bytes), or an equivalent built on f.read() (one
    copy per read)."""
    readinto = getattr(f, "readinto", None)
    if callable(readinto):

        def checked_readinto(mv: memoryview) -> int | None:
            got = readinto(mv)
            if got is None or (
                isinstance(got, int) and not isinstance(got, bool) and 0 <= got <= len(mv)
            ):
                return got
            raise _bad_count(f, len(mv), got)

        return checked_readinto
    read = getattr(f, "read", None)
    if not callable(read):
        raise _type_error("expected a binary file object (readinto() or read())", f)

    def readinto_via_read(mv: memoryview) -> int | None:
        data = read(len(mv))
        if data is None:
            return None
        if isinstance(data, str):
            raise _text_mode_error(f)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _type_error("read() must return bytes", data)
        n = memoryview(data).nbytes
        if n > len(mv):
            raise ValidationError(
                f"read({len(mv)}) returned {n} bytes", code="input.read", field="source"
            )
        mv[:n] = data
        return n

    return readinto_via_read


def _wait_readable(f: object) -> None:
    """One short wait for a non-blocking source that had no data."""
    try:
        fd = f.fileno()  # type: ignore[attr-defined]
        select.select([fd], [], [], _POLL_SECONDS)
    except (AttributeError, OSError, ValueError):
        time.sleep(0.001)


def _release(view: memoryview) -> None:
    """Release a chunk handed to the caller, so that a stale use raises ValueError.
    When the caller exported it further (numpy.frombuffer), release is refused;
    _exported() then makes the reader move on to a fresh buffer."""
    try:
        view.release()
    except BufferError:
        pass


def _exported(buf: bytearray) -> bool:
    """True while some view of buf is alive.  A bytearray refuses to change size
    while exported; the append fits its spare capacity, so this costs no copy."""
    try:
        buf.append(0)
    except BufferError:
        return True
    del buf[-1]
    return False


# ---- stream_file --------------------------------------------------------------


class ChunkStream:
    """The iterator :func:`stream_file` returns: ``memoryview`` chunks, and a
    context manager that closes whatever ``stream_file`` opened.

    Each chunk is valid until the next one is requested: it is released then
    (a stale use raises ``ValueError``), and on the read path its bytes are
    overwritten by the next read.  Copy (``bytes(chunk)``) what you keep.  If a
    chunk is still exported when the next one is due (say a NumPy array made
    with ``numpy.frombuffer``), the reader switches to a fresh buffer instead of
    overwriting the bytes under that array.
    """

    __slots__ = ("_gen", "_resources", "mapped")

    def __init__(self, gen: Generator[memoryview, None, None], resources: list[Any],
                 mapped: bool) -> None:
        self._gen = gen
        self._resources = resources
        #: True when the chunks are views of a memory map rather than reads.
        self.mapped = mapped

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> memoryview:
        return next(self._gen)

    def close(self) -> None:
        """Release the current chunk and close what :func:`stream_file` opened
        (never a file object the caller passed in).  Idempotent."""
        self._gen.close()
        resources, self._resources = self._resources, []
        for r in resources:
            r.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _read_chunks(f: object, chunk_size: int) -> Generator[memoryview, None, None]:
    readinto = _readinto_of(f)
    buf = bytearray(chunk_size)
    view: memoryview | None = None
    eof = False
    try:
        while not eof:
            if _exported(buf):
                buf = bytearray(chunk_size)
            n = 0
            whole = memoryview(buf)
            try:
                while n < chunk_size:  # fill the chunk: pipes and sockets return short reads
                    got = readinto(whole[n:])
                    if got is None:  # non-blocking source without data
                        if n:
                            break
                        _wait_readable(f)
                        continue
                    if got == 0:
                        eof = True
                        break
                    n += got
                if n == 0:
                    return
                view = whole if n == chunk_size else whole[:n]
            finally:
                if view is not whole:
                    whole.release()
            yield view
            _release(view)
            view = None
    finally:
        if view is not None:
            _release(view)


def _mapped_chunks(m: MappedFile, start: int, chunk_size: int,
                   caller_file: Any) -> Generator[memoryview, None, None]:
    size = m.size
    pos = dropped = start
    # Drop consumed pages from the resident set at least every MiB: the file's
    # pages stay in the page cache, the process's RSS stays ~ one chunk.
    drop_every = max(chunk_size, _MIB)
    whole = memoryview(m)
    view: memoryview | None = None
    try:
        m.advise(_core.ADVISE_SEQUENTIAL, start, size - start)
        while pos < size:
            end = min(pos + chunk_size, size)
            view = whole[pos:end]
            yield view
            _release(view)
            view = None
            pos = end
            if pos - dropped >= drop_every or pos == size:
                m.advise(_core.ADVISE_DONTNEED, dropped, pos - dropped)
                dropped = pos
    finally:
        if view is not None:
            _release(view)
        _release(whole)
        m.close()  # unmapped now, or when the caller's last view goes
        if caller_file is not None and not getattr(caller_file, "closed", False):
            caller_file.seek(pos)  # as if the chunks had been read


def _map_if_large(f: Any, threshold: int | None) -> tuple[MappedFile, int] | None:
    """(map, start offset) when f is a regular file larger than threshold."""
    if threshold is None:
        return None
    try:
        fd = f.fileno()
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= threshold:
            return None
        start = f.tell()
    except (AttributeError, OSError, ValueError):
        return None  # no descriptor (BytesIO, sockets wrapped in objects, ...)
    if start >= st.st_size:
        return None
    return MappedFile(fd), start


def stream_file(
    source: str | os.PathLike[str] | IO[bytes] | io.RawIOBase | io.BufferedIOBase,
    chunk_size: int = _MIB,
    *,
    mmap_threshold: int | None = 50 * _MIB,
) -> ChunkStream:
    """Iterate over a file in ``memoryview`` chunks of ``chunk_size`` bytes (the
    last one shorter) without growing memory.

    ``source``: a path, or a binary file object (read from its current
    position; one without ``readinto`` is read with ``read``; non-blocking
    sources and short reads are handled).  Regular files larger than
    ``mmap_threshold`` bytes (path or file with a descriptor) are memory-mapped
    instead: the chunks are read-only views into the map, read ahead
    sequentially, and pages already passed are dropped from the process's
    resident set.  ``mmap_threshold=None`` never maps (see the module notes on
    SIGBUS).

    A chunk is valid until the next iteration (see :class:`ChunkStream`).  The
    stream closes what it opened when exhausted, on ``close()``, at the end of a
    ``with`` block, or when it is dropped.

    Text-mode files raise :class:`ValidationError` (``input.text_mode``).

    >>> h = hashlib.blake2b()
    >>> with stream_file("video.mp4") as chunks:
    ...     for chunk in chunks:
    ...         h.update(chunk)
    """
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if mmap_threshold is not None:
        mmap_threshold = _check_int("mmap_threshold", mmap_threshold, 0)
    if isinstance(source, (str, os.PathLike)):
        # unbuffered: readinto straight from the kernel; the ChunkStream owns f
        f: Any = open(source, "rb", buffering=0)  # noqa: SIM115
        try:
            mapped = _map_if_large(f, mmap_threshold)
        except BaseException:
            f.close()
            raise
        if mapped is not None:
            f.close()  # the map keeps no descriptor
            m, start = mapped
            return ChunkStream(_mapped_chunks(m, start, chunk_size, None), [m], True)
        return ChunkStream(_read_chunks(f, chunk_size), [f], False)
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise _type_error("stream_file() takes a path or a binary file object", source)
    _check_binary(source)
    if not callable(getattr(source, "readinto", None)) and not callable(
        getattr(source, "read", None)
    ):
        raise _type_error("stream_file() takes a path or a binary file object", source)
    _check_open(source)
    mapped = _map_if_large(source, mmap_threshold)
    if mapped is not None:
        m, start = mapped
        return ChunkStream(_mapped_chunks(m, start, chunk_size, source), [m], True)
    return ChunkStream(_read_chunks(source, chunk_size), [], False)


# ---- read_limited -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitedRead:
    """What :func:`read_limited` returns."""

    data: bytes | bytearray | memoryview
    """The content: the caller's own object for bytes and buffers (no copy),
    otherwise a bytearray filled in place (no final copy)."""
    size: int
    """len(data) in bytes."""
    digest: str | None
    """Hex digest of data (None with ``digest=None``); equal to hashlib's."""
    algorithm: str | None
    """The hashlib name of the digest, e.g. "blake2b"."""


def _new_hasher(digest: object) -> Any:
    if digest is None:
        return None
    if not isinstance(digest, str):
        raise ValidationError(
            f"digest must be a hashlib algorithm name or None, got {digest!r}",
            code="value.digest", field="digest",
        )
    try:
        h = hashlib.blake2b() if digest == "blake2b" else hashlib.new(digest)
    except (ValueError, TypeError):
        h = None
    if h is None or h.digest_size == 0:  # unknown, or shake_* (needs a length)
        raise ValidationError(
            f"unsupported digest {digest!r}", code="value.digest", field="digest"
        )
    return h


def _too_large(limit: int, received: int, declared: int | None = None) -> PayloadTooLargeError:
    if declared is not None:
        msg = f"payload of {declared} bytes exceeds max_bytes {limit}"
    else:
        msg = f"payload exceeds max_bytes {limit} ({received} bytes received)"
    ctx = {"declared": declared} if declared is not None else None
    return PayloadTooLargeError(msg, limit=limit, received=received, context=ctx)


def _uninitialised(size: int) -> bytearray:
    """A bytearray of size bytes that are not zeroed first (the read fills them:
    zeroing would touch every page once more for nothing)."""
    buf = bytearray()
    _core.resize_bytearray(buf, size)
    return buf


class _Accumulator:
    """Collects chunks into one geometrically grown bytearray, hashing each as it
    arrives; refuses (before copying) the chunk that would cross the limit."""

    __slots__ = ("algorithm", "buf", "hasher", "limit", "n")

    def __init__(self, limit: int, hasher: Any, algorithm: str | None, hint: int | None) -> None:
        self.limit = limit
        self.hasher = hasher
        self.algorithm = algorithm
        self.n = 0
        self.buf = _uninitialised(min(limit, hint if hint is not None else _FIRST_CAPACITY))

    def add(self, chunk: object) -> None:
        if isinstance(chunk, str) or not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise _type_error("chunks must be bytes, bytearray or memoryview", chunk)
        with memoryview(chunk) as mv:
            k = mv.nbytes
            if self.n + k > self.limit:
                raise _too_large(self.limit, self.n + k)
            end = self.n + k
            if end > len(self.buf):
                _core.resize_bytearray(self.buf, min(max(2 * len(self.buf), end), self.limit))
            flat = mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")
            self.buf[self.n:end] = flat
            if self.hasher is not None:
                self.hasher.update(flat)
            self.n = end

    def result(self) -> LimitedRead:
        del self.buf[self.n:]
        hexd = self.hasher.hexdigest() if self.hasher is not None else None
        return LimitedRead(self.buf, self.n, hexd, self.algorithm)


def _remaining(f: Any) -> int | None:
    """Bytes left in a seekable file, or None when it cannot tell."""
    try:
        if not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return max(0, int(end) - int(pos))
    except (AttributeError, OSError, ValueError):
        return None


def _read_file(f: Any, limit: int, hasher: Any, algorithm: str | None,
               hint: int | None) -> LimitedRead:
    """readinto straight into the result; never asks for more than limit + 1 bytes."""
    _check_binary(f)
    _check_open(f)
    readinto = _readinto_of(f)
    if hint is None:
        hint = _remaining(f)
    if hint is not None and hint > limit:
        raise _too_large(limit, 0, hint)
    # One spare byte past a known size detects a file that grew, without a
    # second buffer; an unknown size starts small and doubles.
    buf = _uninitialised(hint + 1 if hint is not None else min(limit + 1, _FIRST_CAPACITY))
    n = 0
    while True:
        if n == len(buf):
            if n > limit:
                raise _too_large(limit, n)
            _core.resize_bytearray(buf, min(2 * len(buf), limit + 1))
        with memoryview(buf) as whole:
            got = readinto(whole[n:min(len(buf), n + _STEP)])
            if got is None:
                _wait_readable(f)
                continue
            if got == 0:
                break
            if hasher is not None:
                hasher.update(whole[n:n + got])
        n += got
    del buf[n:]
    return LimitedRead(buf, n, hasher.hexdigest() if hasher is not None else None, algorithm)


def _as_buffer(source: object) -> memoryview | None:
    """A flat byte view of a buffer-protocol object, or None for anything else."""
    if isinstance(source, str):
        return None
    try:
        mv = memoryview(source)  # type: ignore[arg-type]
    except TypeError:
        return None
    if mv.format == "B" and mv.ndim == 1:
        return mv
    try:
        return mv.cast("B")
    except TypeError:
        mv.release()
        raise _type_error("buffers must be C-contiguous", source) from None


def _from_buffer(source: object, mv: memoryview, limit: int, hasher: Any,
                 algorithm: str | None) -> LimitedRead:
    if mv.nbytes > limit:
        received = mv.nbytes
        mv.release()
        raise _too_large(limit, received)
    if hasher is not None:
        hasher.update(mv)
    size = mv.nbytes
    data: bytes | bytearray | memoryview = mv
    if isinstance(source, (bytes, bytearray)):
        data = source
        mv.release()  # a bytearray stays resizable
    return LimitedRead(data, size, hasher.hexdigest() if hasher else None, algorithm)


def _is_upload_file(source: object) -> bool:
    """A Starlette/FastAPI UploadFile (duck-typed: no import of starlette)."""
    return (
        hasattr(source, "file") and hasattr(source, "filename") and hasattr(source, "size")
        and not isinstance(source, io.IOBase)
    )


def _prepare(max_bytes: object, digest: object, size_hint: object) -> tuple[int, Any, int | None]:
    limit = _check_int("max_bytes", max_bytes, 1)
    hasher = _new_hasher(digest)
    hint = None if size_hint is None else _check_int("size_hint", size_hint, 0)
    if hint is not None and hint > limit:
        raise _too_large(limit, 0, hint)
    return limit, hasher, hint


def read_limited(
    source: object,
    max_bytes: int,
    *,
    digest: str | None = "blake2b",
    size_hint: int | None = None,
) -> LimitedRead:
    """Read a whole upload, refusing more than ``max_bytes``, and hash it in the
    same pass.

    ``source``: bytes or any contiguous buffer (used as is), a binary file
    object (read with ``readinto``; at most ``max_bytes + 1`` bytes are ever
    requested), a Starlette/FastAPI ``UploadFile`` (its spooled file), or an
    iterable of bytes/bytearray/memoryview chunks.  ``size_hint`` (e.g. the
    Content-Length) sizes the buffer up front; a hint or a known file size
    above ``max_bytes`` is refused before anything is read.  ``digest`` is any
    fixed-size hashlib algorithm name, or None.

    Raises :class:`PayloadTooLargeError` (``input.too_large``, ``http_status``
    413) as soon as more than ``max_bytes`` arrive, :class:`ValidationError`
    for bad arguments.  Use :func:`aread_limited` for async sources.

    >>> body = read_limited(request_file, 20 << 20)
    >>> rgb = decode(body.data)
    >>> body.digest == hashlib.blake2b(body.data).hexdigest()
    True
    """
    limit, hasher, hint = _prepare(max_bytes, digest, size_hint)
    algorithm = digest if hasher is not None else None
    mv = _as_buffer(source)
    if mv is not None:
        return _from_buffer(source, mv, limit, hasher, algorithm)
    if _is_upload_file(source):
        size = getattr(source, "size", None)
        if hint is None and isinstance(size, int):
            hint = size
        return _read_file(source.file, limit, hasher, algorithm, hint)  # type: ignore[attr-defined]
    if isinstance(source, (str, os.PathLike)):
        raise _type_error("read_limited() reads data, not a path: open the file first", source)
    if isinstance(source, io.TextIOBase):
        raise _text_mode_error(source)
    if callable(getattr(source, "stream", None)) and hasattr(source, "headers"):
        raise _type_error("a Request needs aread_limited()", source)
    read = getattr(source, "read", None)
    if callable(getattr(source, "readinto", None)) or callable(read):
        if inspect.iscoroutinefunction(read):
            raise _type_error("an async source needs aread_limited()", source)
        return _read_file(source, limit, hasher, algorithm, hint)
    if hasattr(source, "__aiter__"):
        raise _type_error("an async iterator needs aread_limited()", source)
    if not hasattr(source, "__iter__"):
        raise _type_error(
            "expected bytes, a binary file object, an UploadFile or an iterable of chunks",
            source,
        )
    acc = _Accumulator(limit, hasher, algorithm, hint)
    it = iter(source)
    try:
        for chunk in it:
            acc.add(chunk)
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            close()  # a generator cut short runs its cleanup now
    return acc.result()


def _is_os_file(f: object) -> bool:
    try:
        f.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True


async def _read_async_iter(it: AsyncIterator[Any], acc: _Accumulator) -> LimitedRead:
    try:
        async for chunk in it:
            acc.add(chunk)
    finally:
        aclose = getattr(it, "aclose", None)
        if callable(aclose):
            await aclose()
    return acc.result()


async def aread_limited(
    source: object,
    max_bytes: int,
    *,
    digest: str | None = "blake2b",
    size_hint: int | None = None,
) -> LimitedRead:
    """The async :func:`read_limited`: everything it accepts, plus async
    iterators of chunks (``request.stream()``), a Starlette ``Request`` (its
    Content-Length is the size hint), and objects with an async ``read(n)``.

    Files on disk (an ``UploadFile`` spooled to disk, an open file) are read in
    a worker thread so the event loop keeps serving; everything else is read on
    the loop.  A cancelled read of a file in a worker thread runs to its end
    (bounded by ``max_bytes``) and is then discarded.

    >>> @app.post("/upload")
    ... async def upload(request: Request):
    ...     body = await aread_limited(request, 20 << 20)   # 413 past 20 MiB
    ...     return {"digest": body.digest, "bytes": body.size}
    """
    limit, hasher, hint = _prepare(max_bytes, digest, size_hint)
    algorithm = digest if hasher is not None else None
    if _as_buffer(source) is not None:
        return read_limited(source, limit, digest=digest, size_hint=size_hint)
    if _is_upload_file(source):
        size = getattr(source, "size", None)
        if hint is None and isinstance(size, int):
            hint = size
        f = source.file  # type: ignore[attr-defined]
        return await asyncio.to_thread(_read_file, f, limit, hasher, algorithm, hint)
    stream = getattr(source, "stream", None)
    headers = getattr(source, "headers", None)
    if callable(stream) and headers is not None:  # a Starlette Request
        declared = headers.get("content-length")
        if hint is None and declared is not None and declared.isdigit():
            hint = int(declared)
            if hint > limit:
                raise _too_large(limit, 0, hint)
        return await _read_async_iter(stream(), _Accumulator(limit, hasher, algorithm, hint))
    if hasattr(source, "__aiter__"):
        return await _read_async_iter(
            source, _Accumulator(limit, hasher, algorithm, hint)  # type: ignore[arg-type]
        )
    read = getattr(source, "read", None)
    if inspect.iscoroutinefunction(read):
        acc = _Accumulator(limit, hasher, algorithm, hint)
        while True:  # at most limit + 1 bytes are requested in all
            chunk = await read(min(_STEP, limit + 1 - acc.n))
            if not chunk:
                return acc.result()
            acc.add(chunk)
    if _is_os_file(source) and not isinstance(source, io.TextIOBase):
        return await asyncio.to_thread(_read_file, source, limit, hasher, algorithm, hint)
    return read_limited(source, limit, digest=digest, size_hint=hint)


# ---- open_mapped --------------------------------------------------------------


def open_mapped(path: str | os.PathLike[str]) -> MappedFile:
    """Map the regular file at ``path`` read-only and return a
    :class:`MappedFile`: a buffer (no copy into the heap) that ``decode``,
    ``probe``, ``hashlib``, ``memoryview`` and ``numpy.frombuffer`` read in
    place, and nothing can write through.

    ``close()`` (or the end of a ``with`` block) refuses new views at once
    (:class:`ValidationError` ``input.closed``) and unmaps the pages when the
    last view (say a NumPy array over the map) is released.  The map keeps no
    file descriptor open.  An empty file raises :class:`ValidationError`
    (``input.empty``); a directory, pipe or device ``input.type``.  Read the
    module notes on SIGBUS before mapping files other processes may truncate.

    >>> with open_mapped("/spool/upload-123.jpg") as m:
    ...     info = probe(m)
    ...     rgb = decode(m, limits=Limits(max_bytes=0))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise _type_error("open_mapped() takes a path", path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return MappedFile(fd)
    finally:
        os.close(fd)
