"""Framework integrations: FastAPI/Starlette and Streamlit.

``amulet_native.integrations.fastapi`` (extra ``[fastapi]``) and
``amulet_native.integrations.streamlit`` (extra ``[streamlit]``) import their
framework when they are imported, and raise an ImportError naming the extra
when it is missing.  This package itself imports neither; the one error table
(:mod:`amulet_native.integrations._problem`) needs nothing but the library.
"""

from __future__ import annotations

from ._problem import PROBLEM_JSON, http_status_for, problem_body

__all__ = ["PROBLEM_JSON", "http_status_for", "problem_body"]


def _require(module: str, extra: str) -> None:
    """ImportError naming the extra when ``module`` cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"amulet_native.integrations.{extra} needs {module!r}: "
            f"pip install 'amulet_native[{extra}]'",
            name=module,
        ) from exc
