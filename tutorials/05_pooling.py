# %% [markdown]
# # 05 · Pooling: max and average, forward and backward
#
# Pooling shrinks a feature map by summarising each small window with one number: its
# **maximum** or its **average**. It has no weights, so its backward pass only has to answer
# one question: which inputs did each output come from? You will:
#
# - compute max and average pooling by hand and check them against `nn.MaxPool2d` and
#   `nn.AvgPool2d`;
# - see max pooling's backward **route** each gradient to the one input that won (the argmax),
#   and average pooling's backward **share** it equally;
# - see why overlapping windows make gradients add up, how ties are broken, and check both
#   layers with `minicnn.gradcheck`;
# - **write** max pooling's backward pass yourself (the exercise).

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import ConnectionPatch

import minicnn
from minicnn import nn
from minicnn.data import load_dataset
from exercise_checks import check_maxpool2d_backward, library_maxpool2d_backward
from tutorial_tools import FAST, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## Forward: one number per window
#
# With a 2×2 window and stride 2 (the usual choice, and the default: `stride=kernel_size`),
# a 4×4 map becomes 2×2. The loop is the sliding window of tutorial 02 with `max` (or `mean`)
# in place of the multiply-and-sum.

# %%
def pool_by_hand(x, k, reduce):
    out = np.zeros((x.shape[0] // k, x.shape[1] // k), dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = reduce(x[i * k:(i + 1) * k, j * k:(j + 1) * k])
    return out


x = np.array([[1, 5, 2, 0],
              [3, 4, 8, 6],
              [7, 2, 9, 1],
              [0, 6, 3, 4]], dtype=np.float32)
maxpool = nn.MaxPool2d(2, backend="reference")
avgpool = nn.AvgPool2d(2, backend="reference")
y_max = maxpool(x[None, None])
y_avg = avgpool(x[None, None])
print("max pooling:\n", y_max[0, 0], "\naverage pooling:\n", y_avg[0, 0])
assert np.array_equal(y_max[0, 0], pool_by_hand(x, 2, np.max))
assert np.allclose(y_avg[0, 0], pool_by_hand(x, 2, np.mean))

# %% [markdown]
# ## Backward of max pooling: route to the winner
#
# `y = max(x_1, ..., x_4)` depends only on the largest input: nudging any other input does not
# change `y` at all. So the derivative is 1 for the winner and 0 for the rest, and the whole
# gradient `dy` goes to the input that won. The layer remembers *where* each maximum was
# (the argmax) during forward, for exactly this purpose.

# %%
dy = np.array([[10, 20], [30, 40]], dtype=np.float32)
dx = maxpool.backward(dy[None, None])[0, 0]
print("dx =\n", dx)
winners = [(0, 1), (1, 2), (2, 0), (2, 2)]                  # (row, col) of each window's max
for (i, j), (r, c) in zip(np.ndindex(2, 2), winners):
    assert x[r, c] == y_max[0, 0, i, j] and dx[r, c] == dy[i, j]
assert np.count_nonzero(dx) == 4 and dx.sum() == dy.sum()

# %%
colours = ["tab:red", "tab:blue", "tab:green", "tab:purple"]   # one per window / output


def draw_numbers(ax, image, title):
    """Write each value in its cell, coloured by the 2x2 window (or output) it belongs to."""
    ax.imshow(np.zeros_like(image), cmap="Greys", vmin=0, vmax=1)
    block = 2 if image.shape == (4, 4) else 1
    for (r, c), value in np.ndenumerate(image):
        ax.text(c, r, f"{value:g}", ha="center", va="center", fontsize=14,
                color=colours[(r // block) * 2 + c // block] if value else "lightgrey")
    ax.set(title=title, xticks=range(image.shape[1]), yticks=range(image.shape[0]))
    ax.set_xticks(np.arange(image.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(image.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="black", lw=0.6)
    if block == 2:                                          # thick lines between windows
        ax.axhline(1.5, color="black", lw=2.5)
        ax.axvline(1.5, color="black", lw=2.5)


fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), width_ratios=[1, 0.6, 1])
draw_numbers(axes[0], x, "input x (winners circled)")
draw_numbers(axes[1], dy, "upstream gradient dy")
draw_numbers(axes[2], dx, "dx = maxpool.backward(dy)")
for (i, j), (r, c) in zip(np.ndindex(2, 2), winners):
    axes[0].add_patch(plt.Circle((c, r), 0.38, fill=False, lw=2, color=colours[i * 2 + j]))
    fig.add_artist(ConnectionPatch((j + 0.3, i), (c - 0.3, r), "data", "data", axesA=axes[1],
                                   axesB=axes[2], arrowstyle="->", lw=1.5,
                                   color=colours[i * 2 + j]))
show(fig, "maxpool_routing")

# %% [markdown]
# ## Overlapping windows add up
#
# With `stride < kernel_size` windows overlap, and one input can win several of them. Each
# win sends it one more share of gradient, so the contributions **add** (`+=`), exactly as
# col2im added in tutorial 03. A 3×3 window with stride 1 over a map whose centre is largest:

# %%
peak = rng.random((1, 1, 5, 5)).astype(np.float32)
peak[0, 0, 2, 2] = 10                                       # wins all nine 3x3 windows
overlap = nn.MaxPool2d(3, stride=1)
out = overlap(peak)
dx_overlap = overlap.backward(np.ones_like(out))
print("outputs:", out.shape[2:], " gradient at the centre:", dx_overlap[0, 0, 2, 2])
assert dx_overlap[0, 0, 2, 2] == 9 and dx_overlap.sum() == 9

# %% [markdown]
# **Ties.** When several inputs share the maximum, the derivative is not defined; minicnn,
# like PyTorch, gives the whole gradient to the *first* one in row-major order.

# %%
ties = np.full((1, 1, 2, 2), 3.0, dtype=np.float32)
tied = nn.MaxPool2d(2)
tied(ties)
assert np.array_equal(tied.backward(np.ones((1, 1, 1, 1), np.float32))[0, 0], [[1, 0], [0, 0]])

# %% [markdown]
# ## Backward of average pooling: share equally
#
# `y = (x_1 + ... + x_k²) / k²` depends on every input with slope `1/k²`, so each input in the
# window receives `dy / k²`.

# %%
dx_avg = avgpool.backward(dy[None, None])[0, 0]
print("dx (average) =\n", dx_avg)
assert np.allclose(dx_avg, np.kron(dy, np.ones((2, 2))) / 4)

# %% [markdown]
# With padding, PyTorch's default (`count_include_pad=True`) divides by the full window even
# where part of it hangs over the zero padding; `count_include_pad=False` divides by the
# number of real pixels. Compare the corners of a picture of ones:

# %%
ones = np.ones((1, 1, 4, 4), dtype=np.float32)
include = nn.AvgPool2d(3, stride=1, padding=1)(ones)[0, 0]
exclude = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(ones)[0, 0]
print(f"corner: count_include_pad=True -> {include[0, 0]:.3f}, False -> {exclude[0, 0]:.3f}")
assert np.isclose(include[0, 0], 4 / 9) and np.allclose(exclude, 1)

# %% [markdown]
# ## On a real digit
#
# Max pooling keeps the strongest response in each 2×2 block (thick, bright strokes); average
# pooling blurs. Their gradients look very different: max pooling sends `dy = 1` to one pixel
# per block, average pooling spreads 1/4 everywhere. In the black background every 2×2 block
# is a four-way tie (all zeros), so the tie rule sends the gradient to each block's top-left
# pixel: the regular grid of dots around the digit.

# %%
digits = load_dataset("mnist", "test", limit=2).images.astype(np.float32) / 255
digit = digits[1:2]                                          # (1, 1, 28, 28): a "2"
rows = []
for name, layer in (("max", nn.MaxPool2d(2)), ("average", nn.AvgPool2d(2))):
    pooled = layer(digit)
    grad = layer.backward(np.ones_like(pooled))
    rows.append((name, pooled[0, 0], grad[0, 0]))
fig, axes = plt.subplots(2, 3, figsize=(11, 7.5), layout="constrained")
for row, (name, pooled, grad) in zip(axes, rows):
    row[0].imshow(digit[0, 0], cmap="gray")
    row[0].set(title="input 28x28")
    row[1].imshow(pooled, cmap="gray", vmin=0, vmax=1)
    row[1].set(title=f"{name} pooled 14x14")
    image = row[2].imshow(grad, cmap="magma", vmin=0, vmax=1)
    row[2].set(title=f"{name}: dx for dy = 1")
    for ax in row:
        ax.set(xticks=[], yticks=[])
fig.colorbar(image, ax=axes[:, 2], label="gradient reaching the pixel", shrink=0.8)
show(fig, "pooling_on_a_digit")
assert np.count_nonzero(rows[0][2]) == 14 * 14 and np.allclose(rows[1][2], 0.25)

# %% [markdown]
# ## Gradient check
#
# Both layers pass the float64 central-difference check (random inputs, so no ties).
# Global average pooling (`AdaptiveAvgPool2d(1)`, used at the end of ResNets) is just the mean
# over all pixels.

# %%
x_check = rng.standard_normal((2, 3, 7, 7))
for layer in (nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1),
              nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
              nn.AdaptiveAvgPool2d(1)):
    result = minicnn.gradcheck(layer, x_check)
    print(f"{layer!r:<70} max error {result.max_error:.1e}")
    assert result.max_error < 1e-6
assert np.allclose(nn.AdaptiveAvgPool2d(1)(x_check)[:, :, 0, 0], x_check.mean(axis=(2, 3)))

# %% [markdown]
# ## Exercise: write max pooling's backward pass
#
# Write `maxpool2d_backward(x, dy, kernel_size, stride)` returning `dx` (no padding). Loop
# over the output positions `(i, j)`; for each, find the winner of the window
# `x[:, :, i·s : i·s+k, j·s : j·s+k]` for every image and channel at once, and give it
# `dy[:, :, i, j]`. Three things the check (`check_maxpool2d_backward`) tries on purpose:
#
# - **overlapping windows** (3×3, stride 1): one input can win several windows, so use `+=`;
# - **ties**: the first maximum in row-major order wins (`argmax` of the window flattened to
#   `(N, C, k·k)` does exactly that; `np.divmod(index, k)` turns it into a row and column);
# - a `minicnn.gradcheck` of a layer whose backward is yours.
#
# Writing into `dx` at per-image, per-channel positions is fancy indexing: build index arrays
# with `np.meshgrid(np.arange(N), np.arange(C), indexing="ij")`, and add with `np.add.at`
# (plain `dx[idx] += v` adds only once when an index repeats). Or loop over n and c, if you
# prefer: slower, just as right. Solution: `solutions/05_pooling.py`.

# %%
@exercise("05_pooling")
def maxpool2d_backward(x, dy, kernel_size, stride):
    """Backward of max pooling with square windows and no padding.

    x (N, C, H, W), dy (N, C, H_out, W_out) -> dx (N, C, H, W): each dy[n, c, i, j] goes to
    the input that was the maximum of window (i, j) (the first one if several tie).
    """
    # YOUR CODE HERE: dx = zeros like x; for each (i, j): find the winners, add dy there.
    raise NotImplementedError("fill in maxpool2d_backward")


pool_backward = check_exercise("maxpool2d_backward", maxpool2d_backward,
                               check_maxpool2d_backward, reference=library_maxpool2d_backward)

# %% [markdown]
# Use it (yours, or the library's until yours passes) to answer a question: an 8×8 map of
# distinct values goes through `MaxPool2d(2)` and every output gets `dy = 1`. How many
# pixels receive a gradient? One per window, 16. With 3×3 windows at stride 1 the answer is
# not obvious any more: count it on a real digit, giving `dy = 1` to every window that sees
# some ink (the all-black windows are left out: they are nine-way ties of zeros). Bright
# stroke pixels win many overlapping windows each, and most pixels win none.

# %%
distinct = rng.permutation(64).reshape(1, 1, 8, 8).astype(np.float64)
assert np.count_nonzero(pool_backward(distinct, np.ones((1, 1, 4, 4)), 2, 2)) == 16
stroke = digits[1:2].astype(np.float64)                          # (1, 1, 28, 28)
pooled_3x3 = nn.MaxPool2d(3, stride=1)(stroke)                   # (1, 1, 26, 26)
touches_ink = (pooled_3x3 > 0).astype(np.float64)               # dy = 1 where a window sees ink
overlapping = pool_backward(stroke, touches_ink, 3, 1)
print(f"3x3/stride 1 on the digit: {int(touches_ink.sum())} windows see ink; they send their "
      f"gradient to only {np.count_nonzero(overlapping)} pixels; the busiest wins "
      f"{overlapping.max():.0f} of the 9 windows around it")
assert overlapping.sum() == touches_ink.sum() and overlapping.max() <= 9

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
axes[0].imshow(digits[1, 0], cmap="gray")
axes[0].set(title="input digit", xticks=[], yticks=[])
shown = axes[1].imshow(overlapping[0, 0], cmap="magma", vmin=0, vmax=9)
axes[1].set(title="MaxPool2d(3, stride=1) backward\n(dy = 1 for each window that sees ink)",
            xticks=[], yticks=[])
fig.colorbar(shown, ax=axes[1], shrink=0.8, label="number of windows won (0-9)")
show(fig, "overlapping_max_pool_gradient")
