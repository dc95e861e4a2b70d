"""The package's front door: ``python -m amulet_native``, ``help(amulet_native)``,
and the ImportError that names the extra when an optional dependency is missing.

Everything runs in real subprocesses (``sys.executable``), so what is tested is
what a user's shell gets; the working directory is the repository root, so the
package under test is the one the rest of the suite imports.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import amulet_native as an
from amulet_native._optional import _require
from amulet_native.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parent.parent


def run_py(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, *(["-c", code] if code is not None else []), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)


# ---- python -m amulet_native --------------------------------------------------------


def test_main_prints_version_libraries_cpus_and_memory() -> None:
    r = run_py("-m", "amulet_native")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith(f"amulet_native {an.__version__}")
    assert f"libjpeg {an.LIBJPEG_VERSION}" in out and f"libpng {an.LIBPNG_VERSION}" in out
    assert "formats: " in out and "jpeg" in out and "png" in out
    assert f"CPUs: {an.available_cpus()} available" in out
    assert "memory: effective limit" in out and "process limit" in out
    assert r.stderr == ""


def test_main_json_matches_the_library() -> None:
    r = run_py("-m", "amulet_native", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["version"] == an.__version__
    assert Path(data["location"]) == Path(an.__file__).parent
    assert data["cpus"]["available"] == an.available_cpus()
    assert data["features"]["formats"]["jpeg"] is True
    assert data["features"]["libraries"]["libjpeg"] == an.LIBJPEG_VERSION
    snap = an.MemoryMonitor().snapshot()
    assert data["memory"]["physical"] == snap.total
    assert data["memory"]["cgroup_limit"] == snap.cgroup_limit
    assert data["memory"]["process_limit"] == an.get_process_memory_limit()


def test_selftest_passes_and_says_so() -> None:
    r = run_py("-m", "amulet_native", "--selftest")
    assert r.returncode == 0, r.stdout + r.stderr
    for check in ("decode", "limits", "cache"):
        assert f"ok    {check}" in r.stdout
    assert r.stdout.rstrip().endswith("selftest: passed")


def test_selftest_fails_with_exit_status_1_when_decoding_is_broken() -> None:
    # A build whose decoder returns the wrong pixels: the selftest must notice.
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import amulet_native as an
        from amulet_native import __main__ as cli
        real = an.decode
        an.decode = lambda data, *a, **k: np.zeros_like(real(data, *a, **k))
        sys.exit(cli.main(["--selftest"]))
    """)
    r = run_py(code=code)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  decode" in r.stdout and "ok    cache" in r.stdout
    assert r.stdout.rstrip().endswith("selftest: FAILED")


def test_selftest_fails_when_limits_are_not_enforced() -> None:
    code = textwrap.dedent("""
        import sys
        import amulet_native as an
        from amulet_native import __main__ as cli
        an.Limits = lambda **k: an.get_default_limits()  # limits silently ignored
        sys.exit(cli.main(["--selftest"]))
    """)
    r = run_py(code=code)
    assert r.returncode == 1
    assert "FAIL  limits" in r.stdout


def test_bad_option_exits_2() -> None:
    r = run_py("-m", "amulet_native", "--no-such-option")
    assert r.returncode == 2 and "usage:" in r.stderr


# ---- testing the installed wheel (.ci/wheel-check) -------------------------------------


def test_expect_installed_refuses_a_package_from_elsewhere(tmp_path: Path) -> None:
    """With AMULET_EXPECT_INSTALLED naming another site-packages, the session
    stops before any test runs: the wheel check cannot test the source tree by
    mistake."""
    env = {**os.environ, "AMULET_EXPECT_INSTALLED": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/test_features.py::test_features_fresh_dict"],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert r.returncode != 0
    assert "AMULET_EXPECT_INSTALLED" in r.stdout + r.stderr
    assert "not from the installed wheel" in r.stdout + r.stderr
    env["AMULET_EXPECT_INSTALLED"] = str(Path(an.__file__).parent.parent)  # where it is
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/test_features.py::test_features_fresh_dict"],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "amulet_native under test: the installed wheel in" in r.stdout


# ---- help(amulet_native) ------------------------------------------------------------


def test_module_docstring_is_an_overview() -> None:
    doc = an.__doc__ or ""
    first = doc.strip().splitlines()[0]
    assert "image web services" in first
    for name in ("decode", "probe", "cached", "Cache", "ImageCache", "TieredCache",
                 "ThreadSafeQueue", "memory_limit", "AmuletError", "python -m amulet_native"):
        assert name in doc, name
    # every public name the overview mentions as an entry point exists
    for name in ("decode", "decode_many", "thumbnail", "encode_jpeg", "Cache", "cached",
                 "ObjectPool", "LockManager", "MemoryMonitor", "aread_limited"):
        assert hasattr(an, name), name


# ---- optional dependencies ----------------------------------------------------------

#: Runs first in a subprocess: a meta path finder that refuses the named modules,
#: as if they were not installed.
BLOCKER = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Refuse(MetaPathFinder):
        def __init__(self, names):
            self.names = names
        def find_spec(self, fullname, path=None, target=None):
            if fullname.partition(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None

    for mod in [m for m in sys.modules if m.partition(".")[0] in {BLOCKED!r}]:
        del sys.modules[mod]
    sys.meta_path.insert(0, Refuse({BLOCKED!r}))
""")


def run_without(blocked: set[str], body: str) -> subprocess.CompletedProcess[str]:
    return run_py(code=BLOCKER.replace("{BLOCKED!r}", repr(blocked)) + textwrap.dedent(body))


def test_import_amulet_native_imports_no_optional_dependency() -> None:
    r = run_without(
        {"redis", "fastapi", "starlette", "streamlit", "onnxruntime"},
        """
        import amulet_native as an
        print(sorted(m for m in sys.modules
                     if m.partition(".")[0] in {"redis", "fastapi", "starlette", "streamlit",
                                                "onnxruntime"}))
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_tiered_cache_without_redis_names_the_extra() -> None:
    r = run_without(
        {"redis"},
        """
        import amulet_native as an
        try:
            an.TieredCache(an.Cache(max_items=8), "redis://127.0.0.1:1/0")
        except ImportError as e:
            print(type(e).__name__, e.name, isinstance(e, an.AmuletError), e.code)
            print(e)
        """,
    )
    assert r.returncode == 0, r.stderr
    head, message = r.stdout.splitlines()[:2]
    assert head == "MissingDependencyError redis True dependency.missing"
    assert "pip install 'amulet_native[redis]'" in message


def test_async_tiered_cache_without_redis_names_the_extra() -> None:
    r = run_without(
        {"redis"},
        """
        import amulet_native as an
        try:
            an.AsyncTieredCache(an.Cache(max_items=8), "redis://127.0.0.1:1/0")
        except ImportError as e:
            print(e)
        """,
    )
    assert r.returncode == 0, r.stderr
    assert "amulet_native[redis]" in r.stdout


def test_require_returns_the_module_when_present() -> None:
    import json as json_mod

    assert _require("json", "never-needed") is json_mod
    assert _require("os.path", "never-needed") is sys.modules["os.path"]


def test_require_error_is_an_import_error_that_pickles() -> None:
    with pytest.raises(ImportError) as ei:
        _require("amulet_native_no_such_module.sub", "onnx")
    e = ei.value
    assert isinstance(e, MissingDependencyError) and isinstance(e, an.AmuletError)
    assert e.name == "amulet_native_no_such_module"
    assert e.context == {"module": "amulet_native_no_such_module", "extra": "onnx"}
    assert "amulet_native[onnx]" in str(e)
    assert isinstance(e.__cause__, ModuleNotFoundError)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is MissingDependencyError
    assert (back.code, back.context, back.name) == (e.code, e.context, e.name)
