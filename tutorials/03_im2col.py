# %% [markdown]
# # 03 · im2col: convolution as one matrix product
#
# The sliding-window loop of tutorial 02 is easy to read but slow: Python visits every output
# pixel. **im2col** ("image to columns") rearranges the input so that the whole convolution
# becomes *one* matrix multiplication, which a BLAS library runs at close to the CPU's peak.
# You will:
#
# - draw the unrolled matrix for a small input and see where each number comes from;
# - **write** im2col yourself, with stride and padding (the exercise), and have it checked;
# - compute a convolution as `W_matrix @ cols` and check it against minicnn's `Conv2d`;
# - see why **col2im**, the way back, must *add* (`+=`) and check that it is the adjoint;
# - time the explicit loops against im2col.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from minicnn import nn
from minicnn.kernels import threads
from minicnn.kernels.im2col import col2im, im2col
from exercise_checks import check_im2col, library_im2col
from tutorial_tools import FAST, check, check_exercise, exercise, show

rng = np.random.default_rng(0)
cores = threads.get_num_threads()["numba"]

# %% [markdown]
# ## The unrolled matrix
#
# Take a 4×4 image holding the numbers 0..15 and a 3×3 kernel (stride 1, no padding). There
# are 2×2 window positions. im2col copies each 3×3 window into one **column** of 9 numbers.
# The arguments are pairs `(along H, along W)`; padding is `(top, bottom, left, right)`.

# %%
x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)            # N=1, C=1, 4x4
cols, (out_h, out_w) = im2col(x, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0, 0, 0),
                              dilation=(1, 1))
print("cols:", cols.shape, " output positions:", (out_h, out_w))
print(cols.astype(int))
assert cols.shape == (9, 4)
for column, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    assert np.array_equal(cols[:, column], x[0, 0, i:i + 3, j:j + 3].ravel())

# %%
colours = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
fig, (ax_x, ax_c) = plt.subplots(1, 2, figsize=(10, 4.6), width_ratios=[1, 1.1])
ax_x.imshow(x[0, 0], cmap="Greys", vmin=0, vmax=40)
for (r, c), value in np.ndenumerate(x[0, 0]):
    ax_x.text(c, r, f"{value:g}", ha="center", va="center", fontsize=12)
for k, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    inset = 0.08 * (k + 1)
    ax_x.add_patch(plt.Rectangle((j - 0.5 + inset, i - 0.5 + inset), 3 - 2 * inset,
                                 3 - 2 * inset, fill=False, ec=colours[k], lw=2.5))
ax_x.set(title="input 4x4 and its four 3x3 windows", xlabel="column", ylabel="row",
         xticks=range(4), yticks=range(4))
ax_c.imshow(cols, cmap="Greys", vmin=0, vmax=40, aspect="auto")
for (r, c), value in np.ndenumerate(cols):
    ax_c.text(c, r, f"{value:g}", ha="center", va="center", fontsize=11, color=colours[c])
ax_c.set(title="cols = im2col(x): one column per window", xlabel="column = window (i, j)",
         ylabel="row = kernel tap (a, b)", xticks=range(4), yticks=range(9))
ax_c.set_xticklabels(["(0,0)", "(0,1)", "(1,0)", "(1,1)"])
ax_c.set_yticklabels([f"({a},{b})" for a in range(3) for b in range(3)])
show(fig, "im2col_matrix")

# %% [markdown]
# With `C` channels and a batch of `N` images the layout is
#
# - `cols` has shape `(C·kH·kW, N·H_out·W_out)`;
# - row `(c·kH + a)·kW + b` holds tap `(a, b)` of channel `c`: the same order as
#   `weight.reshape(C_out, -1)` flattens a filter;
# - column `(n·H_out + i)·W_out + j` is output pixel `(i, j)` of image `n`.
#
# ## Exercise: write im2col
#
# Write `im2col_windows(x, kernel_size, stride, padding)` with the library's conventions:
# `kernel_size = (kH, kW)`, `stride = (sH, sW)`, `padding = (top, bottom, left, right)`. It
# returns `cols` in the layout above, with `x`'s dtype, and `(H_out, W_out)`, where
# `H_out = (H + top + bottom - kH) // sH + 1` (and `W_out` likewise). Hints:
#
# - pad once: `np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))`;
# - loop over the kH·kW **taps** `(a, b)`, not over the windows: tap `(a, b)` of every window
#   of every image is one strided slice, `x_padded[:, :, a:a + sH*H_out:sH, b:b + sW*W_out:sW]`,
#   of shape `(N, C, H_out, W_out)`;
# - put each slice into an array of shape `(C, kH, kW, N, H_out, W_out)` (mind the order of
#   its axes: `(c, a, b)` make the row, `(n, i, j)` the column), then one `reshape` gives
#   `(C·kH·kW, N·H_out·W_out)`.
#
# `check_im2col` (in `exercise_checks.py`) compares your columns with minicnn's `im2col` on
# three cases: a 3×3 kernel on one image; a 2×3 kernel with strides `(1, 2)` and lopsided
# padding `(0, 1, 2, 0)` on two 3-channel images (swapped kH/kW, swapped strides or padding
# in the wrong order all show here); and a stride of 2 that does not divide the 8×7 image. It
# says which case is wrong and whether the size, the values (with the worst element) or the
# dtype is. Until yours passes, the tutorial carries on with the library's version. A worked
# solution is in `solutions/03_im2col.py`.

# %%
@exercise("03_im2col")
def im2col_windows(x, kernel_size, stride, padding):
    """Unroll every window of a batch into a column.

    x (N, C, H, W); kernel_size (kH, kW); stride (sH, sW); padding (top, bottom, left, right)
    -> cols (C*kH*kW, N*H_out*W_out) of x's dtype, and (H_out, W_out). Row (c*kH + a)*kW + b
    holds tap (a, b) of channel c; column (n*H_out + i)*W_out + j is window (i, j) of image n.
    """
    # YOUR CODE HERE: pad, compute H_out and W_out, fill cols tap by tap, reshape.
    raise NotImplementedError("fill in im2col_windows")


to_columns = check_exercise("im2col_windows", im2col_windows, check_im2col,
                            reference=library_im2col)

# %% [markdown]
# ## The convolution is one GEMM
#
# Each filter, flattened, is a row of length `C·kH·kW`; each window is a column of the same
# length. Their dot product is exactly the window sum of tutorial 02. So with
# `W_matrix = weight.reshape(C_out, -1)`:
#
# $$Y = W_{matrix}\; \text{cols} \quad\text{shape } (C_{out},\; N \cdot H_{out} \cdot W_{out})$$
#
# and a reshape and transpose turn `Y` back into NCHW.

# %%
n, c_in, c_out, size = 2, 3, 4, 6
x = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
conv = nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, backend="reference", rng=0)

cols, (out_h, out_w) = to_columns(x, (3, 3), (1, 1), (1, 1, 1, 1))     # yours, once it passes
w_matrix = conv.weight.data.reshape(c_out, -1)                       # (4, 27)
y_matrix = w_matrix @ cols                                           # (4, 2*6*6)
y = y_matrix.reshape(c_out, n, out_h, out_w).transpose(1, 0, 2, 3) + conv.bias.data[:, None, None]
print(f"W_matrix {w_matrix.shape} @ cols {cols.shape} = {y_matrix.shape} -> NCHW {y.shape}")
assert np.allclose(y, conv(x), atol=1e-5)

# %% [markdown]
# The price is memory: every pixel is copied into up to kH·kW columns.

# %%
print(f"input {x.nbytes} bytes, cols {cols.nbytes} bytes ({cols.nbytes / x.nbytes:.1f}x)")
assert cols.size == 9 * n * c_in * out_h * out_w

# %% [markdown]
# ## col2im, the way back, must add
#
# Backward needs the opposite move: the gradient arrives per *column* (`dcols = W_matrixᵀ dY`)
# and must be put back on the *pixels*. A pixel that was copied into several columns
# influenced the loss through every copy, so by the chain rule its gradient is the **sum** of
# the gradients of its copies. col2im therefore *adds* each column onto its window.
#
# Two small loops make the point: one adds (`+=`), one overwrites (`=`). Each loops over the
# columns of a single-image, single-channel, stride-1 input.

# %%
def col2im_loop(cols, size, k, add):
    out = np.zeros((size, size), dtype=cols.dtype)
    positions = size - k + 1
    for column in range(cols.shape[1]):
        i, j = divmod(column, positions)
        if add:
            out[i:i + k, j:j + k] += cols[:, column].reshape(k, k)
        else:
            out[i:i + k, j:j + k] = cols[:, column].reshape(k, k)
    return out


x = rng.standard_normal((1, 1, 6, 6))                                # float64 for exactness
geometry = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
cols, _ = im2col(x, *geometry)
g = rng.standard_normal(cols.shape)                                  # any "gradient" columns
library = col2im(g, x.shape, *geometry)
assert np.allclose(col2im_loop(g, 6, 3, add=True), library[0, 0])

# %% [markdown]
# The test that col2im is right is the **adjoint** (transpose) identity: for any `x` and any
# columns `g`, $\langle \text{im2col}(x), g\rangle = \langle x, \text{col2im}(g)\rangle$.
# (im2col is a linear map, a big 0/1 matrix `M`; col2im must be `Mᵀ`.) The adding version
# passes; the overwriting one does not.

# %%
lhs = np.sum(cols * g)
rhs_add = np.sum(x[0, 0] * col2im_loop(g, 6, 3, add=True))
rhs_overwrite = np.sum(x[0, 0] * col2im_loop(g, 6, 3, add=False))
print(f"<im2col(x), g> = {lhs:.6f}   <x, col2im(g)> = {np.sum(x * library):.6f}")
print(f"with += : {rhs_add:.6f}    with = : {rhs_overwrite:.6f}")
assert np.isclose(lhs, np.sum(x * library)) and np.isclose(lhs, rhs_add)
assert not np.isclose(lhs, rhs_overwrite)

# %% [markdown]
# `col2im(im2col(x))` is therefore *not* `x`: each pixel comes back multiplied by the number
# of windows that cover it. Feeding a picture of ones through both shows those counts.

# %%
ones = np.ones((1, 1, 6, 6))
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
for ax, (stride, pad) in zip(axes, [(1, 0), (2, 1)]):
    geometry = ((3, 3), (stride, stride), (pad,) * 4, (1, 1))
    copies = im2col(ones, *geometry)[0]                 # a 1 for every copy of a real pixel
    coverage = col2im(copies, ones.shape, *geometry)[0, 0]
    assert coverage.sum() == copies.sum()             # every copy lands back on its pixel
    image = ax.imshow(coverage, cmap="viridis", vmin=0, vmax=9)
    for (r, c), value in np.ndenumerate(coverage):
        ax.text(c, r, f"{value:g}", ha="center", va="center", fontsize=11,
                color="black" if value > 6 else "white")
    ax.set(title=f"3x3 windows, stride {stride}, padding {pad}", xlabel="column", ylabel="row")
fig.colorbar(image, ax=axes, label="windows covering the pixel")
fig.suptitle("col2im(im2col(ones)): how many copies of each pixel")
show(fig, "col2im_coverage")

# %% [markdown]
# ## How much faster?
#
# Same layer, same numbers, three backends: the explicit loops (`reference`), im2col + one
# GEMM (`im2col`) and minicnn's compiled kernels (`numba`, the default). All three run on one
# thread here, and we keep the fastest of several runs after a warm-up call (Numba compiles or
# loads its kernels then).
# Exact times depend on the machine and on what else it is doing. The reference loop is not
# as slow as it could be: it visits each output pixel in Python but handles the whole batch and
# all channels there with one small `tensordot`; the pure scalar loop of tutorial 02 would be
# hundreds of times slower still.
#
# `numba` and `im2col` both spend most of their time in the same kind of GEMM, so on one
# thread their times are of the same order, and which of the two is ahead depends on the
# machine and the layer (`numba` works on a few images at a time while they are in cache,
# `im2col` unrolls the whole batch into one big matrix first): the printout says which won
# here. Where they really part is on several cores, which tutorial 09 measures and explains.
# (The first call of a `numba` layer compiles its kernels, up to a minute on a busy machine;
# they are cached on disk, so that happens once. The warm-up call below absorbs it.)

# %%
batch = 8 if FAST else 32
x = rng.standard_normal((batch, 16, 28, 28)).astype(np.float32)
layers = {backend: nn.Conv2d(16, 32, 3, padding=1, backend=backend, rng=0)
          for backend in ("reference", "im2col", "numba")}
threads.set_num_threads(1)          # compare algorithms, not thread pools (see tutorial 09)
runs = {backend: [] for backend in layers}
for layer in layers.values():
    layer(x)                                                           # warm-up
for _ in range(5 if FAST else 10):
    for backend, layer in layers.items():                              # take turns, so a busy
        start = time.perf_counter()                                    # moment hits all three
        layer(x)
        runs[backend].append(time.perf_counter() - start)
threads.set_num_threads(cores)
timings = {backend: min(times) for backend, times in runs.items()}
for backend, seconds in timings.items():
    print(f"{backend:>9}: {seconds * 1e3:7.2f} ms")
assert timings["im2col"] < timings["reference"]
ahead, behind = sorted(("im2col", "numba"), key=timings.get)
print(f"on one thread here, {ahead} is {timings[behind] / timings[ahead]:.2f}x as fast as "
      f"{behind}")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.barh(list(timings), [t * 1e3 for t in timings.values()],
        color=["grey", "tab:blue", "tab:green"])
ax.set(xlabel="forward time (ms), fastest of several runs",
       title=f"Conv2d(16, 32, 3, padding=1) on a ({batch}, 16, 28, 28) batch, one thread")
for index, t in enumerate(timings.values()):
    ax.text(t * 1e3, index, f"  {t * 1e3:.1f} ms ({timings['reference'] / t:.1f}x faster "
            "than reference)" if t < timings["reference"] else f"  {t * 1e3:.1f} ms", va="center")
ax.set_xlim(right=max(timings.values()) * 1e3 * 1.6)
show(fig, "backend_timing")

# %% [markdown]
# ## Exercise
#
# A batch of 2 RGB images of 8×8 goes through a 3×3 convolution with stride 2 and padding 1.
# What shape does `cols` have? (Rows: channels × taps. Columns: images × output pixels.)

# %%
# Your answer here (the worked answer is filled in; try changing it)
cols_shape = (3 * 3 * 3, 2 * 4 * 4)

actual = im2col(np.zeros((2, 3, 8, 8), np.float32), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))[0]
check("shape of cols", cols_shape, actual.shape)
