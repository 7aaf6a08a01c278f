# %% [markdown]
# # 06 · Linear layers, softmax and cross-entropy
#
# A CNN ends like any classifier: a fully connected (**Linear**) layer turns features into one
# score per class (the **logits**), **softmax** turns scores into probabilities and
# **cross-entropy** measures how much probability went to the right class. You will:
#
# - check `nn.Linear`'s forward and backward against the matrix formulas;
# - see the naive softmax overflow, and the stable one (subtract the max) that does not;
# - derive the famous fused gradient `softmax - onehot` and check it against
#   `nn.CrossEntropyLoss().backward()`;
# - **write** softmax cross-entropy, loss and gradient, yourself (the exercise), stable for
#   huge logits;
# - train a one-layer classifier on MNIST (with your loss, once it passes) and look at the
#   weights it learns.

# %%
import matplotlib.pyplot as plt
import numpy as np

import minicnn
from minicnn import nn
from minicnn.data import load_dataset
from exercise_checks import check_softmax_cross_entropy, library_softmax_cross_entropy
from tutorial_tools import FAST, check_exercise, exercise, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## Linear: one matrix product
#
# `nn.Linear(in_features, out_features)` stores `weight` of shape `(out, in)` (as PyTorch)
# and computes `y = x Wᵀ + b` for a batch `x` of shape `(N, in)`. Its backward follows from
# `y[n, o] = Σ_i x[n, i] W[o, i] + b[o]`:
#
# - $dW = dy^\top x$ (shape `(out, in)`), $\;db = \sum_n dy[n]$, $\;dx = dy\, W$ (shape `(N, in)`).

# %%
linear = nn.Linear(5, 3, rng=0, dtype=np.float64)
x = rng.standard_normal((4, 5))
y = linear(x)
assert np.allclose(y, x @ linear.weight.data.T + linear.bias.data)

dy = rng.standard_normal(y.shape)
linear.zero_grad()
dx = linear.backward(dy)
assert np.allclose(linear.weight.grad, dy.T @ x)
assert np.allclose(linear.bias.grad, dy.sum(axis=0))
assert np.allclose(dx, dy @ linear.weight.data)
print("Linear forward and backward match the formulas; gradcheck:",
      f"{minicnn.gradcheck(linear, x).max_error:.1e}")
assert minicnn.gradcheck(linear, x).max_error < 1e-6

# %% [markdown]
# A CNN's feature maps are `(N, C, H, W)`; `nn.Flatten()` reshapes them to `(N, C·H·W)` (a
# view, no copy) so a Linear layer can read them, and its backward reshapes the gradient back.

# %%
flatten = nn.Flatten()
maps = rng.standard_normal((2, 16, 5, 5)).astype(np.float32)
assert flatten(maps).shape == (2, 400)
assert flatten.backward(flatten(maps)).shape == maps.shape

# %% [markdown]
# ## Softmax, and why the naive one breaks
#
# $$p_k = \frac{e^{z_k}}{\sum_j e^{z_j}}$$
#
# Positive, sums to 1, larger logit ⇒ larger probability. Written literally it overflows:
# $e^{z}$ is larger than float32's maximum (3.4e38) as soon as $z > 88.7$, and then the
# division is `inf / inf = nan`. Logits of a few hundred happen in real training (large
# learning rate, unnormalised inputs).

# %%
def softmax_naive(z):
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_stable(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))      # the largest exponent is now e^0 = 1
    return e / e.sum(axis=-1, keepdims=True)


small = np.array([1.0, 2.0, 3.0], dtype=np.float32)
large = np.array([1000.0, 1001.0, 1002.0], dtype=np.float32)
print("logits:        ", small, "|", large)
with np.errstate(over="ignore", invalid="ignore"):
    print("naive  softmax:", softmax_naive(small), "|", softmax_naive(large))
print("stable softmax:", softmax_stable(small), "|", softmax_stable(large))
with np.errstate(over="ignore", invalid="ignore"):
    assert np.isnan(softmax_naive(large)).all()
assert np.allclose(softmax_naive(small), softmax_stable(small))
assert np.allclose(softmax_stable(large), softmax_stable(small))   # only differences matter

# %% [markdown]
# Subtracting the maximum changes nothing mathematically ($e^{z_k - c} / \sum_j e^{z_j - c}$
# cancels the $e^{-c}$) but keeps every exponent ≤ 0. The other end has the same problem:
# `log(softmax)` of a very unlikely class underflows to `log(0) = -inf`. The cure is the
# **log-sum-exp** form, $\log p_k = z_k - m - \log \sum_j e^{z_j - m}$ with $m = \max_j z_j$,
# which is what `nn.CrossEntropyLoss` computes from the logits directly.

# %%
logits = np.array([[0.0, -200.0]], dtype=np.float32)         # class 1 is very unlikely
with np.errstate(divide="ignore"):
    naive_loss = -np.log(softmax_stable(logits)[0, 1])
library_loss = nn.CrossEntropyLoss()(logits, np.array([1]))
print(f"-log p of the unlikely class: via softmax {naive_loss}, "
      f"CrossEntropyLoss {library_loss:.3f}")
assert np.isinf(naive_loss) and np.isclose(library_loss, 200.0)

# %% [markdown]
# ## Cross-entropy and its fused gradient
#
# For one example with true class `y`, $L = -\log p_y = -z_y + \log \sum_j e^{z_j}$.
# Differentiate with respect to every logit:
#
# $$\frac{\partial L}{\partial z_k} = -[k = y] + \frac{e^{z_k}}{\sum_j e^{z_j}} = p_k - [k = y]$$
#
# i.e. **softmax minus one-hot**. Averaged over a batch of `N` the loss divides by `N`, so
# the gradient is `(p - onehot) / N`. No exponentials to differentiate, nothing to overflow.

# %%
n_classes = 10
z = rng.standard_normal((6, n_classes)).astype(np.float32) * 3
labels = rng.integers(0, n_classes, size=6)
loss_fn = nn.CrossEntropyLoss()
loss = loss_fn(z, labels)
p = softmax_stable(z)
onehot = np.eye(n_classes, dtype=np.float32)[labels]
assert np.isclose(loss, -np.mean(np.log(p[np.arange(6), labels])), rtol=1e-5)
grad = loss_fn.backward()
assert np.allclose(grad, (p - onehot) / 6, atol=1e-7)
print(f"loss {loss:.4f}; backward() == (softmax - onehot) / N: True")

result = minicnn.gradcheck(nn.CrossEntropyLoss(), z.astype(np.float64), target=labels)
print(result)
assert result.max_error < 1e-6

# %% [markdown]
# The picture: the gradient pushes the true class's logit **up** (negative gradient, since
# training moves against it) by `1 - p_y`, and every other logit **down** by its probability.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
k = np.arange(n_classes)
bar_colours = ["tab:green" if c == labels[0] else "tab:grey" for c in k]
for ax, values, title in zip(axes, (z[0], p[0], grad[0] * 6),
                             ("logits z", "softmax p", "gradient p - onehot")):
    ax.bar(k, values, color=bar_colours)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(title=title, xlabel="class", xticks=k)
axes[0].set_ylabel(f"example 0 (true class {labels[0]}, green)")
show(fig, "softmax_gradient")

# %% [markdown]
# ## Exercise: write softmax cross-entropy
#
# Write `softmax_cross_entropy(logits, labels)` returning `(loss, dlogits)`: the *mean*
# cross-entropy over the batch (a Python float) and its gradient with respect to the logits
# (shape `(N, C)`). Everything you need is above: the max-subtraction, log-sum-exp, and
# `(softmax − onehot) / N`. `check_softmax_cross_entropy` compares both with
# `nn.CrossEntropyLoss` on ordinary logits, on a single example and on logits in the
# thousands (where `np.exp` overflows unless you subtract the max), then gradient-checks it.
# Solution: `solutions/06_dense_softmax_cross_entropy.py`.

# %%
@exercise("06_dense_softmax_cross_entropy")
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits (N, C) floats, labels (N,) ints in [0, C) -> (loss: float, dlogits (N, C)).
    """
    # YOUR CODE HERE: shift by the row max, log-softmax, pick the labels' entries, average;
    # then the gradient (softmax - onehot) / N.
    raise NotImplementedError("fill in softmax_cross_entropy")


cross_entropy = check_exercise("softmax_cross_entropy", softmax_cross_entropy,
                               check_softmax_cross_entropy,
                               reference=library_softmax_cross_entropy)

# %% [markdown]
# ## Putting it together: a one-layer classifier
#
# `Flatten → Linear(784, 10)` is multinomial logistic regression. Before training, a sanity
# check: with small random weights every class gets probability ≈ 1/10, so the loss should
# start near $\log 10 \approx 2.30$. Then plain gradient descent: forward, loss, backward,
# `param.data -= lr * param.grad`, with `cross_entropy` from the exercise (yours if it
# passed) computing the loss and the gradient that starts the backward pass.

# %%
count = 1000 if FAST else 5000
train = load_dataset("mnist", "train", limit=count)
images = (train.images.astype(np.float32) / 255 - train.mean[0]) / train.std[0]
model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10, rng=0))
loss_fn = nn.CrossEntropyLoss()
first_loss = loss_fn(model(images), train.labels)
print(f"initial loss {first_loss:.3f} (log 10 = {np.log(10):.3f})")
assert abs(first_loss - np.log(10)) < 0.5

# For clean pictures of the weights below, start from zero instead. That is fine for a single
# linear layer (each row still gets its own gradient); a deeper network needs random weights,
# or all its hidden units would stay identical.
for param in model.parameters():
    param.data[...] = 0
losses, lr = [], 0.1
for step in range(60 if FAST else 150):
    logits = model(images)                                  # full batch
    loss, dlogits = cross_entropy(logits, train.labels)
    losses.append(loss)
    model.zero_grad()
    model.backward(dlogits.astype(np.float32))
    for param in model.parameters():
        param.data -= lr * param.grad
accuracy = np.mean(model(images).argmax(axis=1) == train.labels)
print(f"final loss {losses[-1]:.3f}, training accuracy {accuracy:.1%}")
assert np.isclose(losses[0], np.log(10)) and losses[-1] < 0.5 * losses[0] and accuracy > 0.85

# %%
weights = model[1].weight.data.reshape(10, 28, 28)
fig, axes = plt.subplots(2, 6, figsize=(13, 4.6), width_ratios=[1] * 5 + [0.08],
                         layout="constrained")
limit = np.abs(weights).max()
for digit, ax in zip(range(10), axes[:, :5].ravel()):
    image = ax.imshow(weights[digit], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set(title=f"weights for '{digit}'", xticks=[], yticks=[])
fig.colorbar(image, cax=axes[0, 5], label="weight")
axes[1, 5].set_visible(False)
fig.suptitle("What a one-layer classifier learned: one template per digit")
show(fig, "linear_weights")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(losses)
ax.axhline(np.log(10), color="grey", ls="--", label="log 10 (guessing)")
ax.set(title=f"Gradient descent on {count} MNIST digits", xlabel="step", ylabel="cross-entropy")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "training_loss")

# %% [markdown]
# Red pixels vote *for* a class, blue *against*: each row of `W` is a template of its digit.
# A convolutional network (tutorial 08) beats this easily, because its features are local
# and shared across positions rather than one fixed template per class.
