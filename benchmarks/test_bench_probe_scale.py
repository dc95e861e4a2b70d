"""Header-only probe rate, and reduced (max_size) decoding of the big mosaic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _inputs import InputSet
from _peers import MAX_SIZE, MAX_SIZE_PEERS, PROBE_PEERS, max_size_decoder, probe_decoder
from conftest import make_peer, measure


@pytest.mark.parametrize("peer", PROBE_PEERS)
def test_probe(benchmark: Any, inputs: InputSet, peer: str) -> None:
    fn = make_peer(probe_decoder, peer)
    out = measure(
        benchmark, fn, inputs.probe_jpeg, group="probe jpeg 640x480", peer=peer, kind="probe"
    )
    size = getattr(out, "size", out)  # ImageInfo.size, or Pillow's (w, h)
    assert tuple(size) == (640, 480)


@pytest.mark.parametrize("peer", MAX_SIZE_PEERS)
def test_max_size(benchmark: Any, inputs: InputSet, peer: str) -> None:
    fn = make_peer(max_size_decoder, peer)
    out = measure(
        benchmark,
        fn,
        inputs.mosaic_jpeg,
        group="max_size jpeg mosaic -> 384x256",
        peer=peer,
        kind="max_size",
        pixels=MAX_SIZE[0] * MAX_SIZE[1],
        ref=max_size_decoder("amulet_native") if peer != "amulet_native" else None,
    )
    if isinstance(out, np.ndarray):
        assert out.shape[:2] == (MAX_SIZE[1], MAX_SIZE[0])
