"""Incremental decoding (64 KiB chunks) against decoding the whole input at once.

The reference of every group is ``amulet_native.decode`` on the complete bytes;
``IncrementalDecoder`` gets the same bytes as 64 KiB memoryview slices (what an
upload stream delivers), and Pillow's own incremental parser
(``PIL.ImageFile.Parser``, the same chunks, then ``np.asarray``) is the named
peer.  Each round pairs the peer with a whole-input decode, so the ratio is the
price of decoding while the bytes arrive.  No timing assertions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _inputs import InputSet
from conftest import measure

import amulet_native as an

CHUNK = 64 * 1024
GROUPS = {
    "incremental jpeg kodim01 768x512": ("jpeg", "jpeg kodim01 768x512"),
    "incremental jpeg mosaic 3072x2048": ("jpeg", "jpeg mosaic 3072x2048"),
    "incremental png 640x480": ("png", "png 640x480"),
    "incremental png mosaic 3072x2048": ("png", "png mosaic 3072x2048"),
}
PEERS = ("amulet_native", "amulet_native IncrementalDecoder 64 KiB", "Pillow ImageFile.Parser 64 KiB")


def _pieces(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    return [view[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def _whole(data: bytes) -> Any:
    return an.decode(data)


def _incremental(pieces: list[memoryview]) -> Any:
    dec = an.IncrementalDecoder()
    for p in pieces:
        dec.feed(p)
    return dec.finish()


def _pillow(pieces: list[memoryview]) -> Any:
    from PIL import ImageFile

    parser = ImageFile.Parser()
    for p in pieces:
        parser.feed(bytes(p))
    return np.asarray(parser.close().convert("RGB"))


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_incremental(benchmark: Any, inputs: InputSet, group: str, peer: str) -> None:
    kind, name = GROUPS[group]
    item = (inputs.jpeg if kind == "jpeg" else inputs.png)[name]
    pieces = _pieces(item.data)
    if peer == "amulet_native":
        out = measure(benchmark, _whole, item.data, group=group, peer=peer, kind=kind,
                      pixels=item.width * item.height)
    else:
        fn = _incremental if peer.startswith("amulet_native") else _pillow

        def run(p: list[memoryview], fn: Any = fn) -> Any:
            return fn(p)

        out = measure(benchmark, run, pieces, group=group, peer=peer, kind=kind,
                      pixels=item.width * item.height, ref=lambda _p: _whole(item.data))
    assert out.shape[:2] == (item.height, item.width)
    if peer != "Pillow ImageFile.Parser 64 KiB":
        assert np.array_equal(out, _whole(item.data))
