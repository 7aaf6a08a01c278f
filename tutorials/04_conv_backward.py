# %% [markdown]
# # 04 · The backward pass of a convolution
#
# Training needs, for every weight, how much the loss changes when that weight changes. The
# loss's gradient arrives at a layer's output as `dy = ∂L/∂y` (same shape as `y`); the layer's
# `backward(dy)` must produce `dW`, `db` and `dx = ∂L/∂x` (which it passes on to the layer
# before). You will:
#
# - derive `db`, `dW` and `dx` for a convolution from its forward formula;
# - check each one against minicnn's `Conv2d.backward`, and see that two of them are
#   themselves convolutions;
# - see what changes with **stride > 1** (the gradient `dy` gets *dilated*: zeros between
#   its entries);
# - check gradients numerically with `minicnn.gradcheck`, read its **relative error**, and
#   see why gradient checks run in float64 and what tolerance to expect in float32;
# - **write** the whole backward pass yourself, strides and padding included (the exercise),
#   and have it checked against the library and against `gradcheck`.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minicnn
from minicnn import nn
from minicnn.kernels.im2col import col2im, im2col
from exercise_checks import check_conv2d_backward, library_conv2d_backward
from tutorial_tools import FAST, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## The forward formula, and what each weight touches
#
# Stride 1, no padding, image `n`:
#
# $$y[n, o, i, j] = b[o] + \sum_{c, u, v} w[o, c, u, v]\; x[n, c, i + u, j + v]$$
#
# The chain rule says: the gradient of a quantity is the sum, over every output it
# influenced, of `dy` times the derivative of that output with respect to it.
#
# - `b[o]` is added to every output pixel of channel `o` with factor 1:
#   $\;db[o] = \sum_{n,i,j} dy[n, o, i, j]$.
# - `w[o, c, u, v]` multiplies `x[n, c, i+u, j+v]` in output `(n, o, i, j)`:
#   $\;dW[o, c, u, v] = \sum_{n,i,j} dy[n, o, i, j]\; x[n, c, i+u, j+v]$.
# - `x[n, c, p, q]` is read by every window that covers it, with weight `w[o, c, p-i, q-j]`:
#   $\;dx[n, c, p, q] = \sum_{o,i,j} dy[n, o, i, j]\; w[o, c, p-i, q-j]$.
#
# Let the layer compute its gradients first (in float64, so comparisons are exact to ~15
# digits). `backward` *accumulates* into `param.grad`, so start from zero.

# %%
x = rng.standard_normal((2, 3, 7, 7))                                  # float64
conv = nn.Conv2d(3, 4, kernel_size=3, backend="reference", rng=0, dtype=np.float64)
y = conv(x)
dy = rng.standard_normal(y.shape)                                      # any upstream gradient
conv.zero_grad()
dx = conv.backward(dy)
print("x", x.shape, "-> y", y.shape, "| dx", dx.shape, "dW", conv.weight.grad.shape,
      "db", conv.bias.grad.shape)

# %% [markdown]
# **db**: sum `dy` over the batch and over the pixels.

# %%
assert np.allclose(conv.bias.grad, dy.sum(axis=(0, 2, 3)))

# %% [markdown]
# **dW**: for each kernel tap `(u, v)`, pair `dy` with the input shifted by `(u, v)` and sum
# over batch and pixels. A short loop over the 9 taps:

# %%
out_h, out_w = y.shape[2:]
dw_by_hand = np.zeros_like(conv.weight.data)
for u in range(3):
    for v in range(3):
        shifted = x[:, :, u:u + out_h, v:v + out_w]                     # (N, C, Ho, Wo)
        dw_by_hand[:, :, u, v] = np.einsum("nohw,nchw->oc", dy, shifted)
assert np.allclose(conv.weight.grad, dw_by_hand)

# %% [markdown]
# Look again at the dW formula: it is a *cross-correlation of the input with `dy`* — the
# same operation as the forward pass, with `dy` playing the kernel and the batch axis playing
# the channels. So minicnn's own `Conv2d` computes it, once the axes are swapped:

# %%
as_conv = nn.Conv2d(2, 4, kernel_size=out_h, bias=False, dtype=np.float64)   # N=2 "channels"
as_conv.weight.data[:] = dy.transpose(1, 0, 2, 3)                  # (o, n, Ho, Wo)
dw_as_conv = as_conv(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)   # (c, o, 3, 3) -> (o, c, ..)
assert np.allclose(conv.weight.grad, dw_as_conv)

# %% [markdown]
# **dx**: the formula reads `w[o, c, p-i, q-j]`: as the output position `i` grows, the
# kernel index `p-i` *falls*. In tutorial 02's words, that is a **true convolution** of `dy`
# with `w` (the kernel is flipped), not the cross-correlation the forward pass computes.
# Padding `dy` with `k-1` zeros on each side lets every input pixel collect from every window
# that covered it (a "full" convolution), and the input and output channels swap roles.
# `Conv2d` only cross-correlates, so to compute it with a `Conv2d` we hand it the kernel
# flipped along both axes (this is also what a *transposed convolution* computes):

# %%
back = nn.Conv2d(4, 3, kernel_size=3, padding=2, bias=False, dtype=np.float64)
back.weight.data[:] = conv.weight.data.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
assert np.allclose(dx, back(dy))
print("db, dW and dx by hand all match Conv2d.backward")

# %% [markdown]
# In the im2col picture of tutorial 03 the same three results are two matrix products and a
# col2im: `dW = dY_matrix @ colsᵀ` and `dx = col2im(W_matrixᵀ @ dY_matrix)`.

# %%
geometry = ((3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
cols, _ = im2col(x, *geometry)
dy_matrix = dy.transpose(1, 0, 2, 3).reshape(4, -1)                  # (C_out, N*Ho*Wo)
w_matrix = conv.weight.data.reshape(4, -1)                           # (C_out, C*3*3)
assert np.allclose(conv.weight.grad, (dy_matrix @ cols.T).reshape(conv.weight.shape))
assert np.allclose(dx, col2im(w_matrix.T @ dy_matrix, x.shape, *geometry))

# %% [markdown]
# ## Stride > 1: dilate `dy`
#
# With stride `s` output `(i, j)` reads the window starting at `(s·i, s·j)`, so in the three
# formulas `x[n, c, i+u, j+v]` becomes `x[n, c, s·i+u, s·j+v]`. For `dx`: each input pixel
# still collects `dy · w` from every window that covered it, but the windows now start `s`
# pixels apart. Spread `dy` out accordingly, putting `s - 1` zeros between neighbouring
# entries (**dilating** it), and the stride-1 recipe above applies unchanged: a full true
# convolution of the dilated `dy` with `w`.
#
# One detail: when `(H + 2p - k)` is not a multiple of `s`, the last rows (or columns) of the
# input are read by no window. Their gradient is zero, and the full convolution comes out
# that many rows short: pad it with zeros at the end.

# %%
strided = nn.Conv2d(3, 4, kernel_size=3, stride=2, backend="reference", rng=0,
                    dtype=np.float64)
x_odd = rng.standard_normal((2, 3, 8, 8))                        # (8 - 3) % 2 == 1: a row left
y_strided = strided(x_odd)
dy_strided = rng.standard_normal(y_strided.shape)                # (2, 4, 3, 3)
strided.zero_grad()
dx_strided = strided.backward(dy_strided)

dilated = np.zeros((2, 4, 2 * 3 - 1, 2 * 3 - 1))                 # 3 entries -> 5 with gaps
dilated[:, :, ::2, ::2] = dy_strided
back = nn.Conv2d(4, 3, kernel_size=3, padding=2, bias=False, dtype=np.float64)
back.weight.data[:] = strided.weight.data.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
dx_dilated = back(dilated)                                       # (2, 3, 7, 7): one row short
dx_dilated = np.pad(dx_dilated, ((0, 0), (0, 0), (0, 1), (0, 1)))  # the unread row and column
assert np.allclose(dx_strided, dx_dilated)
assert not dx_strided[:, :, -1, :].any() and not dx_strided[:, :, :, -1].any()
print("stride 2: dx == full convolution of the dilated dy (last row/column unread: zero)")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.9), layout="constrained")
limit = np.abs(dx_strided[0, 0]).max()
panels = [(dy_strided[0, 0], "dy (3x3), output channel 0"),
          (dilated[0, 0], "dy dilated: zeros between (5x5)"),
          (dx_strided[0, 0], "dx (8x8), input channel 0\n(row and column 7 read by no window: 0)")]
for ax, (picture, title) in zip(axes, panels):
    lim = np.abs(picture).max()
    shown = ax.imshow(picture, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set(title=title, xticks=range(picture.shape[1]), yticks=range(picture.shape[0]))
    fig.colorbar(shown, ax=ax, shrink=0.8)
show(fig, "stride2_dilated_dy")

# %% [markdown]
# ## Gradients accumulate
#
# Like PyTorch, `backward` *adds* to `param.grad`: call it twice and the gradient doubles.
# (That is what lets several losses or several mini-batches share one update, and why every
# training step starts with `zero_grad()`.)

# %%
conv.zero_grad()                  # start from zero, so the cell can be run again
conv(x)
conv.backward(dy)
first = conv.weight.grad.copy()
conv(x)
conv.backward(dy)                 # the same gradient once more ...
assert np.allclose(conv.weight.grad, 2 * first)   # ... is added, not stored
conv.zero_grad()
assert not conv.weight.grad.any()

# %% [markdown]
# ## Checking gradients numerically
#
# The derivative is a limit: $f'(\theta) \approx \dfrac{f(\theta + \varepsilon) - f(\theta -
# \varepsilon)}{2\varepsilon}$ (a *central difference*, accurate to $O(\varepsilon^2)$).
# `minicnn.gradcheck(layer, x)` nudges every input element and every parameter this way,
# in float64, for the scalar $L = \sum y \cdot g$ with a fixed random `g`, and compares with
# `backward`. Per tensor it reports the **relative error**
#
# $$\frac{\max |\text{analytic} - \text{numeric}|}{\max\left(\max|\text{analytic}|,\;
# \max|\text{numeric}|\right)}$$
#
# i.e. the worst mistake measured against the tensor's largest gradient. A correct float64
# backward scores around 1e-9 to 1e-11; a wrong one 1e-2 or worse. We require < 1e-6.

# %%
cases = {
    "3x3": nn.Conv2d(2, 3, 3, rng=0),
    "stride 2, padding 1": nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=0),
    "dilation 2": nn.Conv2d(2, 3, 3, dilation=2, padding=2, rng=0),
    "groups 2, 2x3 kernel": nn.Conv2d(2, 4, (2, 3), groups=2, rng=0),
}
x_small = rng.standard_normal((2, 2, 6, 6))
for name, layer in cases.items():
    result = minicnn.gradcheck(layer, x_small)
    print(f"--- {name}\n{result}")
    assert result.max_error < 1e-6

# %% [markdown]
# A bug shows up as a large error *in the tensor that is wrong*. Here is a deliberately broken
# layer whose bias gradient forgets to sum over the batch (it keeps only image 0):

# %%
class ForgetsTheBatch(nn.Conv2d):
    def backward(self, dy, need_input_grad=True):
        dx = super().backward(dy, need_input_grad)
        self.bias.grad -= dy[1:].sum(axis=(0, 2, 3))                  # the bug
        return dx


broken = minicnn.gradcheck(ForgetsTheBatch(2, 3, 3, rng=0), x_small)
print(broken)
assert broken.errors["bias"] > 1e-2 and broken.errors["weight"] < 1e-6

# %% [markdown]
# ## Why float64? Choosing ε
#
# Two errors compete. The *truncation* error of the difference formula shrinks like ε²; the
# *round-off* error (two nearly equal numbers subtracted, then divided by 2ε) grows like
# machine-epsilon / ε. Sweep ε for a conv followed by `tanh` (a non-linear function, so
# truncation error exists) in both precisions, and compare with the exact float64 gradient.
# The small loop below is the whole idea of a gradient check.

# %%
def weight_gradient_error(dtype, eps):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0, dtype=dtype), nn.Tanh())
    inputs, weight = x_small.astype(dtype), model[0].weight.data
    g = np.random.default_rng(1).standard_normal(model(inputs).shape).astype(dtype)
    numeric = np.zeros(weight.shape)
    for index in np.ndindex(weight.shape):
        original = weight[index]
        weight[index] = original + dtype(eps)
        plus = np.sum(model(inputs) * g, dtype=np.float64)
        weight[index] = original - dtype(eps)
        minus = np.sum(model(inputs) * g, dtype=np.float64)
        weight[index] = original
        numeric[index] = (plus - minus) / (2 * eps)
    return np.abs(numeric - exact).max() / np.abs(exact).max()


truth = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0, dtype=np.float64), nn.Tanh())
g_exact = np.random.default_rng(1).standard_normal(truth(x_small).shape)
truth.zero_grad()
truth.backward(g_exact)
exact = truth[0].weight.grad.copy()

epsilons = np.logspace(-9, -1, 9 if FAST else 17)
errors = {dtype: [weight_gradient_error(dtype, eps) for eps in epsilons]
          for dtype in (np.float32, np.float64)}
fig, ax = plt.subplots(figsize=(7, 4.2))
for dtype, marker in ((np.float32, "o-"), (np.float64, "s-")):
    ax.loglog(epsilons, errors[dtype], marker, label=np.dtype(dtype).name)
ax.axhline(1e-6, color="grey", ls="--", label="gradcheck tolerance 1e-6")
ax.set(title="Central difference vs exact gradient (conv + tanh)", xlabel="step ε",
       ylabel="relative error of dW")
ax.grid(alpha=0.3, which="both")
ax.legend()
show(fig, "epsilon_sweep")
best32, best64 = min(errors[np.float32]), min(errors[np.float64])
print(f"best relative error: float32 {best32:.1e}, float64 {best64:.1e}")
assert best64 < 1e-8 and best32 > 1e-6      # float32 cannot even reach the 1e-6 tolerance

# %% [markdown]
# float64 reaches ~1e-10 with ε around 1e-6 (gradcheck's default, the bottom of the "V");
# float32 bottoms out near 1e-5 at a much larger ε, and only because the loop above adds up
# the loss in float64. So backward passes are *verified* in float64 with a tolerance of 1e-6,
# while float32 results (for example minicnn against PyTorch, or one backend against another)
# are compared with tolerances around 1e-4 to 1e-5.
#
# ## Exercise: write the backward pass
#
# Write `conv2d_backward(x, weight, dy, stride, padding)` returning `(dx, dweight, dbias)`:
# the three formulas from the top of this tutorial with stride and padding. The plan that
# keeps it short is a loop over the kernel taps `(u, v)` (as in the dW cell above):
#
# - pad `x` once (`np.pad`), and allocate `dx_padded = np.zeros_like(x_padded)`;
# - the input pixels tap `(u, v)` reads are `x_padded[:, :, u : u + s·H_out : s, v : v + s·W_out : s]`
#   -- one `(N, C, H_out, W_out)` block per tap;
# - `dweight[:, :, u, v]` pairs that block with `dy` (an `einsum` summing over n, h, w);
# - the same block of `dx_padded` receives `dy` times the tap's weights -- with `+=`, since
#   neighbouring taps read overlapping pixels;
# - crop the padding off `dx_padded`; `dbias` is the easy one.
#
# `check_conv2d_backward` compares all three gradients with `Conv2d.backward` on four cases
# (stride 1; stride 2 with padding; stride 2 with a row left over; a 2×3 kernel) and then runs
# `minicnn.gradcheck` on a layer whose backward is *yours*, so a mistake is reported by the
# name of the gradient that is wrong, with its relative error. Solution:
# `solutions/04_conv_backward.py`.

# %%
@exercise("04_conv_backward")
def conv2d_backward(x, weight, dy, stride=1, padding=0):
    """Gradients of y = conv2d(x, weight) + bias.

    x (N, C, H, W), weight (O, C, kH, kW), dy (N, O, H_out, W_out)
    -> dx (N, C, H, W), dweight (O, C, kH, kW), dbias (O,).
    """
    # YOUR CODE HERE: loop over the taps (u, v); fill dweight[:, :, u, v] and add into dx.
    raise NotImplementedError("fill in conv2d_backward")


conv_backward = check_exercise("conv2d_backward", conv2d_backward, check_conv2d_backward,
                               reference=library_conv2d_backward)

# %% [markdown]
# Whichever version passed, use it once more: the gradient of a stride-2 layer from the
# section above.

# %%
dx_mine, dw_mine, db_mine = conv_backward(x_odd, strided.weight.data, dy_strided, stride=2)
assert np.allclose(dx_mine, dx_strided) and np.allclose(dw_mine, strided.weight.grad)
print("conv_backward reproduces the stride-2 layer's dx and dW")
