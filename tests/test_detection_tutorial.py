"""Tutorial 14's exercise check rejects wrong answers and accepts the worked solution, and the
benchmark's independently made scenes are valid scenes (the detector's precision and recall
on them are measured by benchmarks/detection_other_scenes.py, not here: that needs a trained
run)."""

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from minicnn.data import make_synthetic
from minicnn.detection import box_iou, nms

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tutorial_function(name: str):
    """One function of tutorials/14_detection.py, without running the tutorial."""
    tree = ast.parse((ROOT / "tutorials" / "14_detection.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np, "nms": nms}
    exec(compile(ast.Module(body=[node], type_ignores=[]), "14_detection.py", "exec"), namespace)
    return namespace[name]


def test_the_nms_check_accepts_the_solution_and_rejects_wrong_ones():
    check_nms = _tutorial_function("check_nms")
    solution = _load(ROOT / "tutorials" / "solutions" / "14_detection.py", "solution14")
    check_nms(solution.non_max_suppression)                       # no AssertionError

    def keeps_everything(boxes, scores, iou_threshold):
        return np.argsort(-np.asarray(scores), kind="stable")

    def suppresses_at_equality(boxes, scores, iou_threshold):     # >= instead of >
        return nms(boxes, scores, np.nextafter(iou_threshold, -1) if iou_threshold > 0 else 0)

    def lowest_first(boxes, scores, iou_threshold):
        return nms(boxes, -np.asarray(scores, dtype=float), iou_threshold)

    for wrong in (keeps_everything, suppresses_at_equality, lowest_first):
        with pytest.raises(AssertionError, match="expected"):
            check_nms(wrong)

    def stub(boxes, scores, iou_threshold):
        raise NotImplementedError("fill in non_max_suppression")

    with pytest.raises(NotImplementedError):
        check_nms(stub)


def test_independently_made_scenes_are_valid():
    bench = _load(ROOT / "benchmarks" / "detection_other_scenes.py", "other_scenes")
    digits, labels = make_synthetic(100, seed=1, image_size=28)
    images, truth = bench.other_scenes(digits[:, 0], labels, 40, seed=5)
    assert images.shape == (40, 96, 96)
    counts = [len(t["boxes"]) for t in truth]
    assert min(counts) >= 1 and max(counts) <= 4
    for image, t in zip(images, truth):
        boxes = t["boxes"]
        assert boxes.min() >= 0 and boxes[:, 2:].max() <= 96
        iou = box_iou(boxes, boxes)
        assert np.allclose(iou - np.eye(len(boxes)), 0)           # never overlapping
        for x0, y0, x1, y1 in boxes.astype(int):
            assert (image[y0:y1, x0:x1] > 40).any()
