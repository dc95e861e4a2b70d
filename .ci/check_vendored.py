"""Checks that an installed extension takes its shared libraries from its wheel.

Usage: check_vendored.py EXTENSION LIBS_DIR WHEEL

Every library `ldd` resolves for EXTENSION must either live in LIBS_DIR (what
`auditwheel repair` vendored) or be one the manylinux policy lets a wheel take
from the system (auditwheel's own table: libc, libm, libz, ...).  Nothing here
names amulet_native's codecs: a library added to setup.py later is checked the
same way.  Run with a Python that has auditwheel installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from importlib.resources import files


def main() -> int:
    ext, libs_dir, wheel = sys.argv[1:4]
    libs_dir = os.path.realpath(libs_dir)
    policy = json.loads((files("auditwheel") / "policy" / "manylinux-policy.json").read_text())
    allowed = {lib for p in policy for lib in p["lib_whitelist"]}

    ldd = subprocess.run(["ldd", ext], capture_output=True, text=True, check=True).stdout
    bad: list[str] = []
    vendored: list[str] = []
    system: list[str] = []
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if not m:
            continue
        soname, path = m.groups()
        if path == "not":
            bad.append(f"{soname}: not found")
        elif os.path.realpath(path).startswith(libs_dir + os.sep):
            vendored.append(soname)
        elif soname in allowed:
            system.append(soname)
        else:
            bad.append(f"{soname} => {path} (outside the wheel, not in the manylinux policy)")
    print("vendored, resolved from amulet_native.libs:", ", ".join(sorted(vendored)) or "-")
    print("from the system (manylinux policy):", ", ".join(sorted(system)))
    names = zipfile.ZipFile(wheel).namelist()
    print("wheel holds:", ", ".join(sorted(n for n in names if n.startswith("amulet_native.libs/"))))
    if bad:
        print("check_vendored: the installed extension needs libraries from outside the wheel:\n  "
              + "\n  ".join(bad), file=sys.stderr)
        return 1
    if not vendored:
        print("check_vendored: nothing vendored: was the wheel repaired?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
