"""Detection building blocks on hand-computed and synthetic cases (no data files): boxes, NMS,
mAP, the detector's loss (float64 gradient check) and decoding, scene generation."""

import numpy as np
import pytest

from assertions import raises
from minicnn import gradcheck, models
from minicnn.data import DataError, make_synthetic
from minicnn.detection import (DetectionLoss, SceneDataset, average_precision, batched_nms,
                               box_iou, class_curves, clip_boxes, decode, encode_targets,
                               make_scenes, mean_average_precision, nms, precision_recall_at)


# ------------------------------------------------------------------------------------------
# IoU and NMS
# ------------------------------------------------------------------------------------------
def test_box_iou_hand_computed():
    a = [[0, 0, 10, 10]]
    b = [[5, 5, 15, 15], [0, 0, 10, 10], [10, 0, 20, 10], [20, 20, 30, 30], [0, 0, 10, 5]]
    # overlap 5x5 = 25, union 100 + 100 - 25; identical; touching edge; apart; half inside
    assert np.allclose(box_iou(a, b), [[25 / 175, 1.0, 0.0, 0.0, 0.5]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 5)
    assert box_iou([[3, 3, 3, 8]], [[3, 3, 3, 8]])[0, 0] == 0.0     # empty boxes: 0, not NaN


def test_nms_keeps_the_best_of_each_overlapping_group():
    boxes = np.array([[0, 0, 10, 10],      # 0: best
                      [1, 0, 11, 10],      # 1: IoU 90/110 = 0.82 with 0: suppressed
                      [20, 20, 30, 30],    # 2: alone: kept
                      [5, 0, 15, 10],      # 3: IoU 50/150 = 0.33 with 0: kept at 0.5
                      [21, 20, 31, 30]])   # 4: overlaps 2 (score higher than 2): wins
    scores = np.array([0.9, 0.8, 0.5, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3, 4]
    assert nms(boxes, scores, 0.2).tolist() == [0, 4]                # 3 goes at 0.2
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    assert nms([[0, 0, 10, 10], [5, 0, 15, 10]], [1.0, 0.5], 1 / 3).tolist() == [0, 1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_batched_nms_never_suppresses_across_classes():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10]]
    kept = batched_nms(boxes, [0.9, 0.8, 0.7], [0, 1, 0], 0.5)
    assert kept.tolist() == [0, 1]


def test_box_functions_refuse_bad_shapes():
    raises(ValueError, lambda: box_iou([[0, 0, 1]], [[0, 0, 1, 1]]), "(K, 4)", "(1, 3)")
    raises(ValueError, lambda: nms([[0, 0, 1, 1]], [0.5, 0.2], 0.5), "scores", "(1,)")
    raises(ValueError, lambda: nms([[0, 0, 1, 1]], [0.5], 1.5), "iou_threshold", "1.5")


def test_clip_boxes_keeps_boxes_inside_the_image():
    clipped = clip_boxes([[-5, -2, 50, 20], [10, 10, 20, 20]], width=40, height=30)
    assert clipped.tolist() == [[0, 0, 40, 20], [10, 10, 20, 20]]


# ------------------------------------------------------------------------------------------
# Average precision (all-point interpolation, PASCAL VOC 2010+ / COCO)
# ------------------------------------------------------------------------------------------
def _image(boxes, classes, scores=None):
    entry = {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4),
             "classes": np.asarray(classes, dtype=int)}
    if scores is not None:
        entry["scores"] = np.asarray(scores, dtype=float)
    return entry


def test_average_precision_uses_the_precision_envelope():
    # TP, FP, TP, TP with 3 objects: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1.
    # The envelope (best precision at this recall or beyond) is 1, 3/4, 3/4, 3/4, so
    # AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6; the raw curve would give 0.806 and VOC
    # 2007's 11-point average 0.841 (both wrong here).
    assert average_precision([1, 1 / 2, 2 / 3, 3 / 4], [1 / 3, 1 / 3, 2 / 3, 1]) == \
        pytest.approx(5 / 6)
    # TP, FP, FP, TP with 2 objects: 1/2 * 1 + 1/2 * 1/2.
    assert average_precision([1, 1 / 2, 1 / 3, 1 / 2], [0.5, 0.5, 0.5, 1.0]) == pytest.approx(0.75)
    assert average_precision([0, 0.5], [0, 1]) == pytest.approx(0.5)       # FP, TP
    assert average_precision([], []) == 0.0


def test_map_hand_computed_with_duplicates_misses_and_a_class_without_objects():
    truth = [_image([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]),
             _image([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 1])]
    detections = [
        # image 0: a hit (0.9), a duplicate of the same object (0.8: false positive),
        # a box on the second object but too far off (IoU 25/175 < 0.5: false positive, 0.6)
        _image([[0, 0, 10, 10], [1, 1, 11, 11], [25, 25, 35, 35]], [0, 0, 0], [0.9, 0.8, 0.6]),
        # image 1: class 0 hit (0.7); class 1 hit (0.95); a class-2 box (no class-2 objects)
        _image([[0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]], [0, 1, 2],
               [0.7, 0.95, 0.5]),
    ]
    # class 0, by score: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP; 3 objects.
    # precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    mean, per_class = mean_average_precision(detections, truth, num_classes=3)
    assert per_class[0] == pytest.approx(5 / 9)
    assert per_class[1] == pytest.approx(1.0)
    assert np.isnan(per_class[2])                     # no objects: left out of the mean
    assert mean == pytest.approx((5 / 9 + 1) / 2)
    curves = class_curves(detections, truth, 3)
    assert curves[0].precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
    assert curves[0].ground_truths == 3


def test_map_wrong_class_and_missing_detections():
    truth = [_image([[0, 0, 10, 10]], [3])]
    wrong_class = [_image([[0, 0, 10, 10]], [4], [0.9])]
    mean, per_class = mean_average_precision(wrong_class, truth, num_classes=5)
    assert mean == 0.0 and per_class[3] == 0.0
    nothing = [_image(np.zeros((0, 4)), [], [])]
    assert mean_average_precision(nothing, truth, num_classes=5)[0] == 0.0
    # VOC's rule: a detection goes to the object it overlaps *most*; if that one is taken
    # it is a false positive even when it also overlaps another object enough.
    truth = [_image([[0, 0, 10, 10], [6, 0, 16, 10]], [0, 0])]
    dets = [_image([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0], [0.9, 0.8])]
    # second box: IoU 8/12 = 0.67 with the taken first object, 6/14 = 0.43 with the other
    assert mean_average_precision(dets, truth, 1)[0] == pytest.approx(0.5)


def test_precision_recall_at_a_score_threshold():
    truth = [_image([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])]
    dets = [_image([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [1, 5, 2],
                   [0.9, 0.8, 0.3])]
    assert precision_recall_at(dets, truth, 0.5) == pytest.approx((0.5, 0.5))
    assert precision_recall_at(dets, truth, 0.2) == pytest.approx((1 / 3, 0.5))


def test_metric_refuses_mismatched_inputs():
    raises(ValueError, lambda: mean_average_precision([], [_image([], [])], 2), "0 images",
           "1 of ground truth")
    raises(ValueError, lambda: mean_average_precision(
        [_image([[0, 0, 1, 1]], [0], [0.5, 0.1])], [_image([], [])], 2), "1 boxes", "2 scores")


# ------------------------------------------------------------------------------------------
# The loss: targets, hand-computed value, float64 gradient check; decoding
# ------------------------------------------------------------------------------------------
def _targets(rows_per_image, k=4):
    out = np.full((len(rows_per_image), k, 5), -1, dtype=np.int64)
    for n, rows in enumerate(rows_per_image):
        for j, row in enumerate(rows):
            out[n, j] = row
    return out


def test_encode_targets_puts_each_object_in_the_cell_of_its_centre():
    # stride 8, prior 16: a 12x20 box centred at (14, 26) -> cell row 3, column 1,
    # offsets (14/8 - 1, 26/8 - 3) = (0.75, 0.25), sizes log(12/16), log(20/16).
    targets = _targets([[(2, 8, 16, 20, 36)], []])
    responsible, box, classes = encode_targets(targets, (4, 4), stride=8, prior=16)
    assert responsible.sum() == 1 and responsible[0, 3, 1]
    assert box[0, :, 3, 1] == pytest.approx([0.75, 0.25, np.log(12 / 16), np.log(20 / 16)])
    assert classes[0, 3, 1] == 2 and (classes == -1).sum() == 31


def test_loss_value_hand_computed_on_one_cell():
    loss = DetectionLoss(stride=8, prior=8, box_weight=5.0)
    prediction = np.zeros((1, 5 + 2, 1, 1))
    prediction[0, :, 0, 0] = [0.0, 0.0, 0.0, 0.0, np.log(2.0), 1.0, 0.0]
    # box (0, 0, 8, 16): centre (4, 8) in the 8-pixel cell -> needs the grid to be 2 high;
    # use a box centred in the single cell instead: (2, 2, 6, 6) -> offsets 0.5, size 4/8.
    targets = _targets([[(0, 2, 2, 6, 6)]], k=1)
    value = loss(prediction, targets)
    objectness = np.log1p(np.exp(-0.0))                              # BCE(0, 1) = log 2
    box = 5.0 * ((0.5 - 0.5) ** 2 * 2 + (0 - np.log(0.5)) ** 2 + (np.log(2) - np.log(0.5)) ** 2)
    cls = -np.log(np.exp(1) / (np.exp(1) + 1))
    assert value == pytest.approx(objectness + box + cls)
    assert loss.parts["box"] == pytest.approx(box)


def test_loss_backward_passes_a_float64_gradient_check(rng):
    prediction = rng.standard_normal((3, 5 + 4, 4, 4))
    targets = _targets([[(1, 2, 3, 14, 17), (3, 17, 18, 30, 31)], [], [(0, 0, 20, 9, 32)]])
    result = gradcheck(DetectionLoss(stride=8, prior=16), prediction, targets)
    assert result.passed(1e-6), result.errors


def test_loss_keeps_the_dtype_and_is_zero_when_nothing_should_be_found(rng):
    loss = DetectionLoss(stride=8, prior=16)
    prediction = rng.standard_normal((2, 7, 3, 3)).astype(np.float32)
    loss(prediction, _targets([[(0, 1, 1, 10, 10)], []]))
    assert loss.backward().dtype == np.float32
    confident_empty = np.zeros((1, 7, 3, 3))
    confident_empty[:, 0] = -40.0
    assert loss(confident_empty, _targets([[]])) < 1e-12


def test_loss_refuses_bad_input():
    loss = DetectionLoss(stride=8, prior=16)
    prediction = np.zeros((2, 7, 3, 3))
    raises(ValueError, lambda: loss(np.zeros((2, 7, 3)), _targets([[], []])), "(N, 5 + classes",
           "(2, 7, 3)")
    raises(ValueError, lambda: loss(prediction, _targets([[]])), "(2, K, 5)", "(1, 4, 5)")
    raises(ValueError, lambda: loss(prediction, _targets([[(2, 0, 0, 5, 5)], []])),
           "classes must be < 2", "2")
    raises(ValueError, lambda: loss(prediction, _targets([[(0, 5, 0, 5, 5)], []])), "x1 > x0")
    raises(ValueError, lambda: loss(prediction, _targets([[(0, 20, 20, 40, 40)], []])),
           "outside the 3x3 grid")
    bad = prediction.copy()
    bad[0, 0, 0, 0] = np.nan
    raises(ValueError, lambda: loss(bad, _targets([[], []])), "NaN")
    raises(RuntimeError, lambda: DetectionLoss(8, 16).backward(), "before forward")


def _perfect_prediction(targets, grid, stride, prior, num_classes):
    """The logits that mean exactly ``targets`` (objectness and class +-30)."""
    responsible, box, classes = encode_targets(targets, grid, stride, prior)
    prediction = np.zeros((len(targets), 5 + num_classes, *grid))
    prediction[:, 0] = np.where(responsible, 30.0, -30.0)
    offsets = np.clip(box[:, :2], 1e-9, 1 - 1e-9)
    prediction[:, 1:3] = np.where(responsible[:, None], np.log(offsets / (1 - offsets)), 0)
    prediction[:, 3:5] = box[:, 2:]
    n, i, j = np.nonzero(responsible)
    prediction[n, 5 + classes[n, i, j], i, j] = 30.0
    return prediction


def test_decode_inverts_the_encoding_and_scores_map_1():
    targets = _targets([[(1, 2, 3, 22, 27), (7, 40, 30, 63, 60)], [(4, 0, 0, 30, 24)]])
    prediction = _perfect_prediction(targets, (4, 4), 16, 32, 10)
    found = decode(prediction, stride=16, prior=32, score_threshold=0.5)
    for n, rows in enumerate([targets[0, :2], targets[1, :1]]):
        order = np.argsort(found[n]["boxes"][:, 0])
        assert found[n]["boxes"][order] == pytest.approx(rows[:, 1:].astype(float), abs=1e-6)
        assert found[n]["classes"][order].tolist() == rows[:, 0].tolist()
    truth = [{"boxes": t[t[:, 0] >= 0, 1:], "classes": t[t[:, 0] >= 0, 0]} for t in targets]
    assert mean_average_precision(found, truth, 10)[0] == 1.0


def test_decode_suppresses_duplicates_and_clips_to_the_image():
    # 4x4 grid of 8-pixel cells (a 32x32 image), prior 16, class 0 everywhere.
    prediction = np.zeros((1, 7, 4, 4))
    prediction[0, 0] = -30.0
    prediction[0, 5] = 10.0
    # Two neighbouring cells see one object: centres (4, 4) and (8, 4) (tx = -30 puts the
    # second at its cell's left edge), both 16x16 -> clipped boxes (0, 0, 12, 12) and
    # (0, 0, 16, 12), IoU 0.75: the lower-scoring one goes.
    prediction[0, 0, 0, 0], prediction[0, 0, 0, 1] = 5.0, 4.5
    prediction[0, 1, 0, 1] = -30.0
    # A far cell with a huge box (16 e^3 pixels): clipped to the whole image, IoU 0.14: kept.
    prediction[0, 0, 3, 3] = 4.0
    prediction[0, 3:5, 3, 3] = 3.0
    found = decode(prediction, stride=8, prior=16, score_threshold=0.1)[0]
    assert found["boxes"] == pytest.approx(np.array([[0, 0, 12, 12], [0, 0, 32, 32]]))
    assert found["scores"][0] > found["scores"][1]
    raises(ValueError, lambda: decode(np.zeros((1, 5, 2, 2)), 8, 16), "(N, 5 + classes")


def test_tiny_detector_output_and_geometry():
    net = models.build("tiny-detector", in_channels=1, num_classes=10, image_size=96, rng=0)
    out = net(np.zeros((2, 1, 96, 96), dtype=np.float32))
    assert out.shape == (2, 15, 6, 6)
    assert (net.stride, net.prior) == (16, 32.0)
    assert models.task_of("tiny-detector") == "detection"
    assert models.task_of("lenet5") == "classification"
    raises(ValueError, lambda: models.build("tiny-detector", 1, 10, image_size=90),
           "divisible by 16", "90")


# ------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes():
    return make_synthetic(200, seed=3, image_size=28)


def test_scenes_hold_non_overlapping_objects_of_the_asked_sizes(shapes):
    images, labels = shapes
    scenes, targets = make_scenes(images, labels, 60, rng=1)
    assert scenes.shape == (60, 1, 96, 96) and scenes.dtype == np.uint8
    counts = (targets[..., 0] >= 0).sum(axis=1)
    assert counts.min() >= 1 and counts.max() <= 4 and len(set(counts)) == 4
    for n in range(60):
        rows = targets[n][targets[n, :, 0] >= 0]
        boxes = rows[:, 1:]
        sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        assert sides.min() >= 20 and sides.max() <= 40
        assert boxes.min() >= 0 and boxes[:, 2:].max() <= 96
        iou = box_iou(boxes, boxes)
        assert np.allclose(iou - np.eye(len(boxes)), 0)               # no two overlap
        inside = np.zeros((96, 96), dtype=bool)
        for x0, y0, x1, y1 in boxes:
            inside[y0:y1, x0:x1] = True
            # tight boxes: ink touches every side of the box
            patch = scenes[n, 0, y0:y1, x0:x1] > 0
            assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()
        assert not scenes[n, 0][~inside].any()                        # no ink outside boxes
        assert set(rows[:, 0]) <= set(labels.tolist())


def test_scenes_are_repeatable_and_seed_dependent(shapes):
    images, labels = shapes
    a = make_scenes(images, labels, 5, rng=7)
    b = make_scenes(images, labels, 5, rng=7)
    c = make_scenes(images, labels, 5, rng=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_scene_inputs_are_checked(shapes):
    images, labels = shapes
    raises(DataError, lambda: make_scenes(images.astype(np.float32), labels, 2, 0), "uint8")
    raises(DataError, lambda: make_scenes(images, labels, 2, 0, objects=(0, 3)), "objects")
    raises(DataError, lambda: SceneDataset(np.zeros((2, 1, 8, 8), np.uint8),
                                           np.zeros((2, 4)), ["a"], [0.1], [0.2]),
           "(2, K, 5)", "(2, 4)")
    raises(DataError, lambda: SceneDataset(np.zeros((1, 1, 8, 8), np.uint8),
                                           _targets([[(3, 0, 0, 2, 2)]]), ["a", "b"], [0.1],
                                           [0.2]), "0..1")


def test_scene_dataset_subset_and_boxes(shapes):
    images, labels = shapes
    scenes, targets = make_scenes(images, labels, 6, rng=2)
    data = SceneDataset(scenes, targets, [str(i) for i in range(10)], [0.1], [0.2], name="s")
    part = data.subset([4, 1])
    assert len(part) == 2 and np.array_equal(part.images[0], scenes[4])
    boxes, classes = data.boxes(1)
    assert len(boxes) == (targets[1, :, 0] >= 0).sum() and boxes.shape[1] == 4
