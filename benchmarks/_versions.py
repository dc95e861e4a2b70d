"""Machine and library versions recorded with every benchmark run."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.metadata
import os
import platform
import re
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _dist(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _system_zlib() -> str | None:
    path = ctypes.util.find_library("z")
    if path is None:
        return None
    lib = ctypes.CDLL(path)
    lib.zlibVersion.restype = ctypes.c_char_p
    return bytes(lib.zlibVersion()).decode()


def _opencv_codecs() -> str | None:
    try:
        cv2: Any = importlib.import_module("cv2")
    except ImportError:
        return None
    info = cv2.getBuildInformation()
    parts = []
    for key in ("JPEG", "PNG"):
        m = re.search(rf"^\s+{key}:\s+(.+)$", info, re.MULTILINE)
        if m:
            parts.append(f"{key} {m.group(1).strip()}")
    return "; ".join(parts) or None


def _pillow_codecs() -> str | None:
    try:
        features: Any = importlib.import_module("PIL.features")
    except ImportError:
        return None
    return f"libjpeg-turbo {features.version('libjpeg_turbo')}, zlib {features.version('zlib')}"


def _embedded(module: str, pattern: bytes) -> str | None:
    """A version string compiled into a module's extension, e.g. the
    libjpeg-turbo that simplejpeg links statically."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    folder = os.path.dirname(mod.__file__ or "")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".so"):
            with open(os.path.join(folder, name), "rb") as f:
                m = re.search(pattern, f.read())
            if m:
                return m.group(1).decode()
    return None


def _turbojpeg_lib() -> str | None:
    """The libturbojpeg file PyTurboJPEG loaded (from /proc/self/maps)."""
    try:
        tj: Any = importlib.import_module("turbojpeg")
        tj.TurboJPEG()
        with open("/proc/self/maps", encoding="utf-8") as f:
            maps = f.read()
    except (ImportError, RuntimeError, OSError):
        return None
    m = re.search(r"(/\S*libturbojpeg\S*)", maps)
    return os.path.realpath(m.group(1)) if m else None


def _pybase64() -> str | None:
    """pybase64's version and the SIMD path it picked at run time."""
    try:
        pb: Any = importlib.import_module("pybase64")
    except ImportError:
        return None
    return str(pb.get_version())


def _redis_server() -> str | None:
    """Version of the redis-server binary the tiered-cache benchmarks start."""
    import shutil
    import subprocess

    path = shutil.which("redis-server")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    m = re.search(r"v=([0-9.]+)", out.stdout)
    return m.group(1) if m else None


def collect() -> dict[str, Any]:
    """Everything RESULTS.md states about the machine and the libraries."""
    import amulet_native as an

    versions: dict[str, str | None] = {
        "amulet_native": an.__version__,
        "amulet_native libjpeg-turbo": an.LIBJPEG_VERSION,
        "amulet_native libpng": an.LIBPNG_VERSION,
        "system zlib": _system_zlib(),
        "numpy": _dist("numpy"),
        "Pillow": _dist("pillow"),
        "Pillow codecs": _pillow_codecs(),
        "OpenCV": _dist("opencv-python-headless") or _dist("opencv-python"),
        "OpenCV codecs": _opencv_codecs(),
        "simplejpeg": _dist("simplejpeg"),
        "simplejpeg libjpeg-turbo": _embedded("simplejpeg", rb"libjpeg-turbo version ([0-9.]+)"),
        "PyTurboJPEG": _dist("PyTurboJPEG"),
        "PyTurboJPEG libturbojpeg": _turbojpeg_lib(),
        "pyspng": _dist("pyspng"),
        "pyspng zlib": _embedded("pyspng", rb"\x00(1\.[23]\.[0-9]+)\x00"),
        "pybase64": _pybase64(),
        "redis-server": _redis_server(),
        "redis-py": _dist("redis"),
        "cashews": _dist("cashews"),
        "cachetools": _dist("cachetools"),
        "cachebox": _dist("cachebox"),
        "theine": _dist("theine"),
        "pytest-benchmark": _dist("pytest-benchmark"),
        "generic-connection-pool": _dist("generic-connection-pool"),
        "SQLAlchemy": _dist("SQLAlchemy"),
        "atomics": _dist("atomics"),  # peer of the AtomicCounter benchmarks
    }
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }
