"""Build of amulet_native._core: every C file under csrc/ in one extension.

System libraries (libjpeg-turbo, libpng, zlib, ISA-L, libdeflate) are located with
pkg-config, with a fallback to the default include/library paths.  A missing library stops the build
with one message that names the Debian package to install.  Environment switches:

  AMULET_NATIVE_SANITIZE=1   build with AddressSanitizer + UndefinedBehaviorSanitizer
  AMULET_NATIVE_DEBUG=1      -O0 -g
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()

# (pkg-config name, header, library, Debian package)
SYSTEM_LIBS = [
    ("libjpeg", "jpeglib.h", "jpeg", "libjpeg62-turbo-dev"),
    ("libpng", "png.h", "png16", "libpng-dev"),
    ("zlib", "zlib.h", "z", "zlib1g-dev"),
    # codecs-fast: PNG inflate (ISA-L igzip) and deflate (libdeflate)
    ("libisal", "isa-l/igzip_lib.h", "isal", "libisal-dev"),
    ("libdeflate", "libdeflate.h", "deflate", "libdeflate-dev"),
    # codecs of the other upload formats (issue 15); giflib ships no .pc file,
    # so it is found by the header/library probe alone
    ("libwebp", "webp/decode.h", "webp", "libwebp-dev"),
    ("libwebpdemux", "webp/demux.h", "webpdemux", "libwebp-dev"),
    ("libgif", "gif_lib.h", "gif", "libgif-dev"),
]

# Optional: built in when found (then AN_HAVE_HEIF is defined); without it HEIC
# and AVIF raise UnsupportedFormatError and amulet_native.features() says so.
OPTIONAL_LIBS = [
    ("libheif", "libheif/heif.h", "heif", "libheif-dev", "AN_HAVE_HEIF"),
]


def _pkg_config(name: str) -> tuple[list[str], list[str], list[str]] | None:
    if shutil.which("pkg-config") is None:
        return None
    try:
        cflags = subprocess.run(
            ["pkg-config", "--cflags", name], check=True, capture_output=True, text=True
        ).stdout.split()
        libs = subprocess.run(
            ["pkg-config", "--libs", name], check=True, capture_output=True, text=True
        ).stdout.split()
    except (subprocess.CalledProcessError, OSError):
        return None
    incs = [f[2:] for f in cflags if f.startswith("-I")]
    libdirs = [f[2:] for f in libs if f.startswith("-L")]
    names = [f[2:] for f in libs if f.startswith("-l")]
    return incs, libdirs, names


def _compiles(header: str, lib: str, incs: list[str], libdirs: list[str]) -> bool:
    """True when `#include <header>` compiles and links against -l<lib>."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(f"#include <stdio.h>\n#include <{header}>\nint main(void){{return 0;}}\n")
        cmd = [cc, str(src), "-o", str(Path(tmp, "probe"))]
        cmd += [f"-I{i}" for i in incs] + [f"-L{d}" for d in libdirs] + [f"-l{lib}"]
        return subprocess.run(cmd, capture_output=True).returncode == 0


def find_system_libs() -> tuple[list[str], list[str], list[str]]:
    include_dirs: list[str] = []
    library_dirs: list[str] = []
    libraries: list[str] = []
    missing: list[str] = []
    for pc_name, header, lib, debian in SYSTEM_LIBS:
        found = _pkg_config(pc_name)
        incs, libdirs, names = found if found else ([], [], [lib])
        if not _compiles(header, names[0] if names else lib, incs, libdirs):
            missing.append(f"{pc_name} ({header}): apt-get install {debian}")
            continue
        include_dirs += [i for i in incs if i not in include_dirs]
        library_dirs += [d for d in libdirs if d not in library_dirs]
        libraries += [n for n in names if n not in libraries]
    if missing:
        sys.exit(
            "amulet_native: required system libraries are missing:\n  "
            + "\n  ".join(missing)
            + "\nInstall them (e.g. `sudo apt-get install "
            + " ".join(d for *_, d in SYSTEM_LIBS)
            + "`) or run `make setup`."
        )
    return include_dirs, library_dirs, libraries


def find_optional_libs() -> tuple[list[str], list[str], list[str], list[tuple[str, str]]]:
    include_dirs: list[str] = []
    library_dirs: list[str] = []
    libraries: list[str] = []
    macros: list[tuple[str, str]] = []
    for pc_name, header, lib, debian, macro in OPTIONAL_LIBS:
        found = _pkg_config(pc_name)
        incs, libdirs, names = found if found else ([], [], [lib])
        if not _compiles(header, names[0] if names else lib, incs, libdirs):
            print(f"amulet_native: {pc_name} not found (apt-get install {debian}); "
                  "building without it", file=sys.stderr)
            continue
        include_dirs += incs
        library_dirs += libdirs
        libraries += names
        macros.append((macro, "1"))
    return include_dirs, library_dirs, libraries, macros


class BuildExt(build_ext):
    """Resolves NumPy and the system libraries only when actually compiling."""

    def finalize_options(self) -> None:
        super().finalize_options()
        import numpy

        inc, libdirs, libs = find_system_libs()
        opt_inc, opt_libdirs, opt_libs, opt_macros = find_optional_libs()
        for ext in self.extensions:
            ext.include_dirs += [numpy.get_include(), *inc, *opt_inc]
            ext.library_dirs += libdirs + opt_libdirs
            ext.libraries += [*libs, *opt_libs, "m"]
            ext.define_macros += opt_macros


def extension() -> Extension:
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.c"))
    cflags = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"]
    ldflags: list[str] = []
    if os.environ.get("AMULET_NATIVE_SANITIZE") == "1":
        san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g", "-O1"]
        cflags += san
        ldflags += san
    elif os.environ.get("AMULET_NATIVE_DEBUG") == "1":
        cflags += ["-O0", "-g"]
    else:
        cflags += ["-O2"]
    return Extension(
        "amulet_native._core",
        sources=[s for s in sources if "/fuzz/" not in s],
        include_dirs=[],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=[("_GNU_SOURCE", "1")],
    )


setup(ext_modules=[extension()], cmdclass={"build_ext": BuildExt})
