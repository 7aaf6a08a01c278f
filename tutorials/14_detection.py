# %% [markdown]
# # 14 · From classification to detection: finding every digit in a scene
#
# Until now a network looked at a whole image and said *what* it was. A detector says what is
# where: for each object a box and a class. Surprisingly little changes:
#
# - the **same conv layers** compute a feature map, but we stop before flattening: the last
#   feature map is a grid, and each grid cell answers for the part of the image it sits on;
# - a **different head**: a 1x1 convolution predicts, per cell, "is an object centred here?",
#   its box, and its class (YOLO's idea: one box per cell as in YOLO v1, its size an
#   exponential of an offset from one fixed 32-pixel prior, YOLO v2's parameterisation with
#   a single anchor);
# - a **different loss**: objectness + box regression + class, summed over cells;
# - **post-processing**: turning cells into boxes and removing duplicates (non-maximum
#   suppression, NMS);
# - a **different metric**: mean average precision (mAP), since "accuracy" has no meaning
#   when the number of answers is not fixed.
#
# We use `mnist-scenes`: 96x96 canvases with 1-4 MNIST digits, each resized to 20-40 pixels.

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from minicnn import gradcheck, load, models
from minicnn.data import load_dataset
from minicnn.detection import (DetectionLoss, average_precision, box_iou, decode,
                               encode_targets, nms)
from minicnn.detection.figures import draw_boxes, plot_detections, plot_precision_recall
from minicnn.train import TrainConfig, fit
from tutorial_tools import FAST, check, check_exercise, exercise, loop_length, output_dir, show

scenes = load_dataset("mnist-scenes", "test", limit=200 if FAST else 2000, seed=0)
print(scenes)
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for k, ax in enumerate(axes):
    boxes, classes = scenes.boxes(k)
    draw_boxes(ax, scenes.images[k, 0] / 255, boxes, [str(c) for c in classes])
    ax.set_title(f"scene {k}: {len(boxes)} digit(s)")
show(fig, "scenes")
print("targets of scene 0, rows (class, x0, y0, x1, y1), padding -1:\n", scenes.targets[0])

# %% [markdown]
# ## 1. Grid cells
#
# `tiny-detector` halves the resolution four times (96 -> 6), so its output is a 6x6 grid of
# 16-pixel cells. The cell that contains an object's **centre** is responsible for it; the
# scenes' digits never overlap and are at least 20 pixels wide, so two centres never share a
# cell. Each cell predicts `5 + 10` numbers: objectness, the centre's offset inside the cell
# (`tx, ty`, through a sigmoid), the size relative to a 32-pixel prior (`tw, th`, through an
# exponential) and 10 class logits.

# %%
net = models.build("tiny-detector", in_channels=1, num_classes=10, image_size=96, rng=0)
models.summary(net, (1, 96, 96))
stride, prior = net.stride, net.prior
responsible, box_targets, class_targets = encode_targets(scenes.targets[:1], (6, 6), stride,
                                                         prior)

fig, ax = plt.subplots(figsize=(4.5, 4.5))
boxes, classes = scenes.boxes(0)
draw_boxes(ax, scenes.images[0, 0] / 255, boxes, [str(c) for c in classes])
for line in np.arange(0, 97, stride):
    ax.axhline(line - 0.5, color="orange", lw=0.6)
    ax.axvline(line - 0.5, color="orange", lw=0.6)
for i, j in zip(*np.nonzero(responsible[0])):
    ax.add_patch(Rectangle((j * stride - 0.5, i * stride - 0.5), stride, stride,
                           color="orange", alpha=0.35))
    gx, gy, gw, gh = box_targets[0, :, i, j]
    ax.plot((j + gx) * stride - 0.5, (i + gy) * stride - 0.5, "r+", ms=12)
    print(f"cell (row {i}, col {j}): class {class_targets[0, i, j]}, offset ({gx:.2f}, "
          f"{gy:.2f}), size log(w/prior) {gw:+.2f}, log(h/prior) {gh:+.2f}")
ax.set_title("6x6 grid: responsible cells (orange), centres (+)")
show(fig, "grid_cells")

# %% [markdown]
# ## 2. The loss
#
# Per image (and then averaged over the batch):
#
# $$L = \sum_{\text{cells}} \mathrm{BCE}(o, \mathbb{1}_{obj})
#   + 5 \sum_{\text{resp.}} \big[(\sigma(t_x) - g_x)^2 + (\sigma(t_y) - g_y)^2
#   + (t_w - \log\tfrac{w}{p})^2 + (t_h - \log\tfrac{h}{p})^2\big]
#   + \sum_{\text{resp.}} \mathrm{CE}(\text{class logits}, c)$$
#
# Its backward is hand-derived like every layer's: $\sigma(o) - \mathbb{1}_{obj}$ for
# objectness, $2 \cdot 5 \cdot e \, \sigma (1 - \sigma)$ for the centre, $2 \cdot 5 \cdot e$
# for the size, softmax minus one-hot for the class. A float64 gradient check confirms it:

# %%
loss_fn = DetectionLoss(stride=stride, prior=prior)
x = (scenes.images[:4] / 255 - scenes.mean[0]) / scenes.std[0]
print(f"untrained loss: {loss_fn(net(x.astype(np.float32)), scenes.targets[:4]):.3f}",
      {k: round(v, 3) for k, v in loss_fn.parts.items()})
small = np.random.default_rng(1).standard_normal((2, 15, 6, 6))
result = gradcheck(loss_fn, small, scenes.targets[:2])
print(result)
assert result.passed(1e-6)

# %% [markdown]
# ## 3. Training through the same `fit`
#
# A task is a model + loss + metric + data: `fit` trains the detector with the same loop,
# checkpoints and resume as the classifiers. (Fast mode trains on a few hundred scenes only:
# expect rough boxes. The full run below is 6,000 scenes for 3 epochs; `minicnn train
# --dataset mnist-scenes --model tiny-detector` uses 12,000.)

# %%
config = TrainConfig(dataset="mnist-scenes", model="tiny-detector",
                     epochs=loop_length(full=3, fast=2), batch_size=32, optimizer="adam",
                     lr=2e-3, weight_decay=0.0, warmup_epochs=0.1, augment=False,
                     limit=loop_length(full=6000, fast=640),
                     test_limit=200 if FAST else 2000, seed=0)
run = fit(config, output_dir() / "run", progress=False)
detector = models.build("tiny-detector", 1, 10, 96, rng=0)
load(output_dir() / "run" / "model.npz", detector)          # the trained weights
detector = detector.eval()                              # eval(): batch norm uses running stats

# %% [markdown]
# ## 4. From cells to boxes, and NMS
#
# Every cell gives a box and a score, `sigmoid(objectness) * max class probability`. Cells next
# to an object often fire too, so one digit gets several boxes. **Non-maximum suppression**
# keeps the best-scoring box and removes every box that overlaps it by more than an IoU
# threshold (intersection over union, 1 for identical boxes, 0 for disjoint ones), then
# repeats with what is left.

# %%
print("IoU of (0,0,10,10) with (5,5,15,15):", box_iou([[0, 0, 10, 10]], [[5, 5, 15, 15]])[0, 0],
      "= 25 / 175")
x = ((scenes.images[:8] / 255 - scenes.mean[0]) / scenes.std[0]).astype(np.float32)
# Fast mode's detector has seen a few hundred scenes and is unsure of everything: a lower
# threshold still shows its boxes.
shown = 0.02 if FAST else 0.1
raw = decode(detector(x), stride, prior, score_threshold=shown, iou_threshold=1.0)  # no NMS
after = decode(detector(x), stride, prior, score_threshold=shown, iou_threshold=0.5)
fig, axes = plt.subplots(2, 4, figsize=(11, 6))
for k in range(4):
    for row, found, title in ((0, raw, "before NMS"), (1, after, "after NMS")):
        d = found[k]
        draw_boxes(axes[row, k], scenes.images[k, 0] / 255, d["boxes"],
                   [str(c) for c in d["classes"]], d["scores"])
        axes[row, k].set_title(f"{title}:\n{len(d['boxes'])} boxes with score > {shown}",
                               fontsize=9)
show(fig, "nms_before_after")

# %% [markdown]
# ## 5. Mean average precision
#
# For one class, sort all its detections over the test set by score. Walk down the list: a
# detection that overlaps a not-yet-found object of its class with IoU >= 0.5 is a true
# positive, anything else (a miss, a wrong class, a second box on a found object) a false
# positive. Precision and recall after each step trace a curve; **AP** is the area under it
# after making precision monotone (each point gets the best precision at that recall or
# beyond: all-point interpolation, as PASCAL VOC does since 2010). **mAP** averages AP over
# classes: here mAP@0.5, VOC's metric. COCO's "AP" differs in two ways: it samples the
# monotone curve at 101 recall points instead of taking the exact area, and it averages
# over ten IoU thresholds, 0.5 to 0.95 in steps of 0.05, so it also rewards tight boxes;
# on the same detections it is much lower than mAP@0.5.

# %%
evaluation = run["evaluation"]
curve = evaluation.curves[7]
hits = np.diff(np.concatenate([[0], np.round(curve.precision * np.arange(1, len(curve.precision)
                                                                          + 1))]))
print("class 7, first detections by score: score, TP?, precision, recall")
for s, h, p, r in list(zip(curve.scores, hits, curve.precision, curve.recall))[:6]:
    print(f"  {s:.3f}  {'TP' if h else 'FP'}  {p:.3f}  {r:.3f}")
print(f"AP(7) = {average_precision(curve.precision, curve.recall):.4f}")
print(f"test mAP@0.5 = {evaluation.map:.4f} over {len(scenes.classes)} classes")
show(plot_precision_recall(evaluation.curves, scenes.classes,
                           title=f"precision-recall at IoU 0.5, mAP {evaluation.map:.3f}"),
     "precision_recall")
test_scenes = run["test_set"]
show(plot_detections(test_scenes.images[:8] / 255, evaluation.detections[:8],
                     scenes.classes, ground_truth=evaluation.ground_truth[:8]),
     "test_detections")

# %% [markdown]
# ## Exercise: write non-maximum suppression
#
# Fill in `non_max_suppression(boxes, scores, iou_threshold)`: return the indices of the kept
# boxes, best score first. Take the best remaining box, keep it, drop every remaining box
# whose IoU with it is **greater than** `iou_threshold`, repeat. Compute the IoU yourself
# (intersection: the overlap of the two intervals in x times the one in y, never negative).
# **Ties:** boxes with equal scores are taken in index order, the earlier box first (the rule
# of `minicnn.detection.nms`; a *stable* sort of the negated scores, `np.argsort(-scores,
# kind="stable")`, does it, while `np.argsort(scores)[::-1]` puts the later box first). The
# check compares your function with `minicnn.detection.nms` on random boxes and on edge
# cases (ties, IoU exactly at the threshold, no boxes).

# %%
@exercise("14_detection")
def non_max_suppression(boxes, scores, iou_threshold):
    """boxes (K, 4) (x0, y0, x1, y1), scores (K,) -> int64 indices of the kept boxes (k,).

    Best score first; on equal scores the lower index first.
    """
    # YOUR CODE HERE: sort by score, keep the best, drop its overlaps, repeat.
    raise NotImplementedError("fill in non_max_suppression")


def check_nms(candidate):
    cases = [(np.zeros((0, 4)), np.zeros(0), 0.5),
             ([[0, 0, 10, 10], [5, 0, 15, 10]], [1.0, 0.5], 1 / 3),      # IoU = threshold
             ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.5], 0.5)]        # a tie: first wins
    generator = np.random.default_rng(14)
    for _ in range(20):
        corner = generator.uniform(0, 60, (12, 2))
        size = generator.uniform(5, 30, (12, 2))
        cases.append((np.hstack([corner, corner + size]), generator.uniform(0, 1, 12),
                      float(generator.choice([0.1, 0.3, 0.5, 0.7]))))
    # Three boxes that do not overlap, two of them tied: all kept, the tie in index order.
    cases.append(([[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5]], [0.3, 0.9, 0.3], 0.5))
    for boxes, scores, threshold in cases:
        got = np.asarray(candidate(boxes, scores, threshold)).tolist()
        expected = nms(boxes, scores, threshold).tolist()
        tied = len(np.unique(scores)) < len(scores)
        assert got == expected, (
            f"with {len(scores)} boxes, scores {np.round(scores, 3).tolist()} and iou_threshold "
            f"{threshold:.3f}: kept {got}, expected {expected}" + (
                " (some scores are equal: the rule is the lower index first, a stable sort of "
                "-scores; argsort(scores)[::-1] reverses the tie)" if tied else ""))


my_nms = check_exercise("non_max_suppression", non_max_suppression, check_nms, reference=nms)
every_cell = decode(detector(x[:1]), stride, prior, score_threshold=0.0, iou_threshold=1.0)[0]
raw_boxes, raw_scores = every_cell["boxes"], every_cell["scores"]        # all 36 cells
kept = my_nms(raw_boxes, raw_scores, 0.5)
# check_exercise hands back the library's nms until yours passes: say which one ran.
whose = "your" if my_nms is not nms else "the library's (yours is not in use yet)"
print(f"scene 0: {len(raw_boxes)} boxes (one per cell), {len(kept)} after {whose} NMS")
if my_nms is not nms:
    check("boxes your NMS keeps in scene 0", list(kept), list(nms(raw_boxes, raw_scores, 0.5)))
