# %% [markdown]
# # 07 · Activations, batch normalisation and dropout
#
# Three kinds of layer sit between the convolutions of a modern CNN. None of them has many
# parameters, but each changes how (and whether) a network trains. You will learn:
#
# - what ReLU, LeakyReLU, Sigmoid and Tanh compute, what their derivatives look like, and why
#   that matters for gradients flowing backwards;
# - how batch normalisation standardises each channel with the *batch's* statistics while
#   training, keeps *running* estimates, and uses those estimates in eval mode;
# - how inverted dropout zeroes activations at random and rescales the survivors, and why it
#   does nothing at all in eval mode;
# - how to prove every backward pass right with a float64 gradient check;
# - how batch norm's backward pass is **derived**, and then **write** it yourself (the
#   exercise).

# %%
import matplotlib.pyplot as plt
import numpy as np

from minicnn import gradcheck, nn
from exercise_checks import check_batchnorm2d_backward, library_batchnorm2d_backward
from tutorial_tools import FAST, check, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Activation functions and their derivatives
#
# An activation is applied element by element. Its backward pass multiplies the upstream
# gradient by the local derivative: $dx = dy \cdot f'(x)$. So if we feed `dy = 1` into
# `backward`, we get $f'(x)$ back, computed by the layer's own hand-written backward.
#
# - ReLU: $\max(x, 0)$, derivative 1 for $x > 0$, else 0.
# - LeakyReLU: $x$ for $x > 0$, else $a x$ (here $a = 0.1$), derivative 1 or $a$.
# - Sigmoid: $\sigma(x) = 1 / (1 + e^{-x})$, derivative $\sigma(x)(1 - \sigma(x))$, at most 1/4.
# - Tanh: derivative $1 - \tanh^2(x)$, at most 1.

# %%
x = np.linspace(-4, 4, 801, dtype=np.float32)
activations = {"ReLU": nn.ReLU(), "LeakyReLU(0.1)": nn.LeakyReLU(0.1),
               "Sigmoid": nn.Sigmoid(), "Tanh": nn.Tanh()}
values, derivatives = {}, {}
for name, layer in activations.items():
    values[name] = layer(x)
    derivatives[name] = layer.backward(np.ones_like(x))   # dy = 1  ->  f'(x)

# ReLU and LeakyReLU coincide for x > 0: draw ReLU wide and LeakyReLU dashed on top, so
# neither hides the other.
styles = {"ReLU": dict(lw=4, alpha=0.55), "LeakyReLU(0.1)": dict(lw=1.8, ls="--"),
          "Sigmoid": dict(lw=1.8), "Tanh": dict(lw=1.8)}
fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=(11, 4))
for name in activations:
    ax_f.plot(x, values[name], label=name, **styles[name])
    ax_d.plot(x, derivatives[name], label=name, **styles[name])
ax_f.set(title="Activation f(x)", xlabel="x", ylabel="f(x)", ylim=(-1.5, 4))
ax_d.set(title="Derivative f'(x) from backward(dy=1)", xlabel="x", ylabel="f'(x)",
         ylim=(-0.1, 1.1))
for ax in (ax_f, ax_d):
    ax.axhline(0, color="gray", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend()
show(fig, "activations")

# %% [markdown]
# The derivatives agree with the formulas. Note how small the sigmoid's is: at most 0.25, so
# ten stacked sigmoids shrink a gradient by at least $4^{10} \approx 10^6$ (the *vanishing
# gradient*). ReLU passes gradients through unchanged where it is active, which is one reason
# it replaced sigmoid and tanh in CNNs.

# %%
i0 = np.searchsorted(x, 0.0)          # index of x == 0
assert x[i0] == 0.0
check("sigmoid'(0)", derivatives["Sigmoid"][i0], 0.25)
check("tanh'(0)", derivatives["Tanh"][i0], 1.0)
assert np.array_equal(derivatives["ReLU"], (x > 0).astype(np.float32))
assert np.allclose(derivatives["LeakyReLU(0.1)"], np.where(x > 0, 1.0, 0.1))
# The backward pass agrees with a numerical slope of the forward curve, too:
for name in activations:
    slope = np.gradient(values[name].astype(np.float64), x.astype(np.float64))
    smooth = np.abs(x) > 0.02                          # skip the kink of (Leaky)ReLU
    assert np.allclose(slope[smooth], derivatives[name][smooth], atol=2e-3), name
print("sigmoid'(x) never exceeds", derivatives["Sigmoid"].max())

# %% [markdown]
# A gradient check makes the same comparison rigorously: `minicnn.gradcheck` computes
# central differences $(L(x+\varepsilon) - L(x-\varepsilon)) / 2\varepsilon$ for every input
# element in float64 and reports the worst relative error against `backward`. (Random
# inputs almost surely avoid ReLU's kink at exactly 0.)

# %%
x_check = rng.standard_normal((4, 3, 5, 5))            # float64 for gradient checks
for name, layer in activations.items():
    result = gradcheck(layer, x_check)
    print(f"{name:<15} max error {result.max_error:.1e}")
    assert result.max_error < 1e-6, name

# %% [markdown]
# ## 2. Batch normalisation: train mode
#
# `BatchNorm2d(C)` treats each channel separately. In training mode it takes the mean
# $\mu_c$ and variance $\sigma_c^2$ of channel $c$ over the batch *and* all pixels (axes N, H,
# W), and outputs
#
# $$y = \gamma_c \frac{x - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c,$$
#
# with learnable scale $\gamma$ (`weight`, starts at 1) and shift $\beta$ (`bias`, starts at
# 0). Whatever scale the channels arrive in, they leave standardised. Let's build a batch
# whose three channels have very different means and spreads.

# %%
true_mean = np.array([5.0, -2.0, 0.0], dtype=np.float32)
true_std = np.array([3.0, 0.5, 1.0], dtype=np.float32)


def make_batch(n, generator):
    """n images of 3 channels, 8x8 pixels, channel c ~ Normal(true_mean[c], true_std[c])."""
    z = generator.standard_normal((n, 3, 8, 8), dtype=np.float32)
    return z * true_std[None, :, None, None] + true_mean[None, :, None, None]


bn = nn.BatchNorm2d(3)
batch = make_batch(32, rng)
out = bn(batch)                       # a new layer is in training mode
per_channel = (0, 2, 3)
print("input  mean per channel:", batch.mean(axis=per_channel).round(3))
print("output mean per channel:", np.abs(out.mean(axis=per_channel)).round(5))
print("output std  per channel:", out.std(axis=per_channel).round(4))
assert out.shape == batch.shape and out.dtype == np.float32
assert np.allclose(out.mean(axis=per_channel), 0, atol=1e-5)
assert np.allclose(out.std(axis=per_channel), 1, atol=1e-3)

fig, (ax_in, ax_out) = plt.subplots(1, 2, figsize=(11, 3.8))
for c in range(3):
    ax_in.hist(batch[:, c].ravel(), bins=50, alpha=0.6, label=f"channel {c}")
    ax_out.hist(out[:, c].ravel(), bins=50, alpha=0.6, label=f"channel {c}")
ax_in.set(title="Before BatchNorm2d", xlabel="value", ylabel="count")
ax_out.set(title="After BatchNorm2d (train mode)", xlabel="value", ylabel="count")
for ax in (ax_in, ax_out):
    ax.legend()
show(fig, "batchnorm_histograms")

# %% [markdown]
# ## 3. Running statistics and eval mode
#
# At test time there may be only one image, and its prediction must not depend on which other
# images share its batch. So while training, the layer also keeps exponential moving averages
#
# `running_mean = (1 - momentum) * running_mean + momentum * batch_mean` (momentum 0.1),
#
# and likewise `running_var` (with the unbiased batch variance, as PyTorch does). They start
# at 0 and 1 and drift towards the data's true statistics as training batches go by.

# %%
bn = nn.BatchNorm2d(3)                               # a fresh layer
assert np.all(bn.running_mean == 0) and np.all(bn.running_var == 1)
steps = 40 if FAST else 100
history = []
for _ in range(steps):
    bn(make_batch(32, rng))
    history.append((bn.running_mean.copy(), bn.running_var.copy()))
running_means = np.array([h[0] for h in history])
running_vars = np.array([h[1] for h in history])

fig, (ax_m, ax_v) = plt.subplots(1, 2, figsize=(11, 3.8))
for c in range(3):
    line, = ax_m.plot(running_means[:, c], label=f"channel {c}")
    ax_m.axhline(true_mean[c], color=line.get_color(), ls="--", lw=1)
    ax_v.plot(running_vars[:, c], color=line.get_color(), label=f"channel {c}")
    ax_v.axhline(true_std[c] ** 2, color=line.get_color(), ls="--", lw=1)
ax_m.set(title="running_mean (dashed: true mean)", xlabel="training step", ylabel="value")
ax_v.set(title="running_var (dashed: true variance)", xlabel="training step", ylabel="value")
for ax in (ax_m, ax_v):
    ax.grid(alpha=0.3)
    ax.legend()
show(fig, "batchnorm_running_stats")
print("running_mean:", bn.running_mean.round(2), " true:", true_mean)
assert np.allclose(bn.running_mean, true_mean, atol=0.3)
assert np.allclose(bn.running_var, true_std ** 2, rtol=0.2)

# %% [markdown]
# In eval mode the layer normalises with the running estimates instead of the batch's. We can
# verify this against the formula, and see the practical consequence: in eval mode an image's
# output is the same whether it is processed alone or inside a batch; in train mode it is not.

# %%
bn.eval()
test_batch = make_batch(8, rng)
y_eval = bn(test_batch)
shape = (1, 3, 1, 1)
expected = ((test_batch - bn.running_mean.reshape(shape))
            / np.sqrt(bn.running_var.reshape(shape) + bn.eps)
            * bn.weight.data.reshape(shape) + bn.bias.data.reshape(shape))
assert np.allclose(y_eval, expected, atol=1e-5)
alone = bn(test_batch[:2])                            # the first two images on their own
print("eval: same output alone and in the batch:", np.allclose(alone, y_eval[:2], atol=1e-6))
assert np.allclose(alone, y_eval[:2], atol=1e-6)

bn.train()
frozen = bn.running_mean.copy()
y_train_all, y_train_two = bn(test_batch), bn(test_batch[:2])
print("train: same output alone and in the batch:", np.allclose(y_train_two, y_train_all[:2]))
assert not np.allclose(y_train_two, y_train_all[:2])
assert not np.allclose(bn.running_mean, frozen)        # training also moved the estimates

# %% [markdown]
# Gradient checks, in both modes. In train mode the backward pass is the interesting one: the
# mean and variance depend on every input, so each input's gradient involves the whole
# channel. (`gradcheck` weights the output with a random `g`, $L = \sum y \cdot g$; with
# $L = \sum y$ the gradient would be exactly zero, since normalised values always sum to 0.)

# %%
bn_check = nn.BatchNorm2d(3)
bn_check.weight.data[:] = [1.5, 0.5, -1.0]            # non-trivial gamma and beta
bn_check.bias.data[:] = [0.1, -0.2, 0.3]
x_bn = rng.standard_normal((4, 3, 3, 3)) * 2 + 1
for mode in ("train", "eval"):
    bn_check.train(mode == "train")
    result = gradcheck(bn_check, x_bn)
    print(f"BatchNorm2d ({mode}):\n{result}")
    assert result.max_error < 1e-6

# %% [markdown]
# ### Deriving batch norm's backward pass
#
# Take one channel and write its `n` values (over batch and pixels) as $x_i$. Forward:
#
# $$\mu = \tfrac1n \textstyle\sum_i x_i,\quad \sigma^2 = \tfrac1n \sum_i (x_i - \mu)^2,\quad
# \hat x_i = (x_i - \mu)\,s \;\text{ with } s = (\sigma^2 + \epsilon)^{-1/2},\quad
# y_i = \gamma \hat x_i + \beta.$$
#
# **γ and β** are easy: $\partial L/\partial\gamma = \sum_i dy_i\, \hat x_i$ and
# $\partial L/\partial\beta = \sum_i dy_i$. Then $d\hat x_i = \gamma\, dy_i$.
#
# **x** is the interesting one, because $x_j$ reaches the loss three ways: directly through
# $\hat x_j$, through $\mu$ (which every $\hat x_i$ uses) and through $\sigma^2$. The chain
# rule adds the three:
#
# - directly: $\partial \hat x_j / \partial x_j = s$, giving $s\, d\hat x_j$;
# - through the mean: $\partial \hat x_i / \partial \mu = -s$ and $\partial\mu/\partial x_j =
#   1/n$, giving $-\tfrac{s}{n} \sum_i d\hat x_i$ (the $\mu$ inside $\sigma^2$ contributes
#   nothing, since $\sum_i (x_i - \mu) = 0$);
# - through the variance: $\partial \hat x_i / \partial \sigma^2 = -\tfrac12 (x_i - \mu)
#   s^3$ and $\partial \sigma^2 / \partial x_j = \tfrac2n (x_j - \mu)$, giving
#   $-\tfrac{s}{n}\, \hat x_j \sum_i d\hat x_i\, \hat x_i$.
#
# Together:
#
# $$dx_j = s \Big( d\hat x_j - \operatorname{mean}_i(d\hat x_i) - \hat x_j \operatorname{mean}_i(d\hat x_i\,\hat x_i) \Big).$$
#
# The two subtracted means remove from the gradient exactly the directions that batch norm
# itself removes from its output: a shift of the whole channel and a rescaling of it. In eval
# mode $\mu$ and $\sigma^2$ are constants and only the first term remains. Check the formula
# numerically on one channel before you write it for real:

# %%
xs = rng.standard_normal(50) * 3 + 2                              # one channel, n = 50
dys = rng.standard_normal(50)
gamma_1, eps_1 = 1.7, 1e-5


def one_channel_loss(values):
    x_hat = (values - values.mean()) / np.sqrt(values.var() + eps_1)
    return np.sum(dys * gamma_1 * x_hat)                          # L with dL/dy = dys


s_1 = 1 / np.sqrt(xs.var() + eps_1)
x_hat_1 = (xs - xs.mean()) * s_1
dx_hat_1 = gamma_1 * dys
formula = s_1 * (dx_hat_1 - dx_hat_1.mean() - x_hat_1 * (dx_hat_1 * x_hat_1).mean())
numeric = np.array([(one_channel_loss(xs + 1e-6 * e) - one_channel_loss(xs - 1e-6 * e)) / 2e-6
                    for e in np.eye(50)])
print(f"formula vs central differences: max relative error "
      f"{np.abs(formula - numeric).max() / np.abs(numeric).max():.1e}")
assert np.allclose(formula, numeric, atol=1e-7)

# %% [markdown]
# ### Exercise: write batch norm's backward pass
#
# Write `batchnorm2d_backward(dy, x, gamma, eps)` returning `(dx, dgamma, dbeta)` for
# training mode, for `(N, C, H, W)` inputs: the formula above for every channel at once
# (statistics over the axes `(0, 2, 3)`; `keepdims=True` keeps them broadcastable).
# Recompute `mean`, `inv_std` and `x_hat` from `x`. `check_batchnorm2d_backward` compares
# with `BatchNorm2d.backward` on two shapes (γ of both signs) and gradient-checks it. A
# classic wrong answer, treating μ and σ² as constants (`dx = dy·γ·s`), fails on `dx`.
# Solution: `solutions/07_activations_batchnorm_dropout.py`.

# %%
@exercise("07_activations_batchnorm_dropout")
def batchnorm2d_backward(dy, x, gamma, eps=1e-5):
    """Backward of training-mode batch norm, y = gamma * x_hat + beta, per channel.

    dy, x (N, C, H, W), gamma (C,) -> dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    # YOUR CODE HERE: mean, inv_std and x_hat over axes (0, 2, 3); dgamma, dbeta; then dx.
    raise NotImplementedError("fill in batchnorm2d_backward")


bn_backward = check_exercise("batchnorm2d_backward", batchnorm2d_backward,
                             check_batchnorm2d_backward, reference=library_batchnorm2d_backward)

# %% [markdown]
# With it, one more fact from the derivation: in training mode the gradient reaching a
# channel's input always sums to zero (the mean term removes any shift), and it is
# uncorrelated with $\hat x$ (the variance term removes any rescaling; exactly so for
# $\epsilon = 0$, to within $\epsilon / \sigma^2$ here).

# %%
x_demo = make_batch(16, rng).astype(np.float64)
dx_demo, _, _ = bn_backward(rng.standard_normal(x_demo.shape), x_demo, np.ones(3))
x_hat_demo = (x_demo - x_demo.mean(axis=per_channel, keepdims=True)) / x_demo.std(
    axis=per_channel, keepdims=True)
print("sum of dx per channel:", dx_demo.sum(axis=per_channel).round(10))
assert np.allclose(dx_demo.sum(axis=per_channel), 0, atol=1e-9)
overlap = np.abs((dx_demo * x_hat_demo).sum(axis=per_channel))
assert np.all(overlap < 1e-4 * np.abs(dx_demo * x_hat_demo).sum(axis=per_channel))

# %% [markdown]
# ## 4. Inverted dropout
#
# `Dropout(p)` zeroes each element with probability $p$ during training. The survivors are
# multiplied by $1/(1-p)$, so the *expected* value of every activation is unchanged and eval
# mode can simply pass the input through. (The original "non-inverted" dropout scaled at test
# time instead; scaling during training is simpler.)

# %%
drop = nn.Dropout(p=0.3, rng=np.random.default_rng(1))
ones = np.ones((200, 500), dtype=np.float32)
y = drop(ones)
dropped = np.mean(y == 0)
print(f"fraction dropped {dropped:.3f}, survivors = {np.unique(y[y > 0])}, mean {y.mean():.3f}")
assert abs(dropped - 0.3) < 0.01
assert np.allclose(y[y > 0], 1 / 0.7)
assert abs(y.mean() - 1.0) < 0.02
# backward multiplies by the same mask: gradient flows only through the survivors
assert np.array_equal(drop.backward(ones), y)

drop.eval()
assert drop(ones) is ones                             # eval mode: the identity, no copy
drop.train()

p_values = np.linspace(0.0, 0.9, 10)
fractions, means = [], []
for p in p_values:
    layer = nn.Dropout(p=p, rng=np.random.default_rng(2))
    out_p = layer(ones)
    fractions.append(np.mean(out_p == 0))
    means.append(out_p.mean())

fig, (ax_mask, ax_p) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
image = ax_mask.imshow(y[:20, :40], cmap="viridis")
ax_mask.set(title="Dropout(p=0.3) applied to ones (20x40 corner)", xlabel="feature",
            ylabel="sample")
bar = fig.colorbar(image, ax=ax_mask, shrink=0.8, ticks=[0, 1 / 0.7])
bar.ax.set_yticklabels(["0 (dropped)", "1/(1-p) = 1.43"])
ax_p.plot(p_values, fractions, "o-", label="fraction zeroed")
ax_p.plot(p_values, means, "s-", label="mean output")
ax_p.set(title="Inverted dropout keeps the mean at 1", xlabel="p", ylabel="value")
ax_p.grid(alpha=0.3)
ax_p.legend()
show(fig, "dropout")
assert np.allclose(fractions, p_values, atol=0.01)
assert np.allclose(means, 1.0, atol=0.05)

# %% [markdown]
# Gradient-checking a random layer needs the *same* mask at every evaluation; `gradcheck`
# finds the layer's generator and replays its state before each forward pass.

# %%
result = gradcheck(nn.Dropout(p=0.5, rng=np.random.default_rng(3)), rng.standard_normal((4, 10)))
print("Dropout max error:", f"{result.max_error:.1e}")
assert result.max_error < 1e-6

# %% [markdown]
# ## Exercise
#
# A fresh `BatchNorm2d` (momentum 0.1, `running_mean` starting at 0) sees the *same* training
# batch 10 times in a row. The batch's channel-0 mean is exactly 5. What is
# `running_mean[0]` afterwards? (Hint: each step moves the estimate 10 % of the remaining way
# to 5, so after $k$ steps the gap is $5 \cdot 0.9^k$.)

# %%
# Your answer here (the worked answer is filled in; try changing it)
answer = 5 * (1 - 0.9 ** 10)

exercise_bn = nn.BatchNorm2d(1)
exercise_batch = 5 + rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
exercise_batch -= exercise_batch.mean() - 5             # make the mean exactly 5
for _ in range(10):
    exercise_bn(exercise_batch)
check("running_mean[0] after 10 steps", answer, exercise_bn.running_mean[0], rtol=1e-5)
