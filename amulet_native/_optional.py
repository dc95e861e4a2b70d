"""Optional dependencies: one way to import them and one error when they are missing.

``import amulet_native`` imports none of redis, fastapi, starlette, streamlit or
onnxruntime.  The code that needs one calls :func:`_require` at the point of use::

    redis = _require("redis", "redis")            # -> the module
    Retry = _require("redis.retry", "redis").Retry

and a missing (or broken) install raises :class:`~amulet_native.errors.MissingDependencyError`,
an ``ImportError`` whose message names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["_require"]


def _require(module: str, extra: str) -> ModuleType:
    """``module`` imported, or MissingDependencyError naming ``amulet_native[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        raise MissingDependencyError(
            f"{module} is needed here but could not be imported ({exc}); install it with "
            f"`pip install 'amulet_native[{extra}]'`",
            module=top,
            extra=extra,
        ) from exc
