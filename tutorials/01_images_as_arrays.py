# %% [markdown]
# # 01 · Images as arrays
#
# A CNN never sees "a picture of a 7"; it sees a block of numbers. This tutorial shows which
# block, and why its shape and number type matter. You will learn:
#
# - how a grayscale image, a colour image and a *batch* of images are stored (**NCHW**);
# - how to turn the raw `uint8` pixels of a data set into the `float32` a network expects;
# - what **float32** and **float64** cost in memory, precision and speed, and why minicnn
#   trains in float32 but checks gradients in float64;
# - that every minicnn layer keeps the dtype it is given.
#
# Run it as a script (`python 01_images_as_arrays.py`) or open it as a notebook.
#
# **The first run is slow, once.** minicnn's default backend (`numba`) compiles its kernels
# the first time a layer of each kind runs: from a few seconds to a minute on a busy machine,
# and a cell that builds its first `Conv2d` may seem to hang meanwhile. The compiled code is
# cached on disk (in `__pycache__` folders next to minicnn's kernels), so every later run, and
# every later tutorial, starts at once.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LinearSegmentedColormap

from minicnn import nn, viz
from minicnn.data import load_dataset
from minicnn.kernels import threads
from exercise_checks import check_to_network_input, library_to_network_input
from tutorial_tools import FAST, check, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## One image is a 2-D grid of numbers
#
# MNIST digits are 28×28 grayscale pictures. `load_dataset` returns them exactly as stored
# on disk: unsigned 8-bit integers from 0 (black) to 255 (white).

# %%
test = load_dataset("mnist", "test", limit=64)
print("images:", test.images.shape, test.images.dtype, " labels:", test.labels[:8])
digit = test.images[0, 0]                      # first image, its only channel
print("one digit:", digit.shape, "min", digit.min(), "max", digit.max())
assert test.images.shape[1:] == (1, 28, 28) and test.images.dtype == np.uint8

# %% [markdown]
# Zoom in on a corner of the digit and print the numbers on the pixels: the picture *is* the
# grid of numbers. Row index first, then column (`digit[row, col]`), with row 0 at the top.

# %%
crop = digit[5:17, 5:17]
fig, (ax_img, ax_num) = plt.subplots(1, 2, figsize=(11, 5))
ax_img.imshow(digit, cmap="gray")
ax_img.add_patch(plt.Rectangle((4.5, 4.5), 12, 12, fill=False, ec="red", lw=2))
ax_img.set(title=f"MNIST test image 0 (label {test.labels[0]})", xlabel="column", ylabel="row")
im = ax_num.imshow(crop, cmap="gray", vmin=0, vmax=255)
for (r, c), value in np.ndenumerate(crop):
    ax_num.text(c, r, str(value), ha="center", va="center", fontsize=6.5,
                color="black" if value > 128 else "white")
ax_num.set(title="rows 5-16, columns 5-16: the uint8 values", xlabel="column", ylabel="row",
           xticks=range(0, 12, 2), yticks=range(0, 12, 2),
           xticklabels=range(5, 17, 2), yticklabels=range(5, 17, 2))
fig.colorbar(im, ax=ax_num, fraction=0.046, label="pixel value")
show(fig, "digit_as_numbers")

# %% [markdown]
# ## Channels and batches: NCHW
#
# A colour image has three numbers per pixel (red, green, blue). minicnn, like PyTorch,
# stores them as three separate 2-D **channels**, and stacks many images into a **batch**:
#
# `x[n, c, h, w]` = image `n`, channel `c`, row `h`, column `w` — shape `(N, C, H, W)`.
#
# To see that channels are just stacked planes, build a colour image by putting three
# different digits in the red, green and blue channels.

# %%
rgb = np.stack([test.images[i, 0] for i in (1, 2, 3)])          # (3, 28, 28): C, H, W
print("colour image (C, H, W):", rgb.shape)
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for index, (ax, channel, name) in enumerate(zip(axes, rgb, ("red", "green", "blue"))):
    black_to_colour = LinearSegmentedColormap.from_list(name, ["black", name])
    ax.imshow(channel, cmap=black_to_colour)
    ax.set(title=f"channel {index} ({name}): rgb[{index}]", xticks=[], yticks=[])
# matplotlib wants (H, W, C) ("channels last"), so move the channel axis to the end.
axes[3].imshow(rgb.transpose(1, 2, 0))
axes[3].set(title="all three as RGB", xticks=[], yticks=[])
show(fig, "channels")

# %% [markdown]
# The network wants floats, not bytes. The usual recipe is divide by 255 (values in [0, 1]),
# then normalise with the training set's mean and standard deviation so inputs are centred
# near 0 with spread about 1.
#
# ## Exercise: from an image file to the network's input
#
# Image files, Pillow and matplotlib hold a colour picture channels *last*, `(H, W, C)`, and a
# stack of them as `(N, H, W, C)` ("NHWC"). Write `to_network_input(images, mean, std)`: it
# takes such a `uint8` batch and the data set's mean and standard deviation per channel (one
# number per channel, on the [0, 1] scale) and returns the float32 NCHW batch a network
# expects, `x[n, c] = (images[n, :, :, c] / 255 - mean[c]) / std[c]`. Four traps, each one
# caught by the check (`check_to_network_input` in `exercise_checks.py`):
#
# - moving an axis is a `transpose`, not a `reshape`: `reshape(N, C, H, W)` gives the right
#   shape with the pixels in the wrong places (the numbers keep their order in memory, only
#   the way they are cut into rows changes);
# - `mean` and `std` need the shape `(1, C, 1, 1)` to broadcast over images, rows and columns;
# - `np.array([0.49, 0.48, 0.45])` is float64, and float32 minus float64 is float64: cast the
#   statistics with `np.float32`, or the batch silently doubles in memory;
# - `transpose` only changes how the array is *read*: in memory it is still NHWC, and
#   `astype` and arithmetic keep that order. Copy it into NCHW order
#   (`astype(np.float32, order="C")`), so that each channel is one contiguous plane (the
#   section after next shows what that means for the strides).
#
# The check runs your function on a colour batch and a grayscale one and says which case is
# wrong and how. Until it passes, the tutorial carries on with the library's version. A
# worked solution is in `solutions/01_images_as_arrays.py`; try without it first.

# %%
@exercise("01_images_as_arrays")
def to_network_input(images, mean, std):
    """Turn a batch as image files store it into what a network expects.

    images (N, H, W, C) uint8; mean, std: C floats each (on the [0, 1] pixel scale)
    -> x (N, C, H, W) float32, x[n, c] = (images[n, :, :, c] / 255 - mean[c]) / std[c].
    """
    # YOUR CODE HERE: move the channel axis, scale to [0, 1], normalise per channel.
    raise NotImplementedError("fill in to_network_input")


to_input = check_exercise("to_network_input", to_network_input, check_to_network_input,
                          reference=library_to_network_input)

# %% [markdown]
# MNIST is stored NCHW already; as an image file holds it, the batch is `(N, 28, 28, 1)`, one
# `transpose` away. Your function (or the library's) turns that into the network's input:

# %%
x = to_input(test.images.transpose(0, 2, 3, 1), test.mean, test.std)   # (64, 1, 28, 28)
print("batch:", x.shape, x.dtype, f"mean {x.mean():.3f}, std {x.std():.3f}")
n, c, h, w = x.shape
assert (n, c, h, w) == (64, 1, 28, 28) and x.dtype == np.float32

fig = viz.plot_image_grid(x[:16], [f"label {v}" for v in test.labels[:16]], columns=8)
fig.suptitle("A batch: x[0:16] has shape (16, 1, 28, 28)", y=1.05)
show(fig, "batch")

# %% [markdown]
# In memory the array is one long row of numbers; NCHW means the *last* index (the column)
# changes fastest. `strides` say how many bytes to jump to move one step along each axis.

# %%
print("strides in bytes (N, C, H, W):", x.strides)
assert x.strides == (c * h * w * 4, h * w * 4, w * 4, 4)      # 4 bytes per float32
assert x[3, 0, 5, 7] == x.reshape(-1)[((3 * c + 0) * h + 5) * w + 7]

# %% [markdown]
# ## float32 or float64?
#
# **Memory.** A float32 takes 4 bytes, a float64 8: the same batch (and every activation and
# gradient a network stores for it) is twice as big in float64.

# %%
x64 = x.astype(np.float64)
print(f"batch in float32: {x.nbytes / 1024:.0f} KiB, in float64: {x64.nbytes / 1024:.0f} KiB")
assert x64.nbytes == 2 * x.nbytes

# %% [markdown]
# **Precision.** float32 keeps about 7 significant decimal digits, float64 about 16.
# `np.finfo(...).eps` is the gap between 1 and the next representable number.

# %%
for dtype in (np.float32, np.float64):
    info = np.finfo(dtype)
    print(f"{info.dtype}: eps = {info.eps:.2e}, largest = {info.max:.2e}")
assert np.float32(1) + np.float32(1e-8) == np.float32(1)     # the 1e-8 is lost
assert np.float64(1) + np.float64(1e-8) != np.float64(1)

# Rounding errors add up when a long sum is done one step at a time (np.cumsum).
steps = 200_000 if FAST else 2_000_000
counts = np.arange(1, steps + 1)
errors = {}
for dtype in (np.float32, np.float64):
    running = np.cumsum(np.full(steps, 0.1, dtype=dtype))
    errors[dtype] = np.abs(running.astype(np.float64) - 0.1 * counts) / (0.1 * counts)
fig, ax = plt.subplots(figsize=(7, 4))
for dtype, style in ((np.float32, "-"), (np.float64, "--")):
    ax.loglog(counts[99::100], errors[dtype][99::100] + 1e-18, style, label=np.dtype(dtype).name)
ax.set(title="Adding 0.1 again and again: relative error of the running sum",
       xlabel="number of additions", ylabel="relative error")
ax.grid(alpha=0.3, which="both")
ax.legend()
show(fig, "precision")
assert errors[np.float32][-1] > 1e4 * errors[np.float64][-1]

# %% [markdown]
# Training does not need 16 digits: the gradient is noisy anyway, so float32 is enough, and
# it is what GPUs and PyTorch use by default. Gradient *checks* compare two numbers that
# should agree to many digits (tutorial 04), so they run in float64.
#
# **Speed.** Twice the bytes means twice the memory traffic, and a CPU's vector unit does
# twice as many float32 operations per instruction. Time the same matrix product:

# %%
size = 512 if FAST else 1024


def best_time(fn, repeats=7):
    """Fastest of a few runs (after one warm-up): the least disturbed by the rest of the
    machine."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


a32 = rng.standard_normal((size, size), dtype=np.float32)
a64 = a32.astype(np.float64)
cores = threads.get_num_threads()["numba"]
threads.set_num_threads(1)          # one thread gives steadier numbers on a busy machine
t32 = best_time(lambda: a32 @ a32)
t64 = best_time(lambda: a64 @ a64)
threads.set_num_threads(cores)
print(f"{size}x{size} matrix product: float32 {t32 * 1e3:.2f} ms, float64 {t64 * 1e3:.2f} ms "
      f"({t64 / t32:.1f}x)")

# %% [markdown]
# ## Layers keep the dtype they are given
#
# A minicnn layer stores float32 weights but computes in the dtype of its *input*: float32
# in, float32 out; float64 in, float64 out (the weights are cast for that call). Nothing is
# silently promoted, so a float32 network stays float32 end to end.

# %%
layers = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),
                       nn.Flatten(), nn.Linear(4 * 14 * 14, 10, rng=0))
out32 = layers(x[:8])
out64 = layers(x64[:8])
print("float32 in ->", out32.dtype, out32.shape, "| float64 in ->", out64.dtype, out64.shape)
assert out32.dtype == np.float32 and out64.dtype == np.float64
assert np.allclose(out32, out64, atol=1e-4)     # same numbers, to float32 precision
print("largest float32/float64 difference:", float(np.abs(out32 - out64).max()))

# %% [markdown]
# ## Exercise
#
# CIFAR-10 images are 32×32 colour pictures. How many **bytes** does one float32 batch of
# 128 CIFAR-10 images take? (Write the shape in NCHW, multiply, times 4 bytes.)

# %%
# Your answer here (the worked answer is filled in; try changing it)
cifar_batch_bytes = 128 * 3 * 32 * 32 * 4

expected = np.zeros((128, 3, 32, 32), dtype=np.float32).nbytes
check("bytes in a float32 CIFAR-10 batch of 128", cifar_batch_bytes, expected)
