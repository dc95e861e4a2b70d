"""Decoding many images at once on the native worker pool.

The pool is a set of pthreads inside the extension, created on first use and
reused; they never run Python, and the calling thread releases the GIL and
works alongside them.  Example::

    import amulet_native as an

    arrays = an.decode_many(uploads, max_size=(512, 512))
    maybe = an.decode_many(uploads, errors="return")   # exceptions in failed slots
    bad = [i for i, a in enumerate(maybe) if isinstance(a, an.AmuletError)]
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from . import _core
from .errors import AmuletError, ValidationError
from .image import Limits, Mode, Source, _core_options, _read_source

__all__ = ["available_cpus", "decode_many"]


def available_cpus() -> int:
    """CPUs this process may use: its CPU affinity, further limited by a cgroup
    CPU quota (containers), at least 1.  ``threads=None`` uses this."""
    return _core.available_cpus()


@overload
def decode_many(
    items: Sequence[Source],
    mode: Mode = ...,
    *,
    threads: int | None = ...,
    errors: Literal["raise"] = ...,
    scale: float | Fraction | str | None = ...,
    max_size: tuple[int, int] | None = ...,
    orient: bool = ...,
    limits: Limits | None = ...,
    strict: bool | None = ...,
    dtype: npt.DTypeLike = ...,
    frame: int = ...,
) -> list[npt.NDArray[Any]]: ...


@overload
def decode_many(
    items: Sequence[Source],
    mode: Mode = ...,
    *,
    threads: int | None = ...,
    errors: Literal["return"],
    scale: float | Fraction | str | None = ...,
    max_size: tuple[int, int] | None = ...,
    orient: bool = ...,
    limits: Limits | None = ...,
    strict: bool | None = ...,
    dtype: npt.DTypeLike = ...,
    frame: int = ...,
) -> list[npt.NDArray[Any] | AmuletError]: ...


def decode_many(
    items: Sequence[Source],
    mode: Mode = "RGB",
    *,
    threads: int | None = None,
    errors: Literal["raise", "return"] = "raise",
    scale: float | Fraction | str | None = None,
    max_size: tuple[int, int] | None = None,
    orient: bool = True,
    limits: Limits | None = None,
    strict: bool | None = None,
    dtype: npt.DTypeLike = np.uint8,
    frame: int = 0,
) -> list[npt.NDArray[Any]] | list[npt.NDArray[Any] | AmuletError]:
    """Decode every item (bytes-like or binary file object) in parallel, with
    the options of :func:`amulet_native.decode`; results keep the input order.

    ``threads``: how many threads work on this batch (the caller included);
    ``None`` uses :func:`available_cpus`.  ``errors="raise"`` raises the first
    failure (in input order) once every decode has finished and every buffer
    was released; ``errors="return"`` puts the exception object in its slot.
    """
    if errors not in ("raise", "return"):
        raise ValidationError(
            f'errors must be "raise" or "return", got {errors!r}', code="value.errors",
            field="errors",
        )
    if threads is None:
        threads = _core.available_cpus()
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValidationError(
            f"threads must be a positive integer or None, got {threads!r}",
            code="value.threads",
            field="threads",
        )
    options, lim = _core_options(
        mode, scale, max_size, orient, limits, strict, dtype, None, frame
    )
    buffers = [_read_source(item, lim.max_bytes) for item in items]
    return _core.decode_many(buffers, *options, threads, errors == "return")
