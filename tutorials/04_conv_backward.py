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
# - check gradients numerically with `minicnn.gradcheck`, read its **relative error**, and
#   see why gradient checks run in float64 and what tolerance to expect in float32.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minicnn
from minicnn import nn
from minicnn.kernels.im2col import col2im, im2col
from tutorial_tools import FAST, check, show

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
# **dx**: the formula reads `w[o, c, p-i, q-j]`, with the index running *backwards* — the
# kernel is flipped. Padding `dy` with `k-1` zeros lets every input pixel collect from every
# window that covered it. So `dx` is a "full" convolution of `dy` with the flipped kernel,
# input and output channels swapped (this is also what a *transposed convolution* computes):

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
# ## Gradients accumulate
#
# Like PyTorch, `backward` *adds* to `param.grad`: call it twice and the gradient doubles.
# (That is what lets several losses or several mini-batches share one update, and why every
# training step starts with `zero_grad()`.)

# %%
first = conv.weight.grad.copy()
conv(x)
conv.backward(dy)
assert np.allclose(conv.weight.grad, 2 * first)
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
# ## Exercise
#
# Over which axes of `dy` (shape `(N, C_out, H_out, W_out)`) must you sum to get the bias
# gradient? Give a tuple of axes.

# %%
# Your answer here (the worked answer is filled in; try changing it)
bias_axes = (0, 2, 3)

layer = nn.Conv2d(3, 5, 3, padding=1, rng=0, dtype=np.float64)
upstream = rng.standard_normal(layer(x).shape)
layer.backward(upstream)
check("bias gradient = dy summed over your axes", upstream.sum(axis=bias_axes), layer.bias.grad)
