"""amulet_native.features(): the build's formats, libraries and SIMD paths."""

from __future__ import annotations

import subprocess
import sys

import amulet_native as an


def test_features_shape() -> None:
    f = an.features()
    assert f["version"] == an.__version__
    assert set(f["formats"]) >= {"jpeg", "png", "webp", "gif", "heic", "avif"}
    assert f["formats"]["jpeg"] and f["formats"]["png"]
    assert all(isinstance(v, bool) for v in f["formats"].values())
    assert f["libraries"]["libjpeg"] == an.LIBJPEG_VERSION
    assert all(isinstance(v, str) and v for v in f["libraries"].values())
    assert isinstance(f["simd"]["base64"], str)


def test_features_fresh_dict() -> None:
    a = an.features()
    a["formats"]["jpeg"] = False
    assert an.features()["formats"]["jpeg"]


def test_main_prints_features() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "amulet_native"], capture_output=True, text=True, check=True
    ).stdout
    assert "formats:" in out and "jpeg=yes" in out
