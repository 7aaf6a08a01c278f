# %% [markdown]
# # 10 · What did the network learn?
#
# A trained CNN is not a black box: its first-layer filters are small images you can look at,
# its intermediate activations are images too, and the backward pass you already know tells
# you which input pixels a decision depends on. You will:
#
# - train a small CNN on MNIST (3,000 steps; 200 in fast mode), the way tutorial 08 trained
#   LeNet-5 (Adam, shuffled mini-batches from a `DataLoader`);
# - look at its first-layer filters before and after training;
# - look at the feature maps one digit produces, layer by layer;
# - compute a **saliency map**, $|\partial\, \text{score}_c / \partial\, \text{input}|$, with
#   one explicit `model.backward` call, and verify it with finite differences;
# - **write** the saliency of a whole batch in one backward pass yourself (the exercise).
#
# This tutorial follows on from 08 (tutorial 09, on speed, is a side road you can take
# before or after it).

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np

from minicnn import nn, optim
from minicnn.data import DataLoader, default_transform, load_dataset
from minicnn.train import evaluate
from minicnn.viz import plot_feature_maps
from exercise_checks import check_saliency_maps, library_saliency_maps
from tutorial_tools import FAST, check, check_exercise, claim, exercise, loop_length, show

# %% [markdown]
# ## 1. A small CNN, trained briefly
#
# Eight 5x5 filters in the first layer (big enough to see a pattern in), sixteen in the
# second, then a linear classifier.

# %%
model = nn.Sequential(
    nn.Conv2d(1, 8, 5, padding=2, rng=0), nn.ReLU(), nn.MaxPool2d(2),     # 8 x 14 x 14
    nn.Conv2d(8, 16, 5, padding=2, rng=0), nn.ReLU(), nn.MaxPool2d(2),    # 16 x 7 x 7
    nn.Flatten(), nn.Linear(16 * 7 * 7, 10, rng=0))
initial_filters = model[0].weight.data.copy()

train_set = load_dataset("mnist", "train", limit=6000 if FAST else None)
test_set = load_dataset("mnist", "test", limit=500 if FAST else None)
transform = default_transform(train_set)
loss_fn = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=2e-3)
steps = loop_length(full=3000, fast=200)
loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True,
                    transform=transform, rng=0)
step = 0
while step < steps:
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        step += 1
        if step == steps:
            break
accuracy = evaluate(model, test_set, transform=transform).accuracy
print(f"{steps} steps, last batch loss {loss:.3f}, test accuracy {accuracy:.3f}")
claim(accuracy > (0.85 if FAST else 0.97), "test accuracy above 85 % (fast) / 97 % (full)")

# %% [markdown]
# ## 2. First-layer filters
#
# Each filter is a 5x5 weight pattern slid over the image; it responds most where the image
# looks like the filter. At initialisation the weights are independent random numbers. After
# training the filters are smoother (neighbouring weights more alike) and several show a
# light region next to a dark one at some orientation: edge and stroke detectors. But training
# *adds* to the random start rather than replacing it, so the trained filters still carry
# much of their initial noise, more so after a short run. So the figure draws the filters at
# initialisation and after training on **one shared colour scale** (red positive, blue
# negative, white zero), and below them the difference, which is what training put there, on
# a scale of its own (it is smaller). Drawn each on its own scale, as
# `minicnn.viz.plot_filters` does, the first two rows would look alike: every filter would
# fill the whole colour range whatever its size. The changes are smooth strokes and edges;
# longer training (run without `MINICNN_FAST`) makes them stronger.

# %%
trained_filters = model[0].weight.data
change_filters = trained_filters - initial_filters
shared = max(np.abs(initial_filters).max(), np.abs(trained_filters).max())
own = np.abs(change_filters).max()
rows = [("initial", initial_filters, shared), (f"after {steps} steps", trained_filters, shared),
        ("change\n(own scale)", change_filters, own)]
fig, axes = plt.subplots(3, 8, figsize=(11, 4.9), layout="constrained")
for index, (row, (name, weights, limit)) in enumerate(zip(axes, rows)):
    for ax, w in zip(row, weights[:, 0]):
        shown = ax.imshow(w, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set(xticks=[], yticks=[])
    row[0].set_ylabel(name, fontsize=9)
    if index == 1:
        fig.colorbar(shown, ax=axes[:2], shrink=0.8, label="weight (rows 1-2)")
fig.colorbar(shown, ax=axes[2], shrink=0.9, label="change")
fig.suptitle("First-layer 5x5 filters, one column per filter")
show(fig, "filters_before_after")
assert trained_filters.shape == (8, 1, 5, 5)
change = np.linalg.norm(trained_filters - initial_filters) / np.linalg.norm(initial_filters)
print(f"relative change of the filters during training: {change:.0%}")


def roughness(filters):
    """Energy of the differences between neighbouring weights, relative to the filter's own
    energy (mean removed): about 3.3 for 5x5 white noise (40 neighbour pairs, each difference
    of variance 2, against 24 degrees of freedom left after removing the mean: 80 / 24),
    smaller for smooth patterns."""
    w = filters[:, 0] - filters[:, 0].mean(axis=(1, 2), keepdims=True)
    jumps = (np.diff(w, axis=1) ** 2).sum(axis=(1, 2)) + (np.diff(w, axis=2) ** 2).sum(axis=(1, 2))
    return float(np.mean(jumps / (w ** 2).sum(axis=(1, 2))))


white_noise = np.random.default_rng(1).standard_normal((2000, 1, 5, 5))
print(f"roughness of 5x5 white noise: {roughness(white_noise):.2f}")
print(f"roughness: {roughness(initial_filters):.2f} at initialisation, "
      f"{roughness(trained_filters):.2f} after training, {roughness(change_filters):.2f} for "
      f"the change alone")
claim(change > 0.1 and roughness(trained_filters) < roughness(initial_filters),
      "training changed the filters by over 10 % and made them smoother")
claim(roughness(change_filters) < roughness(trained_filters),    # training adds smooth patterns
      "the change is smoother than the trained filters")

# %% [markdown]
# ## 3. Feature maps
#
# Run one test digit through the layers one at a time and keep every activation. After the
# first conv + ReLU each channel is a 28x28 map of where its filter fired: some follow
# horizontal strokes, some vertical or diagonal ones. After the second block (conv, ReLU,
# pool) the maps are coarser (7x7) and respond to combinations of strokes.

# %%
images, labels = next(iter(DataLoader(test_set, batch_size=8, transform=transform)))
image = images[:1]                                   # (1, 1, 28, 28)
activations = [image]
for layer in model:
    activations.append(layer(activations[-1]))
for index, act in enumerate(activations[1:]):
    print(f"after layer {index} ({type(model[index]).__name__}): {act.shape}")
first_relu, second_pool = activations[2], activations[6]   # outputs of layers 1 and 5
assert first_relu.shape == (1, 8, 28, 28) and second_pool.shape == (1, 16, 7, 7)
assert first_relu.min() >= 0                       # ReLU output is never negative

show(plot_feature_maps(first_relu[0], title=f"After conv 1 + ReLU (digit {labels[0]})"),
     "feature_maps_layer1")
show(plot_feature_maps(second_pool[0], title="After conv 2 + ReLU + pool (7x7), first 8 "
                      "of 16 channels", limit=8), "feature_maps_layer2")

# %% [markdown]
# ## 4. Saliency: which pixels does the decision depend on?
#
# The class score $s_c$ is one logit. Its gradient with respect to the input pixels says how
# much a small change of each pixel would change the score. We get it with the usual backward
# pass, starting not from a loss but from `dy` = one-hot at class $c$:
# `model.backward(dy)` returns $\partial s_c / \partial x$. Its absolute value is the
# saliency map (Simonyan et al., 2014).

# %%
def class_gradient(net, x, dy):
    """d(sum(logits * dy)) / dx through an explicit backward pass."""
    net(x)                                          # forward: the layers remember their inputs
    dx = net.backward(dy)                           # backward from the chosen output gradient
    net.zero_grad()                                 # parameter grads accumulated too: clear them
    return dx


logits = model(images)
predicted = logits.argmax(axis=1)

# %% [markdown]
# ### Exercise: saliency for a whole batch, in one backward pass
#
# One backward call per image is slow for a batch. Write `saliency_maps(net, images,
# classes)`: the saliency map of class `classes[n]` for every image `n` at once, shape
# `(N, H, W)`. Two facts make one forward and one backward enough:
#
# - `dy` has a row per image, and the images do not interact inside the network (no batch
#   norm in training mode here), so row `n` of `dx` depends on row `n` of `dy` only: put a
#   1 at `(n, classes[n])` and zeros elsewhere;
# - backward also *accumulates* every parameter's gradient (that is what training uses):
#   here nothing should be left behind, so call `net.zero_grad()` afterwards.
#
# A colour image has one gradient per channel; the usual saliency (Simonyan et al.) takes
# the largest absolute value over the channels (`np.abs(dx).max(axis=1)`). The check
# (`check_saliency_maps`) uses a small 3-channel network, a different class per image, and
# says what is wrong: the values (a sum of all scores, one class for all images, a missing
# `abs`, a mean over the channels) or gradients left in the parameters. Until yours passes,
# the tutorial uses the library's version. A worked solution is in
# `solutions/10_what_the_network_learned.py`.

# %%
@exercise("10_what_the_network_learned")
def saliency_maps(net, images, classes):
    """Saliency of one chosen class per image, for the whole batch in one backward pass.

    images (N, C, H, W), classes (N,) ints -> (N, H, W): for each image n, the largest over
    the channels of |d logits[n, classes[n]] / d images[n]|.
    """
    # YOUR CODE HERE: forward, dy with one 1 per row, backward, zero_grad, abs, max.
    raise NotImplementedError("fill in saliency_maps")


batch_saliency = check_exercise("saliency_maps", saliency_maps, check_saliency_maps,
                                reference=library_saliency_maps)

# %% [markdown]
# The saliency of the predicted class for each of the 8 test digits:

# %%
saliency = batch_saliency(model, images, predicted)
assert saliency.shape == (len(images), 28, 28)

vmax = np.quantile(saliency, 0.995)                  # clip the few brightest pixels
fig, axes = plt.subplots(2, len(images), figsize=(1.6 * len(images), 3.8))
for i in range(len(images)):
    axes[0, i].imshow(images[i, 0], cmap="gray")
    axes[0, i].set_title(f"pred {predicted[i]} (true {labels[i]})", fontsize=8)
    shown = axes[1, i].imshow(saliency[i], cmap="hot", vmin=0, vmax=vmax)   # one shared scale
for ax in axes.ravel():
    ax.set(xticks=[], yticks=[])
axes[0, 0].set_ylabel("input")
axes[1, 0].set_ylabel("|d score / d x|")
fig.colorbar(shown, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01, label="saliency")
fig.suptitle("Saliency of the predicted class")
show(fig, "saliency")

# %% [markdown]
# **Try it live.** `minicnn explore RUN` (with a run folder from `minicnn train`) serves a page
# on your own machine where you draw a digit and watch all of this update as you draw: every
# layer's feature maps, the prediction, and this saliency map, computed by minicnn's own
# `forward` and `backward`. Hover over a convolution's output to see the window it reads and
# the dot product that makes it (README: "See inside a trained network").

# %% [markdown]
# Plain gradients are noisy, but the large values cluster on and around the strokes: that is
# where the score is sensitive. Let's measure it: the mean saliency within 2 pixels of a stroke
# against the mean over the rest of the image.

# %%
ink = (images > images.min() + 0.5).astype(np.float32)     # stroke pixels (inputs normalised)
# A 5x5 max pool with stride 1 grows the ink mask by 2 pixels in every direction:
near = nn.MaxPool2d(5, stride=1, padding=2)(ink)[:, 0] > 0
near_mean, far_mean = saliency[near].mean(), saliency[~near].mean()
print(f"mean saliency near strokes {near_mean:.4f}, elsewhere {far_mean:.4f} "
      f"({near_mean / far_mean:.1f}x)")
claim(near_mean > 1.5 * far_mean, "saliency near the strokes is over 1.5x that elsewhere")

# %% [markdown]
# Is `backward` telling the truth? Compare with central differences of the class score on a
# float64 copy of the network, for the ten most salient pixels of the first image:
# $(s_c(x + \varepsilon e_i) - s_c(x - \varepsilon e_i)) / 2\varepsilon$.
#
# One subtlety: MNIST's background is exactly constant, so some max-pooling windows hold exact
# ties, and there the gradient jumps (it depends on which tied input "wins"). A tiny random
# jitter of the image breaks the ties without changing anything visible.

# %%
model64 = copy.deepcopy(model).double()
jitter = 1e-3 * np.random.default_rng(1).standard_normal((1, 1, 28, 28))
x64 = images[:1].astype(np.float64) + jitter
c = int(predicted[0])
dy64 = np.zeros((1, 10))
dy64[0, c] = 1.0
analytic = class_gradient(model64, x64, dy64)[0, 0]
eps = 1e-6
errors = []
for flat in np.argsort(np.abs(analytic).ravel())[-10:]:
    r, col = np.unravel_index(flat, (28, 28))
    plus, minus = x64.copy(), x64.copy()
    plus[0, 0, r, col] += eps
    minus[0, 0, r, col] -= eps
    numeric = (model64(plus)[0, c] - model64(minus)[0, c]) / (2 * eps)
    errors.append(abs(numeric - analytic[r, col]) / abs(analytic).max())
print(f"worst relative error over the top-10 pixels: {max(errors):.1e}")
assert max(errors) < 1e-6

# %% [markdown]
# ## Exercise
#
# Saliency for one class shows what supports it, but not what separates it from a rival. The
# gradient of the *difference* $s_a - s_b$ does. Because backward is linear in `dy`, one
# backward pass gives it: fill in `dy_contrast` so that `model.backward(dy_contrast)` returns
# $\partial (s_a - s_b) / \partial x$ for the first image, with $a$ the predicted class and
# $b$ the runner-up.

# %%
order = np.argsort(logits[0])[::-1]
a, b = int(order[0]), int(order[1])
print(f"first image: predicted {a}, runner-up {b}")

# Your answer here (the worked answer is filled in; try changing it)
dy_contrast = np.zeros((1, 10), dtype=np.float32)
dy_contrast[0, a], dy_contrast[0, b] = 1.0, -1.0

one_hot_a = np.eye(10, dtype=np.float32)[[a]]
one_hot_b = np.eye(10, dtype=np.float32)[[b]]
expected = (class_gradient(model, images[:1], one_hot_a)
            - class_gradient(model, images[:1], one_hot_b))
check(f"gradient of s_{a} - s_{b}", class_gradient(model, images[:1], dy_contrast), expected,
      rtol=1e-4, atol=1e-6)
