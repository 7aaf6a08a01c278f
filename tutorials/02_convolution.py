# %% [markdown]
# # 02 · Convolution by hand
#
# A convolution layer slides a small grid of weights (the **kernel**) over the image and, at
# every position, multiplies the numbers under it with the weights and adds them up. You will:
#
# - write that sliding window as a six-line loop and check it against minicnn's `Conv2d`;
# - see how several input channels and several filters combine;
# - learn why deep learning's "convolution" is really **cross-correlation** (no kernel flip);
# - work out the output size from **stride**, **padding** and **dilation**, and see where the
#   windows land;
# - **write** the batched, strided forward pass yourself (the exercise) and have it checked;
# - see why convolutions suit images: **translation equivariance** (shift the image, the
#   feature map shifts with it) and **receptive fields** (how much of the image one output
#   pixel sees, growing layer by layer).
#
# The first call to a layer on the default `numba` backend compiles its kernels: up to a
# minute on a busy machine, once. They are cached on disk, so later runs start at once.

# %%
import matplotlib.pyplot as plt
import numpy as np

from minicnn import nn
from minicnn.data import load_dataset
from minicnn.kernels import reference
from minicnn.kernels.geometry import output_size
from exercise_checks import check_conv2d_forward, library_conv2d_forward
from tutorial_tools import FAST, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## The sliding window, one channel
#
# For an image `x` (H×W) and a kernel `k` (kH×kW), output pixel `(i, j)` is
#
# $$y[i, j] = \sum_{a=0}^{kH-1} \sum_{b=0}^{kW-1} k[a, b]\; x[i + a,\; j + b]$$
#
# The window starts at the top-left corner and stops where it would leave the image, so the
# output is `(H - kH + 1) × (W - kW + 1)`.

# %%
def conv_one_channel(x, k):
    """Slide k over x: at each position multiply and sum (no padding, stride 1)."""
    out = np.zeros((x.shape[0] - k.shape[0] + 1, x.shape[1] - k.shape[1] + 1), dtype=x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(x[i:i + k.shape[0], j:j + k.shape[1]] * k)
    return out


# %% [markdown]
# Try it on a real digit with two classic **Sobel** kernels, which respond to left-to-right
# and top-to-bottom changes of brightness (edges). Then ask minicnn for the same thing: a
# `Conv2d` with one input channel, two output channels (one per kernel) and no bias. Its
# `weight` has PyTorch's shape `(out_channels, in_channels, kH, kW)`. The `"reference"`
# backend is the explicit-loop implementation, written to be read.

# %%
digit = load_dataset("mnist", "test", limit=1).images[0, 0].astype(np.float32) / 255
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
sobel_y = sobel_x.T.copy()

mine = np.stack([conv_one_channel(digit, sobel_x), conv_one_channel(digit, sobel_y)])

conv = nn.Conv2d(1, 2, kernel_size=3, bias=False, backend="reference")
conv.weight.data[:] = np.stack([sobel_x, sobel_y])[:, None]          # (2, 1, 3, 3)
library = conv(digit[None, None])                                    # input (1, 1, 28, 28)
print("my output:", mine.shape, " library output:", library.shape)
assert library.shape == (1, 2, 26, 26)
assert np.allclose(mine, library[0], atol=1e-5)

fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
axes[0].imshow(digit, cmap="gray")
axes[0].set(title="input digit (28x28)")
names = ("sobel_x: vertical edges", "sobel_y: horizontal edges")
for ax, edges, name in zip(axes[1:], mine, names):
    limit = np.abs(edges).max()
    image = ax.imshow(edges, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set(title=f"{name} (26x26)")
    fig.colorbar(image, ax=ax, fraction=0.046, label="filter response")
for ax in axes:
    ax.set(xlabel="column", ylabel="row")
show(fig, "sobel_edges")

# %% [markdown]
# ## Many channels in, many filters out
#
# With `C_in` input channels, each filter has one kH×kW slice *per input channel*; the
# filter's output is the sum of the per-channel window sums, plus one bias:
#
# $$y[c_o] = b[c_o] + \sum_{c_i} \text{conv}(x[c_i],\, w[c_o, c_i])$$
#
# Check that with the one-channel function from above.

# %%
x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)            # one 3-channel image
layer = nn.Conv2d(3, 4, kernel_size=3, backend="reference", rng=0)  # 4 filters of 3x3x3
y = layer(x)
for co in range(4):
    by_hand = sum(conv_one_channel(x[0, ci], layer.weight.data[co, ci]) for ci in range(3))
    assert np.allclose(by_hand + layer.bias.data[co], y[0, co], atol=1e-5)
print("weight", layer.weight.shape, "bias", layer.bias.shape, "->", y.shape, "matches by hand")

# %% [markdown]
# The layer hands the arithmetic to a *kernel backend*: plain functions in
# `minicnn/kernels/`. The reference one, `minicnn.kernels.reference.conv2d_forward`, loops
# over output positions exactly like `conv_one_channel` (and does the batch and all channels
# at once in each step). Open the file and read it; you can also call it directly.
# Arguments are pairs `(along H, along W)`, padding is `(top, bottom, left, right)`.

# %%
y_kernel, _ = reference.conv2d_forward(x, layer.weight.data, layer.bias.data, stride=(1, 1),
                                       padding=(0, 0, 0, 0), dilation=(1, 1), groups=1)
assert np.array_equal(y_kernel, y)

# %% [markdown]
# ## Exercise: write the forward pass
#
# Now the whole layer: a batch of `N` images with `C` channels, `O` filters, a bias per
# filter, **stride** and zero **padding** (both the same along H and W; the formulas are in
# the next section). Fill in `conv2d_forward_loop` below. Hints:
#
# - pad once with `np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))`;
# - output `(i, j)` reads the window starting at row `i * stride`, column `j * stride`;
# - one window `(N, C, kH, kW)` against all filters `(O, C, kH, kW)` is one
#   `np.einsum("nchw,ochw->no", window, weight)` (or `np.tensordot` over three axes); loop
#   only over the output positions.
#
# `check_conv2d_forward` (in `exercise_checks.py`) runs your function on three cases (stride
# 1; stride 2 with padding; a 2×3 kernel on a 6×5 image) and compares with `Conv2d`: it says
# which case is wrong and whether the *shape* or the *values* are (with the index of the
# worst element). Until your version passes, the tutorial carries on with the library's
# (`MINICNN_TUTORIAL_STRICT=1` makes a wrong answer stop it instead). A worked solution is in
# `solutions/02_convolution.py`; try without it first.

# %%
@exercise("02_convolution")
def conv2d_forward_loop(x, weight, bias, stride=1, padding=0):
    """Cross-correlate a batch with a bank of filters.

    x (N, C, H, W), weight (O, C, kH, kW), bias (O,) -> y (N, O, H_out, W_out), with
    H_out = (H + 2 * padding - kH) // stride + 1 (and W_out likewise).
    """
    # YOUR CODE HERE: pad x, allocate y, loop over the output positions (i, j).
    raise NotImplementedError("fill in conv2d_forward_loop")


conv2d_forward = check_exercise("conv2d_forward_loop", conv2d_forward_loop,
                                check_conv2d_forward, reference=library_conv2d_forward)

# %% [markdown]
# ## Cross-correlation, not convolution
#
# In mathematics, *convolution* flips the kernel before sliding it:
# $(x * k)[i, j] = \sum_{a,b} k[a, b]\, x[i - a, j - b]$. What we wrote above (and what every
# deep-learning library computes) uses `x[i + a, j + b]`: no flip. That is
# **cross-correlation**. NumPy's 1-D functions show the difference:

# %%
signal, kern = np.array([0, 0, 1, 0, 0.0]), np.array([1, 2, 3.0])
print("np.correlate:", np.correlate(signal, kern, "same"),
      " np.convolve:", np.convolve(signal, kern, "same"))
assert np.allclose(np.convolve(signal, kern, "same"), np.correlate(signal, kern[::-1], "same"))

# %% [markdown]
# In 2-D the cleanest test is an **impulse**: an image that is zero except for a single 1.
# Cross-correlating it draws the kernel *rotated by 180°* around the 1; a true convolution
# (the same layer with the kernel flipped along both axes) draws it the right way round.
# For a network the difference does not matter: the weights are learned, and the flipped
# kernel is learned just as easily.

# %%
kernel = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
impulse = np.zeros((1, 1, 7, 7), dtype=np.float32)
impulse[0, 0, 3, 3] = 1
corr = nn.Conv2d(1, 1, 3, padding=1, bias=False, backend="reference")
corr.weight.data[0, 0] = kernel
cross_correlation = corr(impulse)[0, 0]
corr.weight.data[0, 0] = kernel[::-1, ::-1]                          # flip both axes
convolution = corr(impulse)[0, 0]
assert np.array_equal(cross_correlation[2:5, 2:5], kernel[::-1, ::-1])
assert np.array_equal(convolution[2:5, 2:5], kernel)

fig, axes = plt.subplots(1, 4, figsize=(13, 3.5))
panels = [(kernel, "kernel k"), (impulse[0, 0], "input: an impulse"),
          (cross_correlation, "Conv2d (cross-correlation)"), (convolution, "true convolution")]
for ax, (image, title) in zip(axes, panels):
    ax.imshow(image, cmap="viridis", vmin=0, vmax=9)
    for (r, c), value in np.ndenumerate(image):
        ax.text(c, r, f"{value:g}", ha="center", va="center", fontsize=9,
                color="black" if value > 5 else "white")
    ax.set(title=title, xticks=[], yticks=[])
show(fig, "cross_correlation")

# %% [markdown]
# A related fact, used by the test suite: a kernel that is a single 1 **shifts** the image.
# With a 1 in the top-left corner and padding 1, output `(i, j)` reads input `(i-1, j-1)`.

# %%
corr.weight.data[0, 0] = 0
corr.weight.data[0, 0, 0, 0] = 1
image = rng.standard_normal((1, 1, 7, 7)).astype(np.float32)
shifted = corr(image)
assert np.array_equal(shifted[0, 0, 1:, 1:], image[0, 0, :-1, :-1])

# %% [markdown]
# ## Stride, padding, dilation
#
# - **padding** `p` adds `p` rows/columns of zeros around the image, so windows can centre
#   on border pixels (3×3 with `padding=1` keeps the size);
# - **stride** `s` moves the window `s` pixels at a time (the output shrinks about `s` times);
# - **dilation** `d` spreads the kernel's taps `d` pixels apart: a 3×3 kernel with `d=2`
#   covers 5×5 pixels with only 9 weights.
#
# Along each axis the number of window positions is
#
# $$H_{out} = \left\lfloor \frac{H + 2p - d\,(k - 1) - 1}{s} \right\rfloor + 1$$
#
# which is `minicnn.kernels.geometry.output_size(H, k, s, p_before, p_after, d)`. Check it
# against the shapes the layer really produces.

# %%
print(f"{'H':>3} {'k':>2} {'s':>2} {'p':>2} {'d':>2} -> H_out")
for h, k, s, p, d in [(28, 3, 1, 0, 1), (28, 3, 1, 1, 1), (28, 5, 2, 2, 1), (7, 3, 2, 1, 1),
                      (7, 3, 1, 0, 2), (10, 4, 3, 0, 1), (32, 3, 2, 1, 2)]:
    expected = (h + 2 * p - d * (k - 1) - 1) // s + 1
    layer = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d, backend="reference")
    got = layer(np.zeros((1, 1, h, h), dtype=np.float32)).shape[2]
    assert got == expected == output_size(h, k, s, p, p, d)
    print(f"{h:>3} {k:>2} {s:>2} {p:>2} {d:>2} -> {got}")

# padding="same" keeps the size (stride 1), even for an even kernel or with dilation.
for k, d in [(3, 1), (4, 1), (3, 3)]:
    same = nn.Conv2d(1, 1, k, padding="same", dilation=d)(np.zeros((1, 1, 9, 9), np.float32))
    assert same.shape[2:] == (9, 9)

# %% [markdown]
# Where do the windows land? Each panel below is a 7×7 input (white) with its zero padding
# (grey). A dot marks the top-left tap of every window position, and the coloured cells are
# the taps that one output pixel, `(1, 1)`, reads.

# %%
def draw_windows(ax, size, k, s, p, d, title):
    padded = size + 2 * p
    ax.imshow(np.pad(np.ones((size, size)), p), cmap="Greys_r", vmin=-1, vmax=1.2)
    n_out = output_size(size, k, s, p, p, d)
    starts = np.arange(n_out) * s                     # window starts, padded coordinates
    rows, cols = np.meshgrid(starts, starts, indexing="ij")
    ax.plot(cols.ravel(), rows.ravel(), "o", color="tab:blue", ms=5, label="window starts")
    taps = 1 * s + np.arange(k) * d                   # output (1, 1): rows and columns read
    for r in taps:
        for c in taps:
            ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, color="tab:orange", alpha=0.7))
    ax.set(title=f"{title}\noutput {n_out}x{n_out}", xticks=range(padded), yticks=range(padded))
    ax.set_xticks(np.arange(padded + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(padded + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="black", lw=0.5)
    ax.tick_params(labelsize=7)
    return n_out


fig, axes = plt.subplots(1, 3, figsize=(13, 4.8))
settings = [(3, 1, 0, 1, "k=3, stride 1, padding 0"), (3, 2, 1, 1, "k=3, stride 2, padding 1"),
            (3, 1, 0, 2, "k=3, dilation 2, padding 0")]
for ax, (k, s, p, d, title) in zip(axes, settings):
    n_out = draw_windows(ax, 7, k, s, p, d, title)
    assert n_out == nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(
        np.zeros((1, 1, 7, 7), np.float32)).shape[-1]
handles = [axes[0].lines[0], plt.Rectangle((0, 0), 1, 1, color="tab:orange", alpha=0.7),
           plt.Rectangle((0, 0), 1, 1, color="grey")]
fig.legend(handles, ["top-left tap of each window", "taps read by output (1, 1)",
                     "zero padding"], loc="lower center", ncol=3, bbox_to_anchor=(0.5, 0.02))
for ax in axes:
    ax.set(xlabel="column (padded)", ylabel="row (padded)")
show(fig, "window_positions")


# %% [markdown]
# ## Why convolutions suit images (1): translation equivariance
#
# A convolution applies the *same* weights at every position. So if the image moves, the
# feature map moves with it, by the same amount: "shift, then convolve" equals "convolve,
# then shift". That is **translation equivariance**, and it is why one filter can find an
# edge (or, deeper in a network, an eye or a wheel) wherever it is: the network does not have
# to learn the same detector separately for every position, as a fully connected layer must.
#
# Check it with `conv2d_forward` (yours if you filled in the exercise above, the library's
# otherwise) on the digit, shifted 3 rows up and 2 columns right. The digit's border is
# black there, so the shift loses nothing.

# %%
def shift(image, rows, cols):
    """Move the last two axes by `rows` (down if positive) and `cols` (right if positive).

    np.roll wraps around; that is a plain shift here because the rows and columns that wrap
    are all zero (checked)."""
    moved = np.roll(image, (rows, cols), axis=(-2, -1))
    wrapped = np.roll(np.ones(image.shape[-2:], bool), (rows, cols), axis=(0, 1)) ^ \
        np.pad(np.ones((image.shape[-2] - abs(rows), image.shape[-1] - abs(cols)), bool),
               ((max(rows, 0), max(-rows, 0)), (max(cols, 0), max(-cols, 0))))
    assert not moved[..., wrapped].any(), "the shift would wrap non-zero pixels around"
    return moved


sobel_bank = np.stack([sobel_x, sobel_y])[:, None]                   # (2, 1, 3, 3)
no_bias = np.zeros(2, dtype=np.float32)
image = digit[None, None]                                            # (1, 1, 28, 28)
maps = conv2d_forward(image, sobel_bank, no_bias, stride=1, padding=1)
maps_of_shifted = conv2d_forward(shift(image, -3, 2), sobel_bank, no_bias, stride=1, padding=1)
assert np.allclose(maps_of_shifted, shift(maps, -3, 2), atol=1e-5)    # equivariant
print("conv(shift(x)) == shift(conv(x)): the feature map moved with the digit")

# A stride-2 convolution is equivariant only to shifts by a multiple of 2: a 1-pixel shift
# of the input would be a half-pixel shift of the output, which does not exist.
strided = lambda x: conv2d_forward(x, sobel_bank, no_bias, stride=2, padding=1)  # noqa: E731
assert np.allclose(strided(shift(image, -2, 2)), shift(strided(image), -1, 1), atol=1e-5)
one_pixel = strided(shift(image, -1, 1))
assert not any(np.allclose(one_pixel, shift(strided(image), rows, cols), atol=1e-2)
               for rows in (-1, 0) for cols in (0, 1))      # no whole-pixel shift matches

fig, axes = plt.subplots(2, 3, figsize=(11, 7.2), layout="constrained")
limit = np.abs(maps[0, 0]).max()
panels = [(image[0, 0], "digit", "gray", None),
          (maps[0, 0], "sobel_x response", "RdBu_r", limit),
          (shift(maps, -3, 2)[0, 0], "response, then shifted", "RdBu_r", limit),
          (shift(image, -3, 2)[0, 0], "digit shifted 3 up, 2 right", "gray", None),
          (maps_of_shifted[0, 0], "response of the shifted digit", "RdBu_r", limit),
          (maps_of_shifted[0, 0] - shift(maps, -3, 2)[0, 0], "difference of the two",
           "RdBu_r", limit)]
for ax, (picture, title, cmap, lim) in zip(axes.ravel(), panels):
    shown = ax.imshow(picture, cmap=cmap, vmin=-lim if lim else None, vmax=lim)
    ax.set(title=title, xticks=[], yticks=[])
fig.colorbar(shown, ax=axes[:, 2], shrink=0.6, label="filter response (same scale)")
fig.suptitle("Shift then convolve = convolve then shift (the difference is exactly 0)")
show(fig, "translation_equivariance")

# %% [markdown]
# ## Why convolutions suit images (2): locality and receptive fields
#
# Each output pixel of a 3×3 convolution depends on a 3×3 patch of its input: pixels far
# apart rarely matter to each other in the first layers of vision, so a layer need not
# connect them (a 3×3 filter has 9 weights per channel pair; a fully connected layer from a
# 28×28 image to a 28×28 map would have 614,656). Depth recovers the big picture: the output
# of a *second* 3×3 layer depends on a 5×5 patch of the image, a third on 7×7. The patch of
# input an output pixel depends on is its **receptive field**. Layer by layer, with kernel
# $k_l$ and stride $s_l$,
#
# $$r_l = r_{l-1} + (k_l - 1)\, j_{l-1}, \qquad j_l = j_{l-1}\, s_l, \qquad r_0 = j_0 = 1,$$
#
# where $j$ is the *jump*: how many input pixels apart neighbouring outputs of layer $l$
# are. Strides (and pooling) multiply the jump, so every later layer grows the field faster.
#
# We can also *measure* it with backward: put a gradient of 1 on one output pixel and see
# which input pixels receive anything. (Positive weights and average pooling, so nothing
# cancels; max pooling would route to one pixel per window.) Here for LeNet-5's geometry:
# conv 5×5 (padding 2), pool 2, conv 5×5, pool 2.

# %%
def receptive_fields(layers):
    """[(name, r, j)] after each (name, kernel, stride) of a stack, by the formula above."""
    r, j, rows = 1, 1, []
    for name, k, s in layers:
        r, j = r + (k - 1) * j, j * s
        rows.append((name, r, j))
    return rows


lenet_geometry = [("conv1 5x5", 5, 1), ("pool1 2x2", 2, 2), ("conv2 5x5", 5, 1),
                  ("pool2 2x2", 2, 2)]
paddings = (2, 0, 0, 0)
probe_layers = []
for (name, k, s), padding in zip(lenet_geometry, paddings):
    if name.startswith("conv"):
        layer = nn.Conv2d(1, 1, k, padding=padding, bias=False, dtype=np.float64)
        layer.weight.data[:] = 1.0
    else:
        layer = nn.AvgPool2d(k, stride=s)
    probe_layers.append(layer)

# Which output pixel to probe in each layer: the centre one of the last layer, and going
# back, a pixel in the middle of what that one reads. A pixel feeding another sees a part of
# what the other sees, so the four fields nest (as they do inside a real network).
pixel = [0] * len(lenet_geometry)
pixel[-1] = nn.Sequential(*probe_layers)(np.ones((1, 1, 28, 28))).shape[2] // 2
for index in range(len(lenet_geometry) - 1, 0, -1):
    _, k, s = lenet_geometry[index]
    pixel[index - 1] = pixel[index] * s - paddings[index] + (k - 1) // 2

measured = []                                        # (top-left corner, extent) per layer
for depth in range(1, len(probe_layers) + 1):
    stack = nn.Sequential(*probe_layers[:depth])
    out = stack(np.ones((1, 1, 28, 28)))
    upstream = np.zeros_like(out)
    upstream[0, 0, pixel[depth - 1], pixel[depth - 1]] = 1.0        # one output pixel
    reached = np.argwhere(stack.backward(upstream)[0, 0] != 0)
    measured.append((reached.min(axis=0), reached.max(axis=0) - reached.min(axis=0) + 1))

print(f"{'after':<10} {'r (formula)':>11} {'measured':>9} {'jump':>5}")
for (name, r, j), (_, extent) in zip(receptive_fields(lenet_geometry), measured):
    print(f"{name:<10} {r:>11} {extent[0]:>9} {j:>5}")
    assert extent[0] == extent[1] == r

fig, ax = plt.subplots(figsize=(5.4, 5.6))
ax.imshow(digit, cmap="gray")
colours = ("tab:red", "tab:blue", "tab:green", "tab:orange")          # largest field first
rows = list(zip(receptive_fields(lenet_geometry), measured))[::-1]
for ((name, r, _), (corner, _)), colour in zip(rows, colours):
    ax.add_patch(plt.Rectangle((corner[1] - 0.5, corner[0] - 0.5), r, r, color=colour,
                               alpha=0.25, lw=0))
    ax.add_patch(plt.Rectangle((corner[1] - 0.5, corner[0] - 0.5), r, r, fill=False, lw=2.2,
                               color=colour, label=f"after {name}: {r}x{r} pixels"))
ax.set(title="What one output pixel sees, layer by layer\n(LeNet-5 geometry on a 28x28 digit)",
       xlabel="column", ylabel="row")
handles, labels = ax.get_legend_handles_labels()
ax.legend(handles[::-1], labels[::-1], loc="upper center", bbox_to_anchor=(0.5, -0.12),
          ncol=2, fontsize=9)
show(fig, "receptive_fields")

# %% [markdown]
# After LeNet-5's two conv/pool blocks one feature sees a 16×16 patch: more than half the
# digit, enough for the fully connected layers to combine strokes into digits. Deeper
# networks (tutorial 13) stack many small 3×3 layers for the same reason: two 3×3 layers see
# 5×5 with 18 weights instead of 25, and three see 7×7 with 27 instead of 49.
