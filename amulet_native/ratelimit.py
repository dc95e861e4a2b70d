"""Rate limits: GCRA decisions in process, across the workers of a host, or in Redis.

A policy is "``limit`` per ``period``, at most ``burst`` at once"; each key (a
client, a user, an API token) and policy has one theoretical arrival time (TAT),
and every number a client is told (remaining, reset, retry-after) is derived
from it, so they always agree and are never negative.  There are no window
boundaries, so there is no double burst at a boundary, and a check is O(1)
whatever the limit::

    from amulet_native.ratelimit import RateLimiter, headers

    limiter = RateLimiter(["10/second;burst=20", "10000/day"])
    decision = limiter.check(client_ip)            # admit and record
    if not decision.allowed:
        return 429, headers(decision)              # Retry-After, RateLimit, ...
    limiter.hit(client_ip, cost=len(upload))       # raises RateLimitExceeded

Stores: :class:`MemoryStore` (native, thread-safe, bounded; the default),
:class:`SharedStore` (the workers of one host, in the shared arena) and
:class:`RedisStore` (several hosts: one atomic Lua script per check, server time).
When the store fails, decisions follow ``on_store_error`` ("allow", the
default, or "deny") and the failures are counted in ``store_errors``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import _core
from .errors import NetworkError, RateLimitExceeded, ValidationError

__all__ = [
    "Decision",
    "MemoryStore",
    "Policy",
    "RateLimiter",
    "RedisStore",
    "SharedStore",
    "headers",
    "parse_policy",
]

#: The outcome of one check: ``allowed``, ``remaining``, ``reset_after`` and
#: ``retry_after`` (seconds), ``policy`` (the deciding one) and ``limit``.
Decision = _core.Decision

MAX_POLICIES = 8
MAX_KEY_BYTES = 1024
#: The largest limit or burst: a Structured Field Integer (q=, r= of the IETF
#: headers) has at most 15 digits.
MAX_LIMIT = 999_999_999_999_999
_NS = 1_000_000_000

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
_POLICY_RE = re.compile(
    r"^\s*(?P<limit>\d+)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE | re.ASCII,
)
_NAME_RE = re.compile(r"^[\x20-\x7e]{1,64}$")


def _bad(message: str, code: str, field: str) -> ValidationError:
    return ValidationError(message, code=code, field=field)


@dataclass(frozen=True)
class Policy:
    """``limit`` cost units per ``period`` seconds, at most ``burst`` at once.

    ``burst`` defaults to ``limit`` (a fresh client may spend the whole limit at
    once, then one unit every ``period / limit`` seconds).  ``unit`` is the IETF
    quota unit: "requests" or, when the cost is an upload's size,
    "content-bytes".  ``name`` is the policy identifier in the RateLimit headers.
    """

    name: str
    limit: int
    period: float
    burst: int | None = None
    unit: str = "requests"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise _bad(
                f"policy name must be 1-64 printable ASCII characters, got {self.name!r}",
                "ratelimit.policy",
                "name",
            )
        if type(self.limit) is not int or not 0 < self.limit <= MAX_LIMIT:
            raise _bad(
                f"limit must be an int in [1, {MAX_LIMIT}], got {self.limit!r}",
                "ratelimit.limit",
                "limit",
            )
        period = self.period
        if (
            isinstance(period, bool)
            or not isinstance(period, (int, float))
            or not math.isfinite(period)
            or period <= 0
            or period > 10 * 365 * 86400
        ):
            raise _bad(
                f"period must be finite seconds in (0, 10 years], got {period!r}",
                "ratelimit.period",
                "period",
            )
        if self.burst is not None and (
            type(self.burst) is not int or not 0 < self.burst <= MAX_LIMIT
        ):
            raise _bad(
                f"burst must be an int in [1, {MAX_LIMIT}], got {self.burst!r}",
                "ratelimit.burst",
                "burst",
            )
        if self.unit not in ("requests", "content-bytes", "concurrent-requests"):
            raise _bad(
                f'unit must be "requests", "content-bytes" or "concurrent-requests", got '
                f"{self.unit!r}",
                "ratelimit.policy",
                "unit",
            )
        if self.interval_ns > (1 << 62) // self.capacity:
            raise _bad("burst * period / limit is too long", "ratelimit.burst", "burst")

    @property
    def capacity(self) -> int:
        """The most cost units admitted at once: ``burst`` or ``limit``."""
        return self.burst if self.burst is not None else self.limit

    @property
    def period_ns(self) -> int:
        return max(1, round(self.period * _NS))

    @property
    def interval_ns(self) -> int:
        """The emission interval T = ceil(period / limit), in nanoseconds."""
        return -(-self.period_ns // self.limit)

    def __str__(self) -> str:
        burst = f";burst={self.burst}" if self.burst is not None else ""
        return f"{self.limit}/{_fmt_seconds(self.period)}{burst}"


def _fmt_seconds(period: float) -> str:
    for unit, secs in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0), ("second", 1.0)):
        if period == secs:
            return unit
    return f"{period:g}seconds"


def parse_policy(spec: str | Policy) -> Policy:
    """``"100/minute"``, ``"10/second;burst=20"``, ``"1000 per 5 minutes"``,
    ``"1000000/hour;unit=content-bytes;name=upload"`` (or a Policy, returned as
    is).  Malformed text raises ValidationError (``ratelimit.policy``)."""
    if isinstance(spec, Policy):
        return spec
    if not isinstance(spec, str):
        raise _bad(
            f"a policy is a string or a Policy, got {type(spec).__name__}",
            "ratelimit.policy",
            "policy",
        )
    head, *params = spec.split(";")
    m = _POLICY_RE.match(head)
    if m is None or m["unit"].lower() not in _UNITS:
        raise _bad(
            f"malformed policy {spec!r}: expected e.g. '100/minute' or '10/second;burst=20'",
            "ratelimit.policy",
            "policy",
        )
    count = float(m["count"]) if m["count"] else 1.0
    options: dict[str, str] = {}
    for param in params:
        k, sep, v = param.partition("=")
        k, v = k.strip().lower(), v.strip()
        if not sep or k not in ("burst", "name", "unit") or not v or k in options:
            raise _bad(
                f"malformed policy parameter {param!r} in {spec!r} (burst=, name=, unit=)",
                "ratelimit.policy",
                "policy",
            )
        options[k] = v
    burst: int | None = None
    if "burst" in options:
        if not (options["burst"].isascii() and options["burst"].isdigit()):
            raise _bad(f"burst must be an int in {spec!r}", "ratelimit.burst", "burst")
        burst = int(options["burst"])
    text = head.strip() if "name" not in options else options["name"]
    return Policy(
        name=text,
        limit=int(m["limit"]),
        period=count * _UNITS[m["unit"].lower()],
        burst=burst,
        unit=options.get("unit", "requests"),
    )


def _policies(spec: str | Policy | Iterable[str | Policy]) -> tuple[Policy, ...]:
    items: list[str | Policy]
    if isinstance(spec, (str, Policy)):
        items = [s for s in spec.split(",")] if isinstance(spec, str) else [spec]
    else:
        items = list(spec)
    out = tuple(parse_policy(p) for p in items)
    if not 1 <= len(out) <= MAX_POLICIES:
        raise _bad(
            f"a limiter has 1 to {MAX_POLICIES} policies, got {len(out)}",
            "ratelimit.policy",
            "policies",
        )
    if len({p.name for p in out}) != len(out):
        raise _bad("policy names must be distinct", "ratelimit.policy", "policies")
    return out


def _key_bytes(key: object) -> bytes:
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    elif isinstance(key, bytes):
        data = key
    else:
        raise _bad(
            f"a rate limit key must be str or bytes, not {type(key).__name__}",
            "ratelimit.key",
            "key",
        )
    if len(data) > MAX_KEY_BYTES:
        raise _bad(
            f"a rate limit key is at most {MAX_KEY_BYTES} bytes, got {len(data)}",
            "ratelimit.key",
            "key",
        )
    return data


def headers(decision: Any, *, now: float | None = None) -> dict[str, str]:
    """The response headers for ``decision``.

    Both the IETF fields of draft-ietf-httpapi-ratelimit-headers-11 (Structured
    Fields: ``RateLimit-Policy: "burst";q=100;w=60`` and
    ``RateLimit: "burst";r=42;t=17``) and the ``X-RateLimit-Limit``,
    ``-Remaining`` and ``-Reset`` (epoch seconds, GitHub's convention) that
    clients of the original system read, plus ``Retry-After`` (whole seconds,
    at least 1) when the request was refused.  ``now`` is the wall-clock time
    for X-RateLimit-Reset (default: ``time.time()``).
    """
    p: Policy = decision.policy
    name = p.name.replace("\\", "\\\\").replace('"', '\\"')
    window = max(1, math.ceil(p.period))
    reset = max(0, math.ceil(decision.reset_after))
    policy = f'"{name}";q={p.limit};w={window}'
    if p.unit != "requests":
        policy += f';qu="{p.unit}"'
    wall = time.time() if now is None else now
    out = {
        "RateLimit-Policy": policy,
        "RateLimit": f'"{name}";r={decision.remaining};t={reset}',
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(wall + decision.reset_after)),
    }
    if not decision.allowed:
        out["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
    return out


# ---- stores -------------------------------------------------------------------


class MemoryStore:
    """Per-process TATs in native memory: thread-safe (sharded mutexes, no GIL
    needed) and bounded to ``max_keys`` keys; when full, keys without state
    (every TAT in the past) are dropped first, then the least recently used."""

    def __init__(self, max_keys: int = 100_000) -> None:
        if type(max_keys) is not int or not 1 <= max_keys <= 1 << 32:
            raise _bad(
                f"max_keys must be an int in [1, 2**32], got {max_keys!r}",
                "value.invalid",
                "max_keys",
            )
        self.native = _core.GcraStore(max_keys)

    def stats(self) -> dict[str, int]:
        """keys, max_keys, evicted_expired, evicted_live, bytes."""
        return self.native.stats()

    def __len__(self) -> int:
        return len(self.native)

    def clear(self) -> None:
        self.native.clear()

    def purge(self) -> int:
        """Drop every key without state now; returns how many."""
        return self.native.purge()


class SharedStore:
    """TATs shared by every worker process of one host, in a file-backed arena
    (``<dir>/ratelimit.arena``, the shared arena of amulet_native.metrics).

    All processes that open the same ``dir`` and build a RateLimiter with the
    same policies enforce one limit together.  Each limiter's table holds
    ``max_keys`` keys in stripes of 8 (a key lives only in its stripe; when a
    stripe is full of live keys, the one whose state ends first is replaced and
    counted); a stripe is updated under a lock word that a waiter takes over
    from a dead holder, so a killed worker never wedges the others.  The file
    is sized for ``max_limiters`` limiters of up to 2 policies and holds up to
    ``max_workers`` processes at once (the file is sparse: untouched pages use
    no memory).
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        max_keys: int = 65_536,
        max_workers: int = 32,
        max_limiters: int = 4,
    ) -> None:
        for fname, v, hi in (
            ("max_keys", max_keys, 1 << 24),
            ("max_workers", max_workers, 1023),
            ("max_limiters", max_limiters, 64),
        ):
            if type(v) is not int or not 1 <= v <= hi:
                raise _bad(
                    f"{fname} must be an int in [1, {hi}], got {v!r}", "value.invalid", fname
                )
        os.makedirs(dir, exist_ok=True)
        self.path = os.path.join(os.fspath(dir), "ratelimit.arena")
        self.max_keys = max_keys
        stripes = -(-max_keys // 8)
        words = stripes * (1 + 8 * 3)  # stripes of keys with 2 policies
        units = (-(-words // 8) + 1024) * max_limiters + 64  # + record rounding, the seed
        self.arena = _core.Arena(
            self.path,
            max_slots=max_workers + 1,
            slot_units=-(-units // 64) * 64,
            max_records=max(64, 4 * (units // 1024 + 4)),
            key_size=256,
        )

    def close(self) -> None:
        """Release this process's slot of the arena."""
        self.arena.close()


# Times are integer nanoseconds (as in the C core), but Lua numbers are
# doubles (exact below 2^53 ns, 104 days), so an absolute time is kept as
# seconds and nanoseconds: a TAT is stored as the decimal string of its ns,
# read back in two parts, and only differences (pending <= tau) are formed in
# one number.  A TAT more than tau ahead (Redis' clock went back: a failover,
# an NTP step) counts as tau ahead and is pulled back, as in an_gcra_eval.
_LUA = """
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_n = tonumber(t[2]) * 1000
local hit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local n = #KEYS
local allowed = 1
local res = {}
local function at(delta)
  local lo = now_n + delta
  local carry = math.floor(lo / 1000000000)
  lo = lo - carry * 1000000000
  if lo < 0 then lo = 0 elseif lo > 999999999 then lo = 999999999 end
  local hi = now_s + carry
  if hi <= 0 then return string.format('%d', lo) end
  return string.format('%d%09d', hi, lo)
end
for i = 1, n do
  local T = tonumber(ARGV[1 + 2 * i])
  local tau = tonumber(ARGV[2 + 2 * i])
  local raw = redis.call('GET', KEYS[i])
  local pending = 0
  local clamped = false
  if raw then
    local hi, lo = 0, tonumber(raw)
    if #raw > 9 then
      hi = tonumber(string.sub(raw, 1, -10))
      lo = tonumber(string.sub(raw, -9))
    end
    if hi and lo then
      pending = (hi - now_s) * 1000000000 + (lo - now_n)
      if pending < 0 then pending = 0 end
      if pending > tau then pending = tau; clamped = true end
    end
  end
  local need = cost * T
  if pending + need <= tau then
    local diff = pending + need
    res[i] = {1, math.floor((tau - diff) / T), diff, 0, diff, clamped}
  else
    allowed = 0
    res[i] = {0, math.floor((tau - pending) / T), pending, pending + need - tau, pending, clamped}
  end
end
local best = 1
for i = 2, n do
  local a, b = res[i], res[best]
  if allowed == 0 then
    if a[1] == 0 and (b[1] == 1 or a[4] > b[4]) then best = i end
  elseif a[2] < b[2] or (a[2] == b[2] and a[3] > b[3]) then
    best = i
  end
end
if hit == 1 then
  local record = allowed == 1 and cost > 0
  for i = 1, n do
    if record or res[i][6] then
      local ttl = math.ceil(res[i][5] / 1000000)
      if ttl < 1 then ttl = 1 end
      redis.call('SET', KEYS[i], at(res[i][5]), 'PX', string.format('%d', ttl))
    end
  end
end
local r = res[best]
return {allowed, best - 1, r[2], string.format('%d', r[3]), string.format('%d', r[4])}
"""


class RedisStore:
    """TATs in Redis, for limits shared by several hosts.

    Each decision is one ``EVALSHA`` of one Lua script (read every policy's TAT,
    decide, write the TATs with their TTL in the same atomic step, on Redis'
    own clock), reloaded after a ``NOSCRIPT`` (a restarted or flushed server).
    ``url`` is a ``redis://`` URL; the clients are built on first use with short
    timeouts (``timeout`` seconds), and ``prefix`` namespaces the keys.  After a
    failure the store is skipped for ``retry_interval`` seconds (decisions follow
    the limiter's ``on_store_error``), so a dead Redis costs no connect attempt
    per request and a returning one is used again within that interval.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "an:rl:",
        timeout: float = 0.25,
        retry_interval: float = 0.2,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise _bad(f"expected a redis:// URL, got {url!r}", "value.invalid", "url")
        for field, v in (("timeout", timeout), ("retry_interval", retry_interval)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise _bad(f"{field} must be finite seconds >= 0", "value.invalid", field)
        self.url = url
        self.prefix = prefix.encode()
        self.timeout = float(timeout)
        self.retry_interval = float(retry_interval)
        self._sha: str | None = None
        self._sync: Any = None
        self._async: Any = None
        self._async_loop: Any = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        try:
            from redis import exceptions as rex
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "RedisStore needs redis-py: pip install 'amulet_native[redis]'"
            ) from exc
        self._noscript: type[BaseException] = rex.NoScriptError
        self._errors: tuple[type[BaseException], ...] = (rex.RedisError, OSError)

    # -- plumbing --

    def _client(self) -> Any:
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    self._sync = _redis_client(self.url, self.timeout, asynchronous=False)
        return self._sync

    def _aclient(self) -> Any:
        # an asyncio client belongs to one event loop: a new loop gets a new one
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = _redis_client(self.url, self.timeout, asynchronous=True)
            self._async_loop = loop
        return self._async

    def _args(self, limiter: RateLimiter, key: bytes, cost: int, hit: bool) -> list[Any]:
        suffixes, params = limiter._redis_layout
        head = self.prefix + b"{" + key + b"}:"
        return [len(suffixes), *[head + s for s in suffixes], 1 if hit else 0, cost, *params]

    @staticmethod
    def _decision(limiter: RateLimiter, r: Sequence[Any]) -> Decision:
        p = limiter.policies[int(r[1])]
        return Decision(
            bool(int(r[0])),
            int(r[2]),
            int(r[3]) / _NS,
            int(r[4]) / _NS,
            p,
            p.limit,
        )

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self) -> None:
        self._down_until = time.monotonic() + self.retry_interval

    # -- decisions --

    def decide(self, limiter: RateLimiter, key: bytes, cost: int, hit: bool) -> Decision:
        if not self._available():
            raise NetworkError("Redis marked down after a recent failure", code="ratelimit.store")
        client = self._client()
        args = self._args(limiter, key, cost, hit)
        try:
            if self._sha is None:
                self._sha = client.script_load(_LUA)
            try:
                r = client.evalsha(self._sha, *args)
            except self._noscript:  # the server restarted or SCRIPT FLUSH ran
                self._sha = client.script_load(_LUA)
                r = client.evalsha(self._sha, *args)
        except self._errors as exc:
            self._failed()
            raise NetworkError(f"Redis rate limit store: {exc}", code="ratelimit.store") from exc
        return self._decision(limiter, r)

    async def adecide(self, limiter: RateLimiter, key: bytes, cost: int, hit: bool) -> Decision:
        if not self._available():
            raise NetworkError("Redis marked down after a recent failure", code="ratelimit.store")
        client = self._aclient()
        args = self._args(limiter, key, cost, hit)
        try:
            if self._sha is None:
                self._sha = await client.script_load(_LUA)
            try:
                r = await client.evalsha(self._sha, *args)
            except self._noscript:
                self._sha = await client.script_load(_LUA)
                r = await client.evalsha(self._sha, *args)
        except self._errors as exc:
            self._failed()
            raise NetworkError(f"Redis rate limit store: {exc}", code="ratelimit.store") from exc
        return self._decision(limiter, r)

    def forget(self, limiter: RateLimiter, key: bytes) -> None:
        keys = self._args(limiter, key, 0, False)[1 : 1 + len(limiter.policies)]
        try:
            self._client().delete(*keys)
        except self._errors as exc:
            self._failed()
            raise NetworkError(f"Redis rate limit store: {exc}", code="ratelimit.store") from exc

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None


def _redis_client(url: str, timeout: float, *, asynchronous: bool) -> Any:
    try:
        if asynchronous:
            import redis.asyncio as aredis

            cls: Any = aredis.Redis
        else:
            import redis

            cls = redis.Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("RedisStore needs redis-py: pip install 'amulet_native[redis]'") from exc
    return cls.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


# ---- the limiter --------------------------------------------------------------


class RateLimiter:
    """GCRA limits by key under one or several policies at once.

    ``policies`` is a policy string (``"100/minute"``, several separated by
    commas), a :class:`Policy`, or a sequence of them: a request is admitted
    only if every policy admits it, and the decision reports the most
    restrictive one.  ``store`` defaults to a new :class:`MemoryStore`.
    ``clock`` (MemoryStore only) returns monotonic seconds, for tests.

    ``check(key, cost=1)`` admits and records, returning a Decision;
    ``hit`` does the same but raises :class:`RateLimitExceeded` on refusal;
    ``peek`` decides without recording.  ``acheck``/``ahit``/``apeek`` are the
    async forms (native for Redis, immediate for the other stores).
    """

    def __init__(
        self,
        policies: str | Policy | Iterable[str | Policy],
        *,
        store: MemoryStore | SharedStore | RedisStore | None = None,
        on_store_error: Literal["allow", "deny"] = "allow",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.policies = _policies(policies)
        if on_store_error not in ("allow", "deny"):
            raise _bad(
                f'on_store_error must be "allow" or "deny", got {on_store_error!r}',
                "value.invalid",
                "on_store_error",
            )
        if store is not None and not isinstance(store, (MemoryStore, SharedStore, RedisStore)):
            raise _bad(
                "store must be a MemoryStore, SharedStore or RedisStore, "
                f"got {type(store).__name__}",
                "value.invalid",
                "store",
            )
        if clock is not None and not callable(clock):
            raise _bad("clock must be a callable returning seconds", "value.invalid", "clock")
        self.store = MemoryStore() if store is None else store
        self.on_store_error = on_store_error
        self.max_cost = min(p.capacity for p in self.policies)
        self.store_errors = 0
        self._errors_lock = threading.Lock()
        self._native: Any = None
        # RedisStore: key suffixes and script arguments (T and tau in ns, as
        # in the C core) per policy
        self._redis_layout = (
            tuple(p.name.encode() for p in self.policies),
            tuple(v for p in self.policies for v in (p.interval_ns, p.interval_ns * p.capacity)),
        )
        if isinstance(self.store, MemoryStore):
            params = tuple((p.limit, p.period_ns, p.capacity) for p in self.policies)
            self._native = _core.GcraLimiter(self.store.native, self.policies, params, clock)
            # The hot path is one native call: bind it directly on the instance.
            self.check = self._native.check  # type: ignore[method-assign]
            self.peek = self._native.peek  # type: ignore[method-assign]
        elif isinstance(self.store, SharedStore):
            params = tuple((p.limit, p.period_ns, p.capacity) for p in self.policies)
            name = ",".join(f"{p.name}={p.limit}/{p.period_ns}/{p.capacity}" for p in self.policies)
            self._native = _core.GcraSharedLimiter(
                self.store.arena,
                hashlib.blake2b(name.encode(), digest_size=12).hexdigest(),
                self.policies,
                params,
                self.store.max_keys,
                clock,
            )
            self.check = self._native.check  # type: ignore[method-assign]
            self.peek = self._native.peek  # type: ignore[method-assign]
        elif clock is not None:
            raise _bad(
                "clock applies to MemoryStore and SharedStore only (Redis uses its own TIME)",
                "value.invalid",
                "clock",
            )

    def __repr__(self) -> str:
        pols = ", ".join(str(p) for p in self.policies)
        return f"RateLimiter([{pols}], store={type(self.store).__name__})"

    # -- sync --

    def check(self, key: str | bytes, cost: int = 1) -> Decision:
        """Admit and record a request of ``cost`` for ``key`` when every policy
        allows it; the Decision says whether it did."""
        return self._decide(key, cost, hit=True)

    def peek(self, key: str | bytes, cost: int = 1) -> Decision:
        """The Decision ``check`` would return now, recording nothing."""
        return self._decide(key, cost, hit=False)

    def hit(self, key: str | bytes, cost: int = 1) -> Decision:
        """``check``, raising :class:`RateLimitExceeded` (with the decision) on
        refusal."""
        d = self.check(key, cost)
        if not d.allowed:
            raise _exceeded(key, d)
        return d

    def reset(self, key: str | bytes) -> None:
        """Forget ``key``'s state (a fresh client again)."""
        data = _key_bytes(key)
        if self._native is not None:
            self._native.forget(data)
        elif isinstance(self.store, RedisStore):
            self.store.forget(self, data)

    # -- async --

    async def acheck(self, key: str | bytes, cost: int = 1) -> Decision:
        if isinstance(self.store, RedisStore):
            return await self._adecide(key, cost, hit=True)
        return self.check(key, cost)

    async def apeek(self, key: str | bytes, cost: int = 1) -> Decision:
        if isinstance(self.store, RedisStore):
            return await self._adecide(key, cost, hit=False)
        return self.peek(key, cost)

    async def ahit(self, key: str | bytes, cost: int = 1) -> Decision:
        d = await self.acheck(key, cost)
        if not d.allowed:
            raise _exceeded(key, d)
        return d

    # -- store plumbing --

    def _validate(self, key: object, cost: object) -> bytes:
        data = _key_bytes(key)
        if type(cost) is not int or not 0 <= cost <= self.max_cost:
            raise _bad(
                f"the cost must be an int between 0 and {self.max_cost} (the smallest burst), "
                f"got {cost!r}",
                "ratelimit.cost",
                "cost",
            )
        return data

    def _decide(self, key: str | bytes, cost: int, *, hit: bool) -> Decision:
        data = self._validate(key, cost)
        store = self.store
        # The native stores bound check/peek on the instance: only Redis gets here.
        assert isinstance(store, RedisStore)
        try:
            return store.decide(self, data, cost, hit)
        except NetworkError:
            return self._fallback(cost)

    async def _adecide(self, key: str | bytes, cost: int, *, hit: bool) -> Decision:
        data = self._validate(key, cost)
        assert isinstance(self.store, RedisStore)
        try:
            return await self.store.adecide(self, data, cost, hit)
        except NetworkError:
            return self._fallback(cost)

    def _fallback(self, cost: int) -> Decision:
        """The decision when the store failed: counted, then per on_store_error."""
        with self._errors_lock:
            self.store_errors += 1
        p = self.policies[0]
        # the numbers of a fresh key (allow) or of one retried in a second
        # (deny), so the headers built from them agree with each other
        if self.on_store_error == "allow":
            booked = cost * p.interval_ns / _NS
            return Decision(True, max(0, p.capacity - cost), booked, 0.0, p, p.limit)
        return Decision(False, 0, 1.0, 1.0, p, p.limit)


def _exceeded(key: str | bytes, d: Any) -> RateLimitExceeded:
    return RateLimitExceeded(
        f"rate limit {d.policy.name!r} exceeded; retry after {d.retry_after:.3f} s",
        decision=d,
    )
