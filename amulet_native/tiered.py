"""TieredCache: an in-process L1 cache in front of a shared Redis L2.

Several uvicorn/gunicorn workers (or hosts) each keep hot entries in their own
L1 (``amulet_native.Cache`` or any object with ``get``/``set``/``pop``/``clear``)
and share everything else through one Redis server.  Example::

    import amulet_native as an
    import redis

    tc = an.TieredCache(an.Cache(max_items=1024), "redis://localhost:6379/0",
                        prefix="thumbs:", ttl=3600)
    tc.set(("thumb", digest, 256), array)      # both tiers, PX 3600000 in Redis
    arr = tc.get(("thumb", digest, 256))       # L1, else Redis (fills L1), else None

    @an.cached(cache=tc)                       # the @cached protocol: get/set (aget/aset)
    def embed(image_id: str) -> np.ndarray: ...

Reads try L1, then Redis (a Redis hit fills L1 with the entry's remaining
lifetime); writes and deletes go to both tiers; :meth:`TieredCache.clear` deletes
only this prefix's keys (``SCAN MATCH``, never ``FLUSHDB``).

Keys are encoded deterministically across processes (never ``hash()``, which is
randomised per process): ``str``, ``bytes``, ``int``, ``float``, ``bool``,
``None``, classes (by module and qualified name), the keyword marker of
``@cached`` keys and tuples or lists of these
get a type-tagged encoding (so ``1``, ``True``,
``1.0`` and ``"1"`` are four different keys), replaced by its BLAKE2b-256 hex
digest when longer than 128 bytes.  Other key types raise
:class:`~amulet_native.errors.SerializationError` (a ``TypeError``) with code
``"serialize.key_type"`` unless ``key_serializer`` (key -> ``bytes``/``str``)
is given.  The L1 is keyed by the same encoded key, so both tiers agree on key
identity.

Values never go through pickle by default: Redis data is not trusted to run
code.  ``bytes`` (also ``bytearray``/``memoryview``, returned as ``bytes``),
``str``, ``None``, ``bool``, ``int``, ``float`` and NumPy arrays of bool,
(u)int8..64, float16/32/64 and complex64/128 dtypes (either byte order; never
object, string, structured or datetime dtypes) are stored in a type-tagged
binary layout, see :func:`encode_value`.  Other values raise
``SerializationError`` (code ``"serialize.value_type"``, or
``"serialize.dtype"`` for arrays of another dtype) unless a ``serializer``
(an object with ``dumps(obj) -> bytes`` and ``loads(bytes) -> obj``) is given.
Passing ``serializer=pickle`` works, but it is the caller's trust decision: anyone
who can write to that Redis can then run code in every worker.

Arrays come back as read-only arrays over the bytes Redis returned (no copy);
an entry set in this process is returned from L1 as a read-only array over its
encoded buffer, so later changes to the array passed to ``set`` never reach the
cache.  Every value read from Redis is validated (magic, version, header CRC-32,
dtype whitelist, ``ndim <= 32``, shape against the data length); a malformed
value is a miss counted in ``stats()["l2_corrupt"]``, never an exception or
garbage.  The CRC covers the headers only; the bulk data is trusted to TCP and
Redis (a CRC over a 1 MiB array would cost about a quarter of the Redis read).

Redis failures never reach the caller: a refused or reset connection, a timeout
or an error reply is counted (``l2_errors``, ``l2_timeouts``, ``last_error``)
and the call carries on with L1 alone.  After a connection failure or timeout
L2 is skipped for ``backoff`` seconds (``l2_skipped`` counts those calls), so a
dead Redis does not add a timeout to every request; the first call after the
back-off tries again and redis-py reconnects by itself.  Writes and deletes made
while L2 is unreachable reach L1 only: after recovery Redis may still hold the
older value of those keys until its TTL ends, so give L2 entries a ``ttl``, and
``l1_ttl`` bounds how long a worker serves an entry another worker replaced.

Redis itself: any Redis >= 4 (``UNLINK``); for a cache, run it without
persistence, e.g. ``redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no``
with a ``maxmemory`` and ``maxmemory-policy allkeys-lru`` (Debian: ``apt-get install
redis-server``; the test suite starts its own, see ``tests/redis_server.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypedDict, overload

import numpy as np
import numpy.typing as npt

from . import _core
from ._optional import _require
from .errors import SerializationError, ValidationError

if TYPE_CHECKING:
    import redis
    import redis as _redis_t
    import redis.asyncio
    import redis.asyncio as _aredis_t

__all__ = [
    "AsyncTieredCache",
    "L1Cache",
    "Serializer",
    "TieredCache",
    "TieredStats",
    "decode_value",
    "encode_key",
    "encode_value",
]


class L1Cache(Protocol):
    """What TieredCache needs from its L1: ``amulet_native.Cache`` fits."""

    # Overloads, so that Mapping-style get/pop (amulet_native.Cache) match.
    @overload
    def get(self, key: Any, /) -> Any: ...
    @overload
    def get(self, key: Any, default: Any, /) -> Any: ...

    def set(self, key: Any, value: Any, ttl: float | None = None) -> Any: ...

    @overload
    def pop(self, key: Any, /) -> Any: ...
    @overload
    def pop(self, key: Any, default: Any, /) -> Any: ...

    def clear(self) -> Any: ...


class Serializer(Protocol):
    """An explicit codec for values the built-in layout does not cover
    (``pickle`` fits: trusting it is the caller's decision)."""

    def dumps(self, obj: Any, /) -> bytes: ...

    def loads(self, data: bytes, /) -> Any: ...


class TieredStats(TypedDict):
    """Counters of :meth:`TieredCache.stats` (since construction)."""

    l1_hits: int
    l1_misses: int
    l2_hits: int
    l2_misses: int
    l2_corrupt: int
    l2_errors: int
    l2_timeouts: int
    l2_skipped: int
    l2_available: bool
    last_error: str | None
    last_corrupt: str | None


# ---- keys ----------------------------------------------------------------------

#: Encoded keys longer than this are replaced by "h" + their BLAKE2b-256 hex digest.
MAX_RAW_KEY = 128
#: Deepest tuple nesting a key may have.
MAX_KEY_DEPTH = 16

KeySerializer = Callable[[Any], bytes | str]
_KWD_MARK: Final = _core._KWD_MARK


def _key_part(key: Any, key_serializer: KeySerializer | None, depth: int) -> bytes:
    t = type(key)
    if t is str:
        b: bytes = key.encode("utf-8", "surrogatepass")
        return b"s%d:" % len(b) + b
    if t is int:
        return _int_key(key)
    if t is bytes:
        raw: bytes = key
        return b"b%d:" % len(raw) + raw
    if t is tuple:
        if depth >= MAX_KEY_DEPTH:
            raise SerializationError(
                f"key tuples nest deeper than {MAX_KEY_DEPTH} levels",
                code="serialize.key_depth",
                type_name="tuple",
            )
        return b"(" + b"".join(_key_part(k, key_serializer, depth + 1) for k in key) + b")"
    if key is None:
        return b"N"
    if key is _KWD_MARK:  # @cached keys of calls with keyword arguments
        return b"K"
    if t is bool:
        return b"T" if key else b"F"
    if t is float:
        return b"f" + float.hex(key).encode() + b";"
    # Subclasses (IntEnum, StrEnum, ...) encode as their base value, like == does.
    if isinstance(key, bool):
        return b"T" if key else b"F"
    if isinstance(key, int):
        return _int_key(int.__index__(key))
    if isinstance(key, str):
        b = str.encode(key, "utf-8", "surrogatepass")
        return b"s%d:" % len(b) + b
    if isinstance(key, float):
        return b"f" + float.hex(key).encode() + b";"
    if isinstance(key, bytes):
        raw = bytes(key)  # a bytes subclass: its plain value
        return b"b%d:" % len(raw) + raw
    if isinstance(key, (tuple, list)):  # lists too: functools-style keys are list subclasses
        if depth >= MAX_KEY_DEPTH:
            raise SerializationError(
                f"key tuples nest deeper than {MAX_KEY_DEPTH} levels",
                code="serialize.key_depth",
                type_name=t.__name__,
            )
        parts = b"".join(_key_part(k, key_serializer, depth + 1) for k in key)
        return (b"(" + parts + b")") if isinstance(key, tuple) else (b"[" + parts + b"]")
    if isinstance(key, type):  # e.g. the argument types of a typed=True cache key
        name = f"{key.__module__}.{key.__qualname__}".encode("utf-8", "surrogatepass")
        return b"c%d:" % len(name) + name
    if key_serializer is not None:
        out = key_serializer(key)
        if isinstance(out, str):
            out = out.encode("utf-8", "surrogatepass")
        if not isinstance(out, bytes):
            raise SerializationError(
                f"key_serializer returned {type(out).__name__}, expected bytes or str",
                code="serialize.key_type",
                type_name=type(out).__name__,
            )
        return b"k%d:" % len(out) + out
    raise SerializationError(
        f"cannot use a {t.__name__} as a cache key: use str, bytes, int, float, bool, "
        "None or tuples of these, or pass key_serializer=",
        code="serialize.key_type",
        type_name=t.__name__,
    )


def _int_key(key: int) -> bytes:
    if key.bit_length() > _INT_BITS:  # beyond int("...") digit limits: hexadecimal
        return b"x%x;" % key
    return b"i%d;" % key


def encode_key(key: Any, *, key_serializer: KeySerializer | None = None) -> bytes:
    """The process-independent encoding of ``key`` (without the prefix).

    ``encode_key("a") == b"s1:a"``, ``encode_key((1, None)) == b"(i1;N)"``;
    encodings longer than 128 bytes become ``b"h" + blake2b_256_hex``.
    Raises SerializationError (a TypeError) for other key types unless
    ``key_serializer`` maps them to bytes or str.
    """
    raw = _key_part(key, key_serializer, 0)
    if len(raw) > MAX_RAW_KEY:
        return b"h" + hashlib.blake2b(raw, digest_size=32).hexdigest().encode()
    return raw


# ---- values --------------------------------------------------------------------
#
# Layout (all integers little-endian):
#
#   0   4  magic b"\x89AN\n" (high bit and newline catch text-mode mangling, as in PNG)
#   4   1  version (1)
#   5   1  kind: b bytes, s str (UTF-8), n None, t bool, i int (ASCII decimal),
#             f float (IEEE double), a ndarray, o serializer output
#   6   2  header length H: the payload starts at offset H
#   8   8  expiry, Unix time in ms (0: none); lets a reader fill L1 with the rest
#  16   8  payload length (the value is exactly H + this long: catches truncation)
#  24   4  CRC-32 of bytes [0, 24) and [28, H)
#  28      kind-specific header; for "a": dtype kind char (b i u f c), byte order char
#             (< > |), itemsize, ndim (<= 32), then ndim u64 dimensions, zero padding
#             to a multiple of 16 so the data is aligned for every dtype
#   H      payload; for "a": the elements in C order, exactly prod(shape) * itemsize bytes

MAGIC: Final = b"\x89AN\n"
VERSION: Final = 1
MAX_NDIM: Final = 32
_ENV = struct.Struct("<4sBBHQQ")
_CRC = struct.Struct("<I")
_ARR = struct.Struct("<ccBB")
_BASE = _ENV.size + _CRC.size  # 28
_HEAD = struct.Struct("<4sBBHQQI")  # _ENV then the CRC
_ALLOWED_SIZES: Final = {
    "b": (1,),
    "i": (1, 2, 4, 8),
    "u": (1, 2, 4, 8),
    "f": (2, 4, 8),
    "c": (8, 16),
}
_INT_RE = re.compile(rb"-?(0|[1-9][0-9]*)")
_MAX_DIM = 1 << 62
_INT_BITS = 12000  # ints up to ~3600 decimal digits, under Python's 4300-digit limit


class CorruptValue(Exception):
    """Internal: a value read from Redis failed validation (counted as a miss)."""


def _header(
    kind: bytes, expires_ms: int, payload_len: int, extra: bytes = b"", align: int = 1
) -> bytearray:
    size = _BASE + len(extra)
    size += -size % align
    head = bytearray(size)
    _ENV.pack_into(head, 0, MAGIC, VERSION, kind[0], size, expires_ms, payload_len)
    head[_BASE : _BASE + len(extra)] = extra
    crc = zlib.crc32(memoryview(head)[_BASE:], zlib.crc32(memoryview(head)[: _ENV.size]))
    _CRC.pack_into(head, _ENV.size, crc)
    return head


def _pack(kind: bytes, expires_ms: int, payload: bytes | bytearray) -> bytes:
    """Header + payload of a kind without its own header (everything but arrays)."""
    env = _ENV.pack(MAGIC, VERSION, kind[0], _BASE, expires_ms, len(payload))
    return b"".join((env, _CRC.pack(zlib.crc32(env)), payload))


def _array_dtype_str(arr: npt.NDArray[Any]) -> str:
    dt = arr.dtype
    s = dt.str  # explicit byte order: "<i4", ">f8", "|u1", "|b1"
    if (
        dt.fields is not None
        or s[1] not in _ALLOWED_SIZES
        or dt.itemsize not in _ALLOWED_SIZES[s[1]]
    ):
        raise SerializationError(
            f"cannot store an array of dtype {dt} in Redis without a serializer: supported "
            "are bool, (u)int8..64, float16/32/64 and complex64/128",
            code="serialize.dtype",
            type_name=str(dt),
        )
    return s


def encode_value(
    value: Any, *, expires_ms: int = 0, serializer: Serializer | None = None
) -> tuple[bytes | bytearray, Any]:
    """Encode ``value`` for Redis; returns ``(payload, l1_value)``.

    ``l1_value`` is what a reader of this process gets back: the value itself,
    ``bytes`` for bytes-like input, or for an array a read-only array over the
    encoded payload (so the caller's later writes to its array do not alter
    the cache).  Raises SerializationError (a TypeError) for a value the layout
    does not cover when no ``serializer`` is given.
    """
    t = type(value)
    if t is np.ndarray:
        dstr = _array_dtype_str(value)
        if value.ndim > MAX_NDIM:
            raise SerializationError(
                f"array has {value.ndim} dimensions, at most {MAX_NDIM} can be stored",
                code="serialize.ndim",
                type_name="ndarray",
            )
        extra = _ARR.pack(dstr[1].encode(), dstr[0].encode(), value.itemsize, value.ndim)
        extra += struct.pack(f"<{value.ndim}Q", *value.shape)
        head = _header(b"a", expires_ms, value.nbytes, extra, align=16)
        buf = bytearray(len(head) + value.nbytes)
        buf[: len(head)] = head
        view = np.frombuffer(buf, dtype=dstr, count=value.size, offset=len(head))
        view = view.reshape(value.shape)
        np.copyto(view, value, casting="no")  # one copy, any input layout
        view.flags.writeable = False
        return buf, view
    if t is bytes:
        return _pack(b"b", expires_ms, value), value
    if t is str:
        return _pack(b"s", expires_ms, value.encode("utf-8", "surrogatepass")), value
    if value is None:
        return _pack(b"n", expires_ms, b""), None
    if t is bool:
        return _pack(b"t", expires_ms, b"\x01" if value else b"\x00"), value
    if t is int:
        if value.bit_length() > _INT_BITS:
            raise SerializationError(
                f"int of {value.bit_length()} bits is too large to store without a serializer",
                code="serialize.value_type",
                type_name="int",
            )
        return _pack(b"i", expires_ms, b"%d" % value), value
    if t is float:
        return _pack(b"f", expires_ms, struct.pack("<d", value)), value
    if isinstance(value, (bytes, bytearray, memoryview)):  # bytes subclasses included
        raw = bytes(value)
        return _pack(b"b", expires_ms, raw), raw
    if isinstance(value, str):
        plain = str(str.__str__(value))
        return _pack(b"s", expires_ms, plain.encode("utf-8", "surrogatepass")), plain
    if serializer is not None:
        out = serializer.dumps(value)
        if not isinstance(out, (bytes, bytearray)):
            raise SerializationError(
                f"serializer.dumps returned {type(out).__name__}, expected bytes",
                code="serialize.value_type",
                type_name=type(out).__name__,
            )
        return _pack(b"o", expires_ms, out), value
    raise SerializationError(
        f"cannot store a {t.__name__} in Redis without a serializer: use bytes, str, None, "
        "bool, int, float or a NumPy array, or pass serializer=",
        code="serialize.value_type",
        type_name=t.__name__,
    )


def _decode_array(raw: bytes, head_len: int) -> npt.NDArray[Any]:
    if head_len < _BASE + _ARR.size or head_len % 16:
        raise CorruptValue("array header length")
    kind, order, itemsize, ndim = _ARR.unpack_from(raw, _BASE)
    k = kind.decode("latin-1")
    if k not in _ALLOWED_SIZES or itemsize not in _ALLOWED_SIZES[k]:
        raise CorruptValue("array dtype not allowed")
    if order not in (b"<", b">", b"|") or (order == b"|") != (itemsize == 1):
        raise CorruptValue("array byte order")
    if ndim > MAX_NDIM:
        raise CorruptValue("array ndim")
    dims_end = _BASE + _ARR.size + 8 * ndim
    if head_len != dims_end + (-dims_end % 16):
        raise CorruptValue("array header length")
    if any(raw[dims_end:head_len]):
        raise CorruptValue("array header padding")
    shape = struct.unpack_from(f"<{ndim}Q", raw, _BASE + _ARR.size)
    data_len = len(raw) - head_len
    count = 1
    nonzero = itemsize
    for d in shape:  # each product stays below 2**124: no unbounded growth
        if d >= _MAX_DIM:
            raise CorruptValue("array dimension too large")
        count *= d
        if d:
            nonzero *= d
            if nonzero >= _MAX_DIM:
                raise CorruptValue("array too large")
    if count * itemsize != data_len:
        raise CorruptValue("array data length does not match its shape")
    dtype = np.dtype(order.decode() + k + str(itemsize))
    if k == "b" and count and np.frombuffer(raw, np.uint8, count, head_len).max() > 1:
        raise CorruptValue("bool array holds values other than 0 and 1")
    return np.frombuffer(raw, dtype, count, head_len).reshape(shape)


def decode_value(
    raw: bytes, *, now_ms: int | None = None, serializer: Serializer | None = None
) -> tuple[Any, float | None]:
    """Decode a payload of :func:`encode_value`; returns ``(value, seconds_left)``.

    ``seconds_left`` is None for entries without expiry.  Raises
    ``CorruptValue`` (with the reason) for anything malformed, and for an entry
    already expired (``seconds_left <= 0``) returns it with a non-positive
    ``seconds_left``.  Arrays are read-only views of ``raw``.
    """
    if type(raw) is not bytes:
        raise CorruptValue(f"Redis returned {type(raw).__name__}, not bytes")
    if len(raw) < _BASE:
        raise CorruptValue("shorter than the header")
    magic, version, kind, head_len, expires_ms, payload_len, crc = _HEAD.unpack_from(raw, 0)
    if magic != MAGIC:
        raise CorruptValue("bad magic")
    if version != VERSION:
        raise CorruptValue(f"unknown layout version {version}")
    if head_len < _BASE or head_len > len(raw):
        raise CorruptValue("header length")
    if head_len + payload_len != len(raw):
        raise CorruptValue("value length does not match its header (truncated?)")
    actual = zlib.crc32(raw[: _ENV.size])
    if head_len > _BASE:
        actual = zlib.crc32(raw[_BASE:head_len], actual)
    if actual != crc:
        raise CorruptValue("header checksum")
    left: float | None = None
    if expires_ms:
        left = (expires_ms - (now_ms if now_ms is not None else _now_ms())) / 1000.0
    if kind == 0x61:  # "a"
        return _decode_array(raw, head_len), left
    if head_len != _BASE:
        raise CorruptValue("header length")
    payload = raw[_BASE:]
    if kind == 0x62:  # "b"
        return payload, left
    if kind == 0x73:  # "s"
        try:
            return payload.decode("utf-8", "surrogatepass"), left
        except UnicodeDecodeError:
            raise CorruptValue("str value is not UTF-8") from None
    if kind == 0x6E:  # "n"
        if payload:
            raise CorruptValue("None value has a payload")
        return None, left
    if kind == 0x74:  # "t"
        if payload not in (b"\x00", b"\x01"):
            raise CorruptValue("bad bool value")
        return payload == b"\x01", left
    if kind == 0x69:  # "i"
        if len(payload) > 4000 or not _INT_RE.fullmatch(payload):
            raise CorruptValue("bad int value")
        return int(payload), left
    if kind == 0x66:  # "f"
        if len(payload) != 8:
            raise CorruptValue("bad float value")
        return struct.unpack("<d", payload)[0], left
    if kind == 0x6F:  # "o"
        if serializer is None:
            raise CorruptValue("value needs a serializer and none is configured")
        try:
            return serializer.loads(payload), left
        except Exception as exc:  # noqa: BLE001 - any failure of loads means a bad value
            raise CorruptValue(f"serializer.loads failed: {type(exc).__name__}") from None
    raise CorruptValue(f"unknown value kind {kind}")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- the tiered cache ------------------------------------------------------------

_MISSING: Any = object()
_COUNTERS = (
    "l1_hits",
    "l1_misses",
    "l2_hits",
    "l2_misses",
    "l2_corrupt",
    "l2_errors",
    "l2_timeouts",
    "l2_skipped",
)
_SCAN_COUNT = 1000
_UNLINK_BATCH = 500


def _glob_escape(prefix: bytes) -> bytes:
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix)


def _check_seconds(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None")
    if not math.isfinite(value) or not (value >= 0 if allow_zero else value > 0):
        raise ValidationError(
            f"{name} must be a finite number of seconds {'>= 0' if allow_zero else '> 0'}, "
            f"got {value!r}",
            code="value.invalid",
            field=name,
        )


class _TieredBase:
    """Everything but the I/O: keys, codec, L1, counters and the back-off."""

    def __init__(
        self,
        l1: L1Cache,
        *,
        prefix: str | bytes,
        ttl: float | None,
        l1_ttl: float | None,
        serializer: Serializer | None,
        key_serializer: KeySerializer | None,
        backoff: float,
    ) -> None:
        rex = _require("redis.exceptions", "redis")  # optional dependency: imported on use

        prefix_b = prefix.encode() if isinstance(prefix, str) else prefix
        if not isinstance(prefix_b, bytes):
            raise TypeError("prefix must be str or bytes")
        if not prefix_b:
            # clear() deletes "prefix*": an empty prefix would wipe the database.
            raise ValidationError("prefix must not be empty", code="value.invalid", field="prefix")
        _check_seconds("ttl", ttl)
        _check_seconds("l1_ttl", l1_ttl)
        _check_seconds("backoff", backoff, allow_zero=True)
        if serializer is not None and not (
            hasattr(serializer, "dumps") and hasattr(serializer, "loads")
        ):
            raise TypeError("serializer needs dumps() and loads() methods")
        if key_serializer is not None and not callable(key_serializer):
            raise TypeError("key_serializer must be callable")
        self.l1 = l1
        self.prefix = prefix_b
        self.ttl = ttl
        self.l1_ttl = l1_ttl
        self.serializer = serializer
        self.key_serializer = key_serializer
        self.backoff = float(backoff)
        self._timeouts: tuple[type[BaseException], ...] = (rex.TimeoutError, TimeoutError)
        # Failures after which L2 is skipped for `backoff` seconds; any other Redis
        # error (an error reply) is counted but does not stop L2.
        self._down_errors: tuple[type[BaseException], ...] = (
            rex.ConnectionError,
            rex.TimeoutError,
            OSError,
        )
        self._l2_errors: tuple[type[BaseException], ...] = (rex.RedisError, OSError)
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._last_error: str | None = None
        self._last_corrupt: str | None = None
        self._down_until = 0.0

    # -- helpers shared by the sync and async front ends

    def redis_key(self, key: Any) -> bytes:
        """The Redis key of ``key``: prefix + :func:`encode_key`."""
        return self.prefix + encode_key(key, key_serializer=self.key_serializer)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _l2_ready(self) -> bool:
        if self._down_until and time.monotonic() < self._down_until:
            self._count("l2_skipped")
            return False
        return True

    def _l2_failed(self, exc: BaseException) -> None:
        timeout = isinstance(exc, self._timeouts)
        down = timeout or isinstance(exc, self._down_errors)
        with self._lock:
            self._counts["l2_timeouts" if timeout else "l2_errors"] += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            if down:
                self._down_until = time.monotonic() + self.backoff

    def _resolve_ttl(self, ttl: float | None) -> float | None:
        # None means the cache's default (what @cached passes when it has no ttl);
        # math.inf means no expiry even when the cache has a default.
        if ttl is None:
            return self.ttl
        if ttl == math.inf:
            return None
        _check_seconds("ttl", ttl)
        return ttl

    def _l1_ttl(self, ttl: float | None) -> float | None:
        if self.l1_ttl is None:
            return ttl
        return self.l1_ttl if ttl is None else min(ttl, self.l1_ttl)

    def _encode(self, value: Any, ttl: float | None) -> tuple[bytes | bytearray, Any, int | None]:
        px = None if ttl is None else max(1, int(ttl * 1000 + 0.999))
        expires = 0 if px is None else _now_ms() + px
        payload, l1_value = encode_value(value, expires_ms=expires, serializer=self.serializer)
        return payload, l1_value, px

    def _l1_store(self, rkey: bytes, value: Any, ttl: float | None) -> tuple[Any, int | None]:
        """Encode ``value``, store it in L1; the Redis payload and ``PX`` to send."""
        ttl = self._resolve_ttl(ttl)
        payload, l1_value, px = self._encode(value, ttl)
        self.l1.set(rkey, l1_value, ttl=self._l1_ttl(ttl))
        return payload, px

    def _scan_match(self) -> bytes:
        """The ``SCAN MATCH`` pattern of this cache's keys (for clear)."""
        return _glob_escape(self.prefix) + b"*"

    def _l1_lookup(self, rkey: bytes) -> Any:
        value = self.l1.get(rkey, _MISSING)
        self._count("l1_misses" if value is _MISSING else "l1_hits")
        return value

    def _from_l2(self, rkey: bytes, raw: Any, default: Any) -> Any:
        """Decode a Redis reply, fill L1 on a hit; default on a miss or a bad value."""
        if raw is None:
            self._count("l2_misses")
            return default
        try:
            value, left = decode_value(raw, serializer=self.serializer)
        except CorruptValue as exc:
            with self._lock:
                self._counts["l2_corrupt"] += 1
                self._last_corrupt = str(exc)
            return default
        if left is not None and left <= 0:
            self._count("l2_misses")  # expired by our clock; Redis drops it soon
            return default
        self._count("l2_hits")
        self.l1.set(rkey, value, ttl=self._l1_ttl(left))
        return value

    def stats(self) -> TieredStats:
        """Counters since construction, plus ``l2_available`` (False during a
        back-off), ``last_error`` (the last Redis failure, ``"Type: message"``)
        and ``last_corrupt`` (why the last malformed value was refused)."""
        with self._lock:
            c = dict(self._counts)
            last_error, last_corrupt = self._last_error, self._last_corrupt
            down_until = self._down_until
        return TieredStats(
            l1_hits=c["l1_hits"],
            l1_misses=c["l1_misses"],
            l2_hits=c["l2_hits"],
            l2_misses=c["l2_misses"],
            l2_corrupt=c["l2_corrupt"],
            l2_errors=c["l2_errors"],
            l2_timeouts=c["l2_timeouts"],
            l2_skipped=c["l2_skipped"],
            l2_available=time.monotonic() >= down_until,
            last_error=last_error,
            last_corrupt=last_corrupt,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r}, ttl={self.ttl!r})"


def _no_retry(retry_cls: Any) -> Any:
    return retry_cls(_require("redis.backoff", "redis").NoBackoff(), 0)


class TieredCache(_TieredBase):
    """L1 (in process) + L2 (Redis, shared by processes) cache; thread-safe.

    ``redis`` is a ``redis.Redis`` client or a ``redis://`` URL.  From a URL the
    cache builds its own client with ``timeout`` (default 0.25 s) as socket and
    connect timeout and no retries (a retry would multiply the wait on a dead server).  A
    client you pass is used as configured (redis-py's defaults are a 5 s socket
    timeout and 3 retries with back-off; for a cache, create it with e.g.
    ``socket_timeout=0.25, socket_connect_timeout=0.25,
    retry=Retry(NoBackoff(), 0)``), and ``timeout`` must then be None.  It must
    return bytes (``decode_responses=False``, the default).

    ``ttl`` (seconds, None = no expiry) is the default lifetime in both tiers
    (Redis ``PX``); ``l1_ttl`` caps the L1 lifetime (how long this process may
    serve an entry that another process replaced or deleted); ``backoff``
    is how long L2 is skipped after a connection failure or timeout.

    Example::

        tc = TieredCache(an.Cache(max_items=512), "redis://127.0.0.1:6379/0",
                         prefix="embeddings:", ttl=600)
        tc.set("cat.jpg", np.zeros((3, 512), np.float32))
        vec = tc.get("cat.jpg")            # read-only float32 array
        tc.stats()["l1_hits"]              # 1

    The ``a*`` methods (``aget``, ``aset``, ``adelete``, ``aclear``) serve L1
    inline and run the Redis part in a worker thread, so the ``@cached``
    decorator can await them from ``async def`` functions.  For an asyncio
    Redis client, use :class:`AsyncTieredCache`.
    """

    def __init__(
        self,
        l1: L1Cache,
        redis: redis.Redis | str,
        *,
        prefix: str | bytes = "amulet:",
        ttl: float | None = None,
        l1_ttl: float | None = None,
        serializer: Serializer | None = None,
        key_serializer: KeySerializer | None = None,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> None:
        super().__init__(
            l1,
            prefix=prefix,
            ttl=ttl,
            l1_ttl=l1_ttl,
            serializer=serializer,
            key_serializer=key_serializer,
            backoff=backoff,
        )
        redis_mod = _require("redis", "redis")
        Retry = _require("redis.retry", "redis").Retry
        self.redis: _redis_t.Redis = _make_client(Retry, redis_mod.Redis, redis, timeout)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` from L1, else from Redis (filling L1), else ``default``."""
        rkey = self.redis_key(key)
        value = self._l1_lookup(rkey)
        if value is not _MISSING:
            return value
        return self._l2_get(rkey, default)

    def _l2_get(self, rkey: bytes, default: Any) -> Any:
        if not self._l2_ready():
            return default
        try:
            raw = self.redis.get(rkey)
        except self._l2_errors as exc:
            self._l2_failed(exc)
            return default
        return self._from_l2(rkey, raw, default)

    def set(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` in both tiers for ``ttl`` seconds (None: the cache's
        ``ttl``; ``math.inf``: no expiry even when the cache has a ttl).  Raises SerializationError (a TypeError) for
        keys or values the cache cannot encode; Redis failures are only counted."""
        rkey = self.redis_key(key)
        payload, px = self._l1_store(rkey, value, ttl)
        self._l2_set(rkey, payload, px)

    def _l2_set(self, rkey: bytes, payload: bytes | bytearray, px: int | None) -> None:
        if not self._l2_ready():
            return
        try:
            self.redis.set(rkey, payload, px=px)
        except self._l2_errors as exc:
            self._l2_failed(exc)

    def delete(self, key: Any) -> None:
        """Remove ``key`` from both tiers (absent keys are fine)."""
        rkey = self.redis_key(key)
        self.l1.pop(rkey, None)
        self._l2_delete(rkey)

    def _l2_delete(self, rkey: bytes) -> None:
        if not self._l2_ready():
            return
        try:
            self.redis.unlink(rkey)
        except self._l2_errors as exc:
            self._l2_failed(exc)

    def clear(self) -> int:
        """Empty L1 and delete this prefix's keys from Redis (``SCAN`` +
        ``UNLINK``; other keys are untouched).  Returns how many Redis keys were
        deleted (0 when Redis is unreachable; the failure is counted)."""
        self.l1.clear()
        if not self._l2_ready():
            return 0
        deleted = 0
        try:
            batch: list[bytes] = []
            for k in self.redis.scan_iter(match=self._scan_match(), count=_SCAN_COUNT):
                batch.append(k)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += int(self.redis.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(self.redis.unlink(*batch))
        except self._l2_errors as exc:
            self._l2_failed(exc)
        return deleted

    async def aget(self, key: Any, default: Any = None) -> Any:
        """:meth:`get` for coroutines: L1 inline, Redis in a worker thread."""
        rkey = self.redis_key(key)
        value = self._l1_lookup(rkey)
        if value is not _MISSING:
            return value
        return await asyncio.to_thread(self._l2_get, rkey, default)

    async def aset(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """:meth:`set` for coroutines: L1 inline, Redis in a worker thread."""
        rkey = self.redis_key(key)
        payload, px = self._l1_store(rkey, value, ttl)
        await asyncio.to_thread(self._l2_set, rkey, payload, px)

    async def adelete(self, key: Any) -> None:
        """:meth:`delete` for coroutines."""
        rkey = self.redis_key(key)
        self.l1.pop(rkey, None)
        await asyncio.to_thread(self._l2_delete, rkey)

    async def aclear(self) -> int:
        """:meth:`clear` for coroutines."""
        return await asyncio.to_thread(self.clear)

    def close(self) -> None:
        """Close the Redis client's connections (the L1 is left as it is)."""
        self.redis.close()


class AsyncTieredCache(_TieredBase):
    """:class:`TieredCache` over a ``redis.asyncio.Redis`` client (or URL).

    Same options, keys, value layout and failure handling (the asyncio client
    also reconnects by itself after the back-off).  Methods are coroutines:
    ``aget``, ``aset``, ``adelete``, ``aclear``, ``aclose``; ``stats()`` is
    plain.  Example::

        tc = AsyncTieredCache(an.Cache(max_items=512), "redis://127.0.0.1:6379/0",
                              ttl=60, timeout=0.2)
        await tc.aset(("user", 7), b"...")
        data = await tc.aget(("user", 7))

    ``@cached(cache=tc)`` on an ``async def`` function awaits ``aget``/``aset``.
    """

    def __init__(
        self,
        l1: L1Cache,
        redis: redis.asyncio.Redis | str,
        *,
        prefix: str | bytes = "amulet:",
        ttl: float | None = None,
        l1_ttl: float | None = None,
        serializer: Serializer | None = None,
        key_serializer: KeySerializer | None = None,
        timeout: float | None = None,
        backoff: float = 1.0,
    ) -> None:
        super().__init__(
            l1,
            prefix=prefix,
            ttl=ttl,
            l1_ttl=l1_ttl,
            serializer=serializer,
            key_serializer=key_serializer,
            backoff=backoff,
        )
        aredis = _require("redis.asyncio", "redis")
        Retry = _require("redis.asyncio.retry", "redis").Retry
        self.redis: _aredis_t.Redis = _make_client(Retry, aredis.Redis, redis, timeout)

    async def aget(self, key: Any, default: Any = None) -> Any:
        """The value of ``key`` from L1, else from Redis (filling L1), else ``default``."""
        rkey = self.redis_key(key)
        value = self._l1_lookup(rkey)
        if value is not _MISSING:
            return value
        if not self._l2_ready():
            return default
        try:
            raw = await self.redis.get(rkey)
        except self._l2_errors as exc:
            self._l2_failed(exc)
            return default
        return self._from_l2(rkey, raw, default)

    async def aset(self, key: Any, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` in both tiers (see :meth:`TieredCache.set`)."""
        rkey = self.redis_key(key)
        payload, px = self._l1_store(rkey, value, ttl)
        if not self._l2_ready():
            return
        try:
            await self.redis.set(rkey, payload, px=px)
        except self._l2_errors as exc:
            self._l2_failed(exc)

    async def adelete(self, key: Any) -> None:
        """Remove ``key`` from both tiers."""
        rkey = self.redis_key(key)
        self.l1.pop(rkey, None)
        if not self._l2_ready():
            return
        try:
            await self.redis.unlink(rkey)
        except self._l2_errors as exc:
            self._l2_failed(exc)

    async def aclear(self) -> int:
        """Empty L1 and delete this prefix's Redis keys; returns how many."""
        self.l1.clear()
        if not self._l2_ready():
            return 0
        deleted = 0
        try:
            batch: list[bytes] = []
            async for k in self.redis.scan_iter(match=self._scan_match(), count=_SCAN_COUNT):
                batch.append(k)
                if len(batch) >= _UNLINK_BATCH:
                    deleted += int(await self.redis.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(await self.redis.unlink(*batch))
        except self._l2_errors as exc:
            self._l2_failed(exc)
        return deleted

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.redis.aclose()


def _make_client(retry_cls: Any, client_cls: Any, redis: Any, timeout: float | None) -> Any:
    """The client to use: ``redis`` itself, or one built from a URL."""
    _check_seconds("timeout", timeout)
    if isinstance(redis, str):
        return client_cls.from_url(
            redis,
            socket_timeout=0.25 if timeout is None else timeout,
            socket_connect_timeout=0.25 if timeout is None else timeout,
            retry=_no_retry(retry_cls),
        )
    if not isinstance(redis, client_cls):
        raise TypeError(
            f"expected a {client_cls.__module__}.{client_cls.__name__} client or a redis:// "
            f"URL, got {type(redis).__name__}"
        )
    if timeout is not None:
        raise ValidationError(
            "timeout applies to clients built from a URL; configure socket_timeout on "
            "the client you pass",
            code="value.invalid",
            field="timeout",
        )
    if redis.get_encoder().decode_responses:
        raise ValidationError(
            "the Redis client must return bytes (decode_responses=False)",
            code="value.invalid",
            field="redis",
        )
    return redis
