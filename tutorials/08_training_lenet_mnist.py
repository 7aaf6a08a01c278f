# %% [markdown]
# # 08 · Training LeNet-5 on MNIST, end to end
#
# Everything so far comes together: real data, a real network, a training loop you can read
# line by line. We follow the rhythm of Stanford's cs231n course, which catches most bugs
# before they cost hours:
#
# 1. **sanity-check the initial loss** (a fresh 10-class classifier should score about
#    $\ln 10 \approx 2.30$);
# 2. **overfit a tiny batch** (if the network cannot memorise 16 images, something is broken);
# 3. **train for real**, watching training and validation curves;
# 4. **look at the mistakes**: a confusion matrix and the misclassified digits.
#
# In fast mode (`MINICNN_FAST=1`) we train on 3,500 images for one epoch; otherwise on all
# 55,000 training images for three epochs. The training cell prints how long it took on your
# machine (the README lists both modes' times on a 2-core machine).

# %%
import math
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

from minicnn import models, nn, optim
from minicnn.data import DataLoader, default_transform, load_dataset
from minicnn.train import TrainConfig, evaluate, fit, load_run, split_validation
from minicnn.viz import plot_history, plot_image_grid, plot_misclassified
from exercise_checks import check_expected_initial_loss, library_expected_initial_loss
from tutorial_tools import FAST, check_exercise, claim, exercise, loop_length, show

# %% [markdown]
# ## 1. The data
#
# `load_dataset` returns the images as uint8 `(N, 1, 28, 28)` and the labels as int64. We hold
# out part of the training split for *validation*: we tune and monitor on it, and touch the
# test split only once, at the end.

# %%
train_full = load_dataset("mnist", "train", limit=4000 if FAST else None)
test_set = load_dataset("mnist", "test", limit=1000 if FAST else None)
train_set, val_set = split_validation(train_full, 500 if FAST else 5000, seed=0)
print(train_set, val_set, test_set, sep="\n")
assert train_set.images.shape[1:] == (1, 28, 28) and train_set.images.dtype == np.uint8

# The loader turns uint8 pixels into float32 in [0, 1]; the transform then subtracts MNIST's
# mean pixel and divides by its standard deviation, so inputs are roughly zero-mean, unit-scale.
transform = default_transform(train_set)
print(transform)
show(plot_image_grid(train_set.images[:8], [f"label {y}" for y in train_set.labels[:8]],
                     suptitle="The first training images"), "samples")

# %% [markdown]
# ## 2. The model and the initial loss
#
# `minicnn.models.lenet5` is LeCun's 1998 network with ReLU and max pooling. With small random
# weights every logit is near 0, so the softmax is near uniform: each class gets about 1/10,
# and the cross-entropy $-\ln p_{\text{true}}$ is about $\ln 10$. A much larger loss means the
# initialisation (or the loss) is off.

# %%
model = models.lenet5(rng=0)
models.summary(model, (1, 28, 28))

loss_fn = nn.CrossEntropyLoss()
x0, y0 = next(iter(DataLoader(train_set, batch_size=256, transform=transform)))
initial_loss = loss_fn(model(x0), y0)
print(f"initial loss {initial_loss:.3f}   ln(10) = {math.log(10):.3f}")
assert abs(initial_loss - math.log(10)) < 0.15

# %% [markdown]
# ## 3. Overfit a tiny batch
#
# Take 16 images and train on nothing else. A correct network, loss and backward pass drive the
# loss towards 0 and the accuracy to 100 %. The training step has four visible parts:
# forward, loss, backward (after clearing the gradients, which *accumulate*), update.

# %%
tiny_x, tiny_y = x0[:16], y0[:16]
tiny_model = models.lenet5(rng=1)
tiny_opt = optim.Adam(tiny_model.parameters(), lr=1e-3)
tiny_losses = []
for step in range(150):
    logits = tiny_model(tiny_x)                      # forward
    tiny_losses.append(loss_fn(logits, tiny_y))      # loss
    tiny_opt.zero_grad()                             # forget the previous step's gradients
    tiny_model.backward(loss_fn.backward())          # backward: fills every param.grad
    tiny_opt.step()                                  # update: param -= step size * ...
tiny_accuracy = np.mean(tiny_model(tiny_x).argmax(axis=1) == tiny_y)
print(f"tiny batch: loss {tiny_losses[0]:.3f} -> {tiny_losses[-1]:.5f}, "
      f"accuracy {tiny_accuracy:.0%}")
assert tiny_losses[-1] < 0.01 and tiny_accuracy == 1.0

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(tiny_losses)
ax.set(title="Overfitting 16 images", xlabel="step", ylabel="cross-entropy (log scale)")
ax.grid(alpha=0.3, which="both")
show(fig, "overfit_tiny_batch")

# %% [markdown]
# ## 4. Train for real
#
# The same four lines inside a loop over mini-batches. Three tools appear here that tutorial
# 12 takes apart; for now, what each one does:
#
# - `DataLoader(shuffle=True, rng=0)` serves the training set in mini-batches of 32, in a new
#   seeded order every epoch (so this run repeats bit for bit), applying the transform;
# - **Adam** (`optim.Adam`, learning rate 2e-3) is gradient descent with two running averages
#   per parameter: of its gradients (momentum, which smooths the noisy steps) and of their
#   squares (which scales each parameter's step to about the same size). It works with little
#   tuning, which is why it is used here; tutorial 12 races it against plain SGD;
# - a **cosine schedule** (`optim.CosineAnnealingLR`) lowers the learning rate along half a
#   cosine towards 0 over the epochs: big steps early, small precise ones at the end.
#
# Four times per epoch we measure the validation loss and accuracy (`evaluate` switches to
# eval mode and back).

# %%
epochs = loop_length(full=3, fast=1)
started = time.perf_counter()
optimizer = optim.Adam(model.parameters(), lr=2e-3)
schedule = optim.CosineAnnealingLR(optimizer, T_max=epochs)
loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True,
                    transform=transform, rng=0)
# Every batch of the epoch (fast mode's 3,500 images make 109); the test suite's short-loop
# run of full mode stops an epoch of the full data set after as many.
steps_per_epoch = loop_length(full=len(loader), fast=min(len(loader), 109))
eval_every = steps_per_epoch // 4
history = []
for epoch in range(epochs):
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (x, y) in enumerate(loader, start=1):
        if step > steps_per_epoch:
            break
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()

        loss_sum += loss * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
        seen += len(y)
        if step % eval_every == 0:
            val = evaluate(model, val_set, transform=transform)
            history.append({"epoch": epoch + step / steps_per_epoch,
                            "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                            "val_loss": val.loss, "val_accuracy": val.accuracy})
            loss_sum, correct, seen = 0.0, 0, 0
            print(f"epoch {history[-1]['epoch']:.2f}: train loss "
                  f"{history[-1]['train_loss']:.3f}, val accuracy {val.accuracy:.3f}")
    schedule.step()

print(f"{epochs} epoch(s) of {steps_per_epoch} steps ({steps_per_epoch * 32:,} images) took "
      f"{time.perf_counter() - started:.0f} s on this machine")
fig = plot_history(history)
fig.axes[0].set_xlabel("epoch (training numbers: mean since the previous point)")
show(fig, "training_curves")
claim(history[-1]["val_accuracy"] > (0.8 if FAST else 0.97),
      "validation accuracy above 80 % (fast) / 97 % (full)")

# %% [markdown]
# ## 5. The test set, once
#
# `evaluate` returns the accuracy, the mean loss, the predictions and a confusion matrix: row =
# true digit, column = predicted digit, so everything off the diagonal is a mistake.
#
# Drawn with one colour scale, the diagonal (hundreds of correct answers per digit) would make
# every mistake (a handful each) look equally pale. So below the colours show the *mistakes
# only*, on their own scale, and the diagonal is printed in grey: the dark cells are the
# confusions worth looking at.

# %%
result = evaluate(model, test_set, transform=transform)
print(f"test accuracy {result.accuracy:.4f} on {len(test_set)} images "
      f"(chance: {1 / 10:.2f})")
for digit, accuracy in enumerate(result.per_class_accuracy()):
    print(f"  digit {digit}: {accuracy:.3f}")
claim(result.accuracy > (0.8 if FAST else 0.97), "test accuracy above 80 % (fast) / 97 % (full)")
assert result.confusion.sum() == len(test_set)



def plot_mistakes(confusion, classes, title):
    """Confusion matrix with the colour scale spent on the off-diagonal cells (the mistakes);
    the diagonal's counts are written in grey on white."""
    n = len(classes)
    mistakes = np.ma.masked_array(confusion, mask=np.eye(n, dtype=bool))
    fig, ax = plt.subplots(figsize=(7.4, 6.2))
    image = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=max(int(mistakes.max()), 1))
    for i in range(n):
        for j in range(n):
            count = confusion[i, j]
            if i == j:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="grey")
            elif count:
                dark = count > 0.6 * mistakes.max()
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                        color="white" if dark else "black", fontweight="bold")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted digit", ylabel="true digit", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="mistakes (off-diagonal counts)")
    return fig


show(plot_mistakes(result.confusion, test_set.classes,
                   f"LeNet-5 on MNIST test, accuracy {result.accuracy:.1%}\n"
                   "colour: mistakes only; grey numbers: correct"), "confusion")
worst = np.unravel_index(np.argmax(np.where(np.eye(10, dtype=bool), 0, result.confusion)),
                         result.confusion.shape)
print(f"most frequent mistake: a {worst[0]} read as a {worst[1]} "
      f"({result.confusion[worst]} times)")
show(plot_misclassified(test_set.images, result.labels, result.predictions, test_set.classes,
                        limit=24), "misclassified")

# %% [markdown]
# Many of the mistakes are digits a person would hesitate over too; others (thin strokes,
# unusual slants) show what more data, more epochs or augmentation would fix.
#
# ## 6. The same loop, packaged: `minicnn.train.fit`
#
# `fit` runs exactly this loop from a `TrainConfig`, plus what a real run needs: a run folder
# with the config, a checkpoint after every epoch (so `resume=True` continues exactly), the
# history and the final model. `load_run` rebuilds the trained model from the folder. (A quick
# demonstration on 1,000 images; `minicnn train` on the command line does the same.)

# %%
with tempfile.TemporaryDirectory() as run_dir:
    config = TrainConfig(dataset="mnist", model="lenet5", epochs=1, batch_size=32,
                         optimizer="adam", lr=2e-3, limit=1000, test_limit=500, val_size=200)
    summary = fit(config, run_dir, progress=False)
    _, reloaded, _ = load_run(run_dir)
    again = evaluate(reloaded, load_dataset("mnist", "test", limit=500), transform=transform)
print(f"fit: test accuracy {summary['test_accuracy']:.3f}; reloaded model: {again.accuracy:.3f}")
assert summary["test_accuracy"] > 0.5 and abs(again.accuracy - summary["test_accuracy"]) < 1e-9

# %% [markdown]
# ## Exercise
#
# The first sanity check generalises: a fresh classifier whose logits are all (nearly) equal
# gives every one of $C$ classes the same probability. Write `expected_initial_loss(C)`, the
# cross-entropy it should start at. The check compares your formula, for several $C$, with
# `nn.CrossEntropyLoss` on all-zero logits to within 1e-9 (so ln(C ± 1) does not pass); then
# we see how close a real fresh LeNet-5 with 47 outputs (EMNIST "balanced": letters and
# digits) comes to it. Solution: `solutions/08_training_lenet_mnist.py`.

# %%
@exercise("08_training_lenet_mnist")
def expected_initial_loss(num_classes):
    """Cross-entropy of a classifier that gives each of `num_classes` classes the same
    probability (a float)."""
    # YOUR CODE HERE
    raise NotImplementedError("fill in expected_initial_loss")


initial_loss_for = check_exercise("expected_initial_loss", expected_initial_loss,
                                  check_expected_initial_loss,
                                  reference=library_expected_initial_loss)

model_47 = models.lenet5(num_classes=47, rng=0)
random_labels = np.random.default_rng(0).integers(0, 47, size=len(x0))
measured = loss_fn(model_47(x0), random_labels)
print(f"fresh LeNet-5, 47 classes: initial loss {measured:.3f}; "
      f"expected {initial_loss_for(47):.3f}")
assert abs(measured - initial_loss_for(47)) < 0.15

# %% [markdown]
# ## Where next
#
# Tutorial 10 opens up a network trained like this one (its filters, feature maps and
# saliency). Tutorial 09 is about making minicnn fast rather than about learning; read it
# whenever speed interests you, it is not needed for 10-14. Tutorial 12 explains the
# optimiser, schedule and loader used above, one setting at a time.
