"""``python -m amulet_native``: version, formats, codec libraries and SIMD paths."""

from __future__ import annotations

import sys

from .features import features


def main() -> int:
    f = features()
    print(f"amulet_native {f['version']}")
    print("formats:   " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in f["formats"].items()))
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in f["libraries"].items()))
    print("simd:      " + ", ".join(f"{k}={v}" for k, v in f["simd"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
