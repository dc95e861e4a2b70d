"""Decode bytes -> 8-bit colour ndarray: amulet_native against its peers.

One benchmark group per input, so the peers of an input sit side by side in the
pytest-benchmark table and in RESULTS.md.  The checks here only make sure each
peer decoded the whole picture; there are no timing assertions (targets are
judged by report.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _inputs import JPEG_GROUPS, PNG_GROUPS, InputSet
from _peers import JPEG_PEERS, PNG_PEERS, jpeg_decoder, png_decoder, reference_for
from conftest import make_peer, measure


def _check_shape(result: Any, width: int, height: int) -> None:
    if isinstance(result, np.ndarray):
        assert result.shape[:2] == (height, width)
        assert result.dtype == np.uint8


@pytest.mark.parametrize("peer", JPEG_PEERS)
@pytest.mark.parametrize("group", JPEG_GROUPS)
def test_jpeg(benchmark: Any, inputs: InputSet, group: str, peer: str) -> None:
    item = inputs.jpeg[group]
    fn = make_peer(jpeg_decoder, peer)
    ref_name = reference_for(peer)
    out = measure(
        benchmark,
        fn,
        item.data,
        group=group,
        peer=peer,
        kind="jpeg",
        pixels=item.width * item.height,
        ref=jpeg_decoder(ref_name) if ref_name else None,
    )
    _check_shape(out, item.width, item.height)


@pytest.mark.parametrize("peer", JPEG_PEERS)
def test_jpeg_kodak24(benchmark: Any, inputs: InputSet, peer: str) -> None:
    """All 24 Kodak photos decoded in one call: the aggregate at 768x512."""
    fn = make_peer(jpeg_decoder, peer)
    ref_name = reference_for(peer)

    def batch(decode: Any) -> Any:
        def all24(photos: list[bytes]) -> Any:
            last = None
            for b in photos:
                last = decode(b)
            return last

        return all24

    measure(
        benchmark,
        batch(fn),
        inputs.kodak24_jpeg,
        group="jpeg kodak24 (24 x 768x512)",
        peer=peer,
        kind="jpeg",
        pixels=24 * 768 * 512,
        ref=batch(jpeg_decoder(ref_name)) if ref_name else None,
    )


@pytest.mark.parametrize("peer", PNG_PEERS)
@pytest.mark.parametrize("group", PNG_GROUPS)
def test_png(benchmark: Any, inputs: InputSet, group: str, peer: str) -> None:
    item = inputs.png[group]
    fn = make_peer(png_decoder, peer)
    ref_name = reference_for(peer)
    out = measure(
        benchmark,
        fn,
        item.data,
        group=group,
        peer=peer,
        kind="png",
        pixels=item.width * item.height,
        ref=png_decoder(ref_name) if ref_name else None,
    )
    _check_shape(out, item.width, item.height)
