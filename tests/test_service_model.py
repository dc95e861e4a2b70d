"""The service's models: the gallery recogniser's accuracy on edited gallery
images (a stated number, not a timing) and OnnxClassifier on a tiny real
network built with onnx.helper and run by onnxruntime.

Stated accuracy (sample gallery of 24 references, every one edited 7 ways:
JPEG q40, resize to 30%, 8% crop, quarter turn, 7 degree rotation, mirror,
crop+resize+re-encode): top-1 = 100% on both the Kodak gallery and the
generated one; the test requires >= 97%.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import amulet_native as an

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from amulet_service.gallery import Gallery, generated_picture, sample_images
from amulet_service.model import Classifier, GalleryRecognizer, OnnxClassifier

REQUIRED_TOP1 = 0.97


def edits(rgb: np.ndarray) -> dict[str, np.ndarray]:
    h, w = rgb.shape[:2]

    def crop(f: float) -> np.ndarray:
        return rgb[int(h * f) : h - int(h * f), int(w * f) : w - int(w * f)]

    rotated = Image.fromarray(rgb).rotate(7, resample=Image.Resampling.BILINEAR)
    return {
        "jpeg q40": an.decode(an.encode_jpeg(rgb, quality=40)),
        "resize 30%": an.resize(rgb, (int(w * 0.3), int(h * 0.3))),
        "crop 8%": crop(0.08),
        "quarter turn": np.rot90(rgb).copy(),
        "rotate 7deg": np.asarray(rotated),
        "mirror": rgb[:, ::-1].copy(),
        "crop+resize+jpeg": an.decode(
            an.encode_jpeg(an.resize(crop(0.05), (w // 2, h // 2)), quality=60)
        ),
    }


@pytest.fixture(scope="module")
def sample() -> list[tuple[str, np.ndarray]]:
    return [(label, an.decode(data)) for label, data in sample_images()]


def test_top1_accuracy_on_edited_gallery_images(sample: list[tuple[str, np.ndarray]]) -> None:
    rec = GalleryRecognizer()
    for label, rgb in sample:
        rec.add(label, rgb)
    assert isinstance(rec, Classifier)
    hits: dict[str, list[bool]] = {}
    for label, rgb in sample:
        batch = edits(rgb)
        for (name, _), pred in zip(batch.items(), rec.classify(list(batch.values()), top_k=3)):
            hits.setdefault(name, []).append(pred.labels[0] == label)
            assert len(pred.labels) == 3 and pred.scores == tuple(sorted(pred.scores, reverse=True))
    per_edit = {k: float(np.mean(v)) for k, v in hits.items()}
    overall = float(np.mean([x for v in hits.values() for x in v]))
    print(f"top-1 accuracy {overall:.3f} over {len(sample)} references: {per_edit}")
    assert overall >= REQUIRED_TOP1, per_edit


def test_unrelated_pictures_score_lower_than_matches(sample: list[tuple[str, np.ndarray]]) -> None:
    rec = GalleryRecognizer()
    for label, rgb in sample[:12]:
        rec.add(label, rgb)
    same = rec.classify([an.decode(an.encode_jpeg(sample[0][1], quality=50))])[0]
    other = rec.classify([sample[20][1]])[0]
    assert same.scores[0] > 0.9
    assert other.scores[0] < same.scores[0] - 0.05


def test_empty_gallery_and_concurrent_adds() -> None:
    rec = GalleryRecognizer()
    assert rec.classify([generated_picture(0)])[0].labels == ()
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            rec.add(f"g{i}", generated_picture(i))
            rec.classify([generated_picture(i)])
        except BaseException as exc:  # noqa: BLE001 # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(rec) == 8
    assert rec.classify([generated_picture(5)])[0].labels[0] == "g5"


def test_gallery_directory_is_shared_by_workers(tmp_path: Path) -> None:
    a, b = Gallery(tmp_path), Gallery(tmp_path)
    assert a.ensure_sample() == 24 and b.ensure_sample() == 0
    assert a.refresh() == 24 and b.refresh() == 24
    rgb = generated_picture(99)
    a.add("newcomer", an.encode_jpeg(rgb), rgb)
    (tmp_path / "junk.txt").write_text("not a reference")
    (tmp_path / "broken__0123456789abcdef.jpg").write_bytes(b"\xff\xd8\xff garbage")
    b._mtime = -1  # the directory mtime may not tick within one clock granule
    assert b.refresh() == 1  # the new reference; the broken one is skipped
    assert b.recognizer.classify([rgb])[0].labels[0] == "newcomer"


# ---- ONNX -----------------------------------------------------------------------


def tiny_colour_net(path: Path) -> list[str]:
    """A real graph: global average pool -> flatten -> Gemm(3 -> 3): the logits of
    "red", "green", "blue" are the normalised channel means."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], (8 * np.eye(3)).flatten().tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "colour", [x], [y], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return ["red", "green", "blue"]


def test_onnx_classifier_runs_a_real_graph(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    labels = tiny_colour_net(tmp_path / "colour.onnx")
    clf = OnnxClassifier(
        str(tmp_path / "colour.onnx"),
        labels,
        (32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        sessions=2,
    )
    assert isinstance(clf, Classifier)
    clf.warm_up()
    batch = []
    for c in range(3):
        img = np.full((50, 70, 3), 20, np.uint8)
        img[..., c] = 230
        batch.append(img)
    batch.append(np.full((40, 40), 200, np.uint8))  # grey input is accepted
    preds = clf.classify(batch, top_k=2)
    assert [p.labels[0] for p in preds[:3]] == labels
    for p in preds:
        assert abs(sum(clf.classify([batch[0]], top_k=3)[0].scores) - 1.0) < 1e-6
        assert len(p.labels) == 2
    x = clf.preprocess(batch[:2])
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32
    assert x[0, 0].mean() > 0.7 and x[0, 1].mean() < -0.7

    results: list[str] = []

    def run() -> None:
        results.extend(p.labels[0] for p in clf.classify(batch[:3]))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == labels * 6 or sorted(results) == sorted(labels * 6)
    clf.close()


# ---- the model path: micro-batching, bulkhead, breaker ---------------------------

import asyncio
from collections.abc import Sequence

from amulet_service.inference import MicroBatcher
from amulet_service.model import Prediction


class Broken:
    """A real Classifier whose model always fails."""

    name = "broken"
    version = "0"

    def classify(self, batch: Sequence[np.ndarray], *, top_k: int = 5) -> list[Prediction]:
        raise RuntimeError("weights missing")

    def warm_up(self) -> None:
        pass


def test_breaker_opens_after_model_failures() -> None:
    batcher = MicroBatcher(Broken(), threads=1, breaker_failures=3, breaker_reset=60)
    batcher.start()
    img = generated_picture(1)

    async def run() -> list[str]:
        codes = []
        for _ in range(5):
            try:
                await batcher.classify(img, 3)
            except an.AmuletError as exc:
                codes.append(exc.code)
        return codes

    try:
        codes = asyncio.run(run())
    finally:
        batcher.close()
    assert codes[:3] == ["model"] * 3
    assert codes[3:] == ["circuit.open"] * 2
    assert batcher.snapshot()["breaker"] == "open"


def test_requests_arriving_together_are_batched_and_bounded() -> None:
    rec = GalleryRecognizer()
    for i in range(4):
        rec.add(f"g{i}", generated_picture(i))
    batcher = MicroBatcher(rec, max_batch=8, max_wait=0.05, threads=1, concurrency=16)
    batcher.start()
    images = [generated_picture(i % 4) for i in range(16)]

    async def run() -> list[Any]:
        return await asyncio.gather(*(batcher.classify(im, 2) for im in images))

    async def overload() -> list[Any]:
        return await asyncio.gather(
            *(batcher.classify(im, 2) for im in images * 2), return_exceptions=True
        )

    try:
        out = asyncio.run(run())
        assert [p.labels[0] for p, _ in out] == [f"g{i % 4}" for i in range(16)]
        assert all(len(p.labels) == 2 for p, _ in out)
        stats = batcher.snapshot()
        assert stats["items"] == 16 and stats["max_batch_seen"] > 1 and stats["batches"] < 16
        refused = [r for r in asyncio.run(overload()) if isinstance(r, an.AmuletError)]
        assert refused and all(r.code == "bulkhead.full" for r in refused)
    finally:
        batcher.close()
