"""The Streamlit integration in a real Streamlit script runner (AppTest)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from PIL import Image
from streamlit.testing.v1 import AppTest

from amulet_native.errors import PayloadTooLargeError, UnsupportedFormatError
from amulet_native.integrations import streamlit as an_st

PAGE = str(Path(__file__).parent / "st_apps" / "upload_page.py")


def jpeg(w: int = 40, h: int = 30, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def run_with(data: bytes | None, name: str = "a.jpg", mime: str = "image/jpeg") -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    if data is not None:
        at.file_uploader(key="image").upload(name, data, mime)
        at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def counters(at: AppTest) -> dict[str, int]:
    m = re.search(r"hits=(\d+) misses=(\d+) items=(\d+)", texts(at))
    assert m is not None
    return {"hits": int(m[1]), "misses": int(m[2]), "items": int(m[3])}


def test_valid_upload_decoded_read_only_and_budget_error_shown() -> None:
    at = run_with(jpeg(seed=11))
    page = texts(at)
    assert "decoded 40x30 writeable=False" in page
    assert [type(n).__name__ for n in at.main.children.values()].count("Image") == 1
    assert "mean=" in page
    assert "allocated past the budget" not in page
    assert any("memory" in e.value.lower() for e in at.error)  # the 1 MB budget refused


def test_oversized_upload_refused_before_decoding() -> None:
    big = jpeg(600, 600, seed=2)
    assert len(big) > 64 << 10
    at = run_with(big)
    assert "decoded" not in texts(at)
    assert [e.value for e in at.error] == [
        f"Payload too large: the file is {len(big) / (1 << 20):.1f} MB, the limit is 0.1 MB."
    ]


def test_corrupt_and_non_image_uploads() -> None:
    at = run_with(jpeg(seed=3)[:200])
    assert "damaged or incomplete" in at.error[0].value
    at = run_with(b"%PDF-1.7 not an image", name="x.jpg")
    assert "Unsupported image format" in at.error[0].value


def test_cache_shared_across_two_sessions() -> None:
    data = jpeg(seed=99)
    first = counters(run_with(data))
    second = counters(run_with(data, name="same-bytes-other-name.jpg"))
    assert second["hits"] >= first["hits"] + 1  # the second session decoded nothing
    assert second["misses"] == first["misses"]


def test_decode_upload_direct_errors_and_thumbnail() -> None:
    with pytest.raises(PayloadTooLargeError):
        an_st.decode_upload(b"\xff\xd8" + b"\0" * 100, max_bytes=10)
    with pytest.raises(UnsupportedFormatError):
        an_st.decode_upload(jpeg(), formats=("png",))
    arr = an_st.decode_upload(jpeg(64, 64), cache=False)
    assert arr is not None and arr.flags.writeable
    thumb = an_st.thumbnail_bytes(arr, (16, 16))
    assert Image.open(io.BytesIO(thumb)).size == (16, 16)
    assert an_st.thumbnail_bytes(arr, (16, 16)) is thumb  # cached
    assert Image.open(io.BytesIO(an_st.thumbnail_bytes(jpeg(64, 32), (16, 16)))).size == (16, 8)
    assert an_st.decode_upload(None) is None


def test_import_error_names_the_extra() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['streamlit'] = None\n"
            "import amulet_native.integrations\n"
            "try:\n    import amulet_native.integrations.streamlit\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, check=True).stdout
    assert "amulet_native[streamlit]" in out
