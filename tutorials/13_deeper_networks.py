# %% [markdown]
# # 13 · Deeper networks: skip connections, ResNets and data augmentation
#
# LeNet-5 has two convolutions. Networks that win on harder images have tens to hundreds of
# layers, and simply stacking more layers does not get you there: a plain deep stack trains
# *worse* than a shallower one, even on its own training set (He et al., 2016). The fix that
# made depth work is the **skip connection**: each block adds its input to its output,
# `out = relu(F(x) + x)`. On Fashion-MNIST you will:
#
# - build a plain 21-convolution network and the same network with skip connections
#   (`nn.BasicBlock`), and **measure the gradient norm at every layer**;
# - train both and compare their training curves;
# - add **data augmentation** (`RandomCrop`, `RandomHorizontalFlip`) and see what it does to
#   the train/validation gap;
# - weigh accuracy against **parameters** and **FLOPs** (`minicnn.models.profile`).
#
# Full mode trains each network for 400 to 800 steps of 64 images (the README lists how long
# that takes); fast mode for 80 to 160 steps: enough to see the curves part, not to reach
# good accuracy. The networks use batch normalisation (tutorial 07) and SGD with momentum
# (tutorial 12).

# %%
import matplotlib.pyplot as plt
import numpy as np

from minicnn import models, nn, optim
from minicnn.data import (Compose, DataLoader, Normalize, RandomCrop, RandomHorizontalFlip,
                          load_dataset)
from minicnn.train import evaluate, split_validation
from exercise_checks import check_residual_backward, library_residual_backward
from tutorial_tools import FAST, check_exercise, claim, exercise, loop_length, show

train_full = load_dataset("fashion-mnist", "train", limit=5000 if FAST else 30000)
train_set, val_set = split_validation(train_full, 1000 if FAST else 5000, seed=0)
normalise = Normalize(train_set.mean, train_set.std)
print(train_set, val_set, sep="\n")
loss_fn = nn.CrossEntropyLoss()
STEPS = loop_length(full=400, fast=80)

# %% [markdown]
# ## 1. A plain deep stack and its residual twin
#
# Both networks have the same layers: a 3×3 stem (1 → 8 channels) with batch norm, ReLU and
# a 2×2 max pool (to 14×14), then **ten blocks** of two 3×3 convolutions with 8 channels,
# each followed by batch norm, then global average pooling and a linear classifier. In the
# plain network the blocks are just stacked. In the residual one each block is a
# `BasicBlock`, whose forward is
#
# $$\text{out} = \text{relu}\big(\text{bn}_2(\text{conv}_2(\text{relu}(\text{bn}_1(\text{conv}_1(x))))) + x\big).$$
#
# Same parameters, same FLOPs (the addition is free): the only difference is the `+ x`.
#
# The exercise: write the residual block's **backward** pass. Its forward is above; the
# gradient of a sum goes to *both* terms, so the block's input gradient is the body's input
# gradient *plus* the gradient that skipped the body. `residual_backward` receives the block's
# submodules (which remember their forward inputs) and `dy`; the check compares it with
# `BasicBlock.backward` and gradient-checks it. The networks below are built from `Block`, a
# `BasicBlock` whose backward is the version that passed (yours, or the library's until then).

# %%
@exercise("13_deeper_networks")
def residual_backward(block, dy):
    """Backward through a BasicBlock without downsampling, using its submodules.

    block.conv1, block.bn1, block.relu, block.conv2, block.bn2, block.relu_out each have a
    backward(dy) -> dx (and accumulate their own parameter gradients). dy (N, C, H, W) ->
    dx (N, C, H, W).
    """
    # YOUR CODE HERE: through relu_out, then the body in reverse order, then add the skip.
    raise NotImplementedError("fill in residual_backward")


block_backward = check_exercise("residual_backward", residual_backward,
                                check_residual_backward, reference=library_residual_backward)


class Block(nn.BasicBlock):
    """The BasicBlock this tutorial builds with: its backward is `block_backward` (yours once
    it passes) when there is no downsampling shortcut, the library's otherwise."""

    def backward(self, dy, need_input_grad=True):
        if self.downsample is None:
            return block_backward(self, dy)
        return super().backward(dy, need_input_grad)

# %%
WIDTH, BLOCKS = 8, 10


def deep_net(residual, seed=0):
    """Stem, BLOCKS blocks of two 3x3 convs (plain or residual), pooling and a classifier."""
    rng = np.random.default_rng(seed)
    layers = [nn.Conv2d(1, WIDTH, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(WIDTH),
              nn.ReLU(), nn.MaxPool2d(2)]
    for _ in range(BLOCKS):
        if residual:
            layers.append(Block(WIDTH, WIDTH, rng=rng))
        else:
            for _ in range(2):
                layers += [nn.Conv2d(WIDTH, WIDTH, 3, padding=1, bias=False, rng=rng),
                           nn.BatchNorm2d(WIDTH), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 10, rng=rng)]
    return nn.Sequential(*layers)


def conv_layers(model):
    """The 3x3 convolutions, input side first."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


plain, residual = deep_net(residual=False), deep_net(residual=True)
assert models.count_parameters(plain) == models.count_parameters(residual)
print(f"{len(conv_layers(plain))} convolutions each, "
      f"{models.count_parameters(plain):,} parameters each")

# %% [markdown]
# ## 2. Gradient norms, layer by layer
#
# One batch, one forward and backward pass through each fresh network. For every convolution
# we measure $\lVert \partial L / \partial W \rVert / \lVert W \rVert$: how big a step the
# gradient asks for, relative to the weights. In a healthy network it is of the same order in
# every layer, so every layer learns at a similar pace.

# %%
x_batch = normalise(train_set.images[:64].astype(np.float32) / 255)
y_batch = train_set.labels[:64]
relative_grads = {}
for name, model in (("plain", plain), ("residual", residual)):
    loss_fn(model(x_batch), y_batch)
    model.zero_grad()
    model.backward(loss_fn.backward())
    relative_grads[name] = np.array([np.linalg.norm(c.weight.grad) / np.linalg.norm(c.weight.data)
                                     for c in conv_layers(model)])
    model.zero_grad()
    values = relative_grads[name]
    print(f"{name:<9} first conv {values[0]:.3f}, last conv {values[-1]:.3f}, "
          f"largest / smallest {values.max() / values.min():.1f}")

fig, ax = plt.subplots(figsize=(7.5, 4))
for name, values in relative_grads.items():
    ax.semilogy(range(1, len(values) + 1), values, "o-", ms=4, label=name)
ax.set(title="Gradient size per layer at initialisation (one batch)",
       xlabel="convolution (1 = next to the input)", ylabel="||dL/dW|| / ||W|| (log scale)",
       xticks=range(1, len(relative_grads["plain"]) + 1, 2))
ax.grid(alpha=0.3, which="both")
ax.legend()
show(fig, "gradient_norms_per_layer")

spread = {name: values.max() / values.min() for name, values in relative_grads.items()}
assert spread["plain"] > 3 * spread["residual"]

# %% [markdown]
# In the plain stack the gradient changes by a large factor from the last layer to the first
# (here it *grows* towards the input: with batch norm in every layer, a plain deep stack's
# gradients tend to explode backwards; without it, they tend to vanish). Either way, the
# layers at one end get steps far too large or far too small for one learning rate to suit
# all of them. In the residual network the `+ x` gives the gradient a path around every
# block. Write $s = F(x) + x$ for the sum and $\text{out} = \text{relu}(s)$: then
# $\partial s / \partial x = \partial F / \partial x + I$, so at the sum the identity hands
# the incoming gradient to $x$ unchanged, whatever the body's convolutions do to their
# share. The ReLU after the sum still zeroes the gradient wherever $s < 0$ (as every ReLU
# does), so the skip is not a perfect wire; but the part that passes is not multiplied by
# twenty weight matrices on its way down, and the gradient reaches the first layer at much
# the same size as the last.
#
# ## 3. Training both
#
# The same optimiser, learning rate, batches and number of steps:

# %%
def batches(dataset, transform, seed=0):
    """Endless seeded, shuffled mini-batches of 64 from `dataset`."""
    loader = DataLoader(dataset, batch_size=64, shuffle=True, drop_last=True,
                        transform=transform, rng=seed)
    while True:
        yield from loader


def train(model, steps, transform, lr=0.05, seed=0, dataset=train_set):
    """SGD with momentum for `steps` steps; returns the per-step training loss."""
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    stream, losses = batches(dataset, transform, seed), []
    model.train()
    for _ in range(steps):
        x, y = next(stream)
        losses.append(loss_fn(model(x), y))
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
    return np.array(losses)


def smooth(values, window=15):
    return np.convolve(values, np.ones(window) / window, mode="valid")


plain_transform = Compose([normalise])
curves, accuracy = {}, {}
for name, model in (("plain", plain), ("residual", residual)):
    curves[name] = train(model, STEPS, plain_transform)
    accuracy[name] = evaluate(model, val_set, transform=plain_transform).accuracy
    print(f"{name:<9} loss over the last 20 steps {curves[name][-20:].mean():.3f}, "
          f"validation accuracy {accuracy[name]:.3f}")

fig, ax = plt.subplots(figsize=(7.5, 4))
for name, losses in curves.items():
    ax.plot(np.arange(len(smooth(losses))) + 7, smooth(losses),
            label=f"{name} (validation accuracy {accuracy[name]:.1%})")
ax.set(title=f"{len(conv_layers(plain))} convolutions, plain vs residual", xlabel="step",
       ylabel="training loss (moving average of 15)")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "plain_vs_residual_training")
claim(curves["residual"][-20:].mean() < curves["plain"][-20:].mean(),
      "the residual network ends with the lower training loss")

# %% [markdown]
# The residual network's training loss falls faster: it is not better at generalising, it is
# easier to *optimise*. (With enough steps the plain one catches up at this modest depth; at
# fifty layers and more it does not.)
#
# ## 4. Data augmentation
#
# Augmentation shows the network a slightly different version of each training image every
# time: shifted by a few pixels (`RandomCrop(28, padding=2)` pads with black and crops back to
# 28×28 at a random place), mirrored (`RandomHorizontalFlip`). The label stays the same
# because a shifted or mirrored shirt is still a shirt. (Not for digits: a mirrored 2 is not
# a 2, which is why minicnn's default augmentation for grayscale data is the crop only.) The
# network sees "new" images for free, and cannot memorise pixels it never sees twice.
# Augmentation happens before normalisation, in the loader, from the loader's seeded
# generator: the same seed gives the same augmented batches.

# %%
augment = Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(0.5), normalise])
originals = train_set.images[:6].astype(np.float32) / 255
fig, axes = plt.subplots(4, 6, figsize=(9, 6.4), layout="constrained")
generator = np.random.default_rng(0)
for col in range(6):
    axes[0, col].imshow(originals[col, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, col].set_title(train_set.classes[train_set.labels[col]], fontsize=8)
    for row in range(1, 4):
        seen = augment(originals[col:col + 1], generator)[0, 0] * train_set.std[0] \
            + train_set.mean[0]                                     # undo the normalisation
        axes[row, col].imshow(seen, cmap="gray", vmin=0, vmax=1)
for ax in axes.ravel():
    ax.set(xticks=[], yticks=[])
axes[0, 0].set_ylabel("original")
for row in range(1, 4):
    axes[row, 0].set_ylabel(f"augmented {row}")
fig.suptitle("What the network sees: random 2-pixel shifts and mirror images")
show(fig, "augmentation_examples")

# %% [markdown]
# Train a small ResNet (a stem and three `BasicBlock`s of 8, 16 and 32 channels, the last two
# halving the resolution) without and with augmentation, on the same steps. To make
# memorising possible in a short run, it gets only 500 training images (each is seen
# `2 * STEPS * 64 / 500` times: about 20 in fast mode, about 100 in full mode; the cell
# prints it); then compare the accuracy on those 500 *un-augmented* images with the
# validation accuracy.

# %%
def small_resnet(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
        Block(8, 8, rng=rng), Block(8, 16, stride=2, rng=rng), Block(16, 32, stride=2, rng=rng),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10, rng=rng))


aug_steps = 2 * STEPS
few = split_validation(train_set, 500, seed=1)[1]            # 500 training images
print(f"{aug_steps} steps of 64: each of the {len(few)} images is seen about "
      f"{aug_steps * 64 / len(few):.0f} times")
augmentation_runs = {}
for name, transform in (("no augmentation", plain_transform), ("augmentation", augment)):
    model = small_resnet()
    losses = train(model, aug_steps, transform, dataset=few)
    train_accuracy = evaluate(model, few, transform=plain_transform).accuracy
    val_accuracy = evaluate(model, val_set, transform=plain_transform).accuracy
    augmentation_runs[name] = (model, losses, train_accuracy, val_accuracy)
    print(f"{name:<16} training accuracy {train_accuracy:.3f}, validation {val_accuracy:.3f}, "
          f"gap {train_accuracy - val_accuracy:+.3f}")

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
for name, (_, losses, train_accuracy, val_accuracy) in augmentation_runs.items():
    ax_loss.plot(np.arange(len(smooth(losses))) + 7, smooth(losses), label=name)
ax_loss.set(title="Training loss (on the batches as augmented)", xlabel="step",
            ylabel="loss (moving average of 15)")
ax_loss.legend()
ax_loss.grid(alpha=0.3)
names = list(augmentation_runs)
positions = np.arange(len(names))
ax_acc.bar(positions - 0.2, [augmentation_runs[n][2] for n in names], 0.4, label="training")
ax_acc.bar(positions + 0.2, [augmentation_runs[n][3] for n in names], 0.4, label="validation")
for pos, n in zip(positions, names):
    for offset, value in ((-0.2, augmentation_runs[n][2]), (0.2, augmentation_runs[n][3])):
        ax_acc.text(pos + offset, value + 0.005, f"{value:.1%}", ha="center", fontsize=9)
low = min(min(r[2], r[3]) for r in augmentation_runs.values())
ax_acc.set(xticks=positions, xticklabels=names, ylabel="accuracy (un-augmented images)",
           title=f"500 training images, {aug_steps} steps (axis from {max(low - 0.1, 0):.0%})",
           ylim=(max(low - 0.1, 0), 1.0))
ax_acc.legend(loc="upper right")
show(fig, "augmentation_effect")

plain_run, aug_run = augmentation_runs["no augmentation"], augmentation_runs["augmentation"]
# The augmented task is harder: its training loss stays higher on the same steps; and the
# train/validation gap is smaller.
claim(aug_run[1][-30:].mean() > plain_run[1][-30:].mean(),
      "augmentation keeps the training loss higher")
claim(aug_run[2] - aug_run[3] < plain_run[2] - plain_run[3],
      "augmentation narrows the train/validation accuracy gap")

# %% [markdown]
# With augmentation the training loss stays higher (each batch is a little harder) and the
# gap between training and validation accuracy is smaller: less of what the network learns
# is about the particular 500 images. Whether that also buys validation accuracy depends on
# the length of the run: early on, augmentation mostly slows learning down; in long runs,
# where a network without it memorises, it wins (`minicnn train` augments by default for
# this reason).
#
# ## 5. Accuracy against parameters and FLOPs
#
# `minicnn.models.profile(model, input_shape)` runs one image through a model and records,
# per layer, its output shape, parameters and FLOPs (multiply-adds × 2). Put this tutorial's
# networks side by side with LeNet-5 (trained here on the full training split, with the same
# optimiser, at a learning rate that suits it). The comparison is rough: the runs differ in
# length and data (the small ResNets saw only 500 images), and in fast mode none of them is
# trained to the end, so read it for the *axes* (parameters and FLOPs are exact) more than
# for the accuracies.

# %%
lenet = models.lenet5(rng=0)
lenet_losses = train(lenet, aug_steps, plain_transform, lr=0.02)
contenders = {
    "LeNet-5": (lenet, evaluate(lenet, val_set, transform=plain_transform).accuracy),
    f"plain, {len(conv_layers(plain))} convs": (plain, accuracy["plain"]),
    f"residual, {len(conv_layers(residual))} convs": (residual, accuracy["residual"]),
    "small ResNet": (plain_run[0], plain_run[3]),
    "small ResNet + augmentation": (aug_run[0], aug_run[3]),
}
rows = []
for name, (model, val_accuracy) in contenders.items():
    model.eval()
    layers = models.profile(model, (1, 28, 28))
    model.train()
    rows.append((name, models.count_parameters(model), sum(r.flops for r in layers),
                 val_accuracy))
print(f"{'model':<30} {'parameters':>10} {'MFLOPs':>8} {'val accuracy':>12}")
for name, params, flops, val_accuracy in rows:
    print(f"{name:<30} {params:>10,} {flops / 1e6:>8.2f} {val_accuracy:>12.3f}")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True, layout="constrained")
for ax, column, label in ((axes[0], 1, "parameters (log scale)"),
                          (axes[1], 2, "FLOPs per image (log scale)")):
    for (name, *values), marker in zip(rows, "osD^v"):
        ax.semilogx(values[column - 1], values[2], marker, ms=9, label=name)
    ax.set(xlabel=label)
    ax.margins(x=0.15, y=0.1)                       # keep the markers off the frame
    ax.grid(alpha=0.3, which="both")
axes[0].set(ylabel="validation accuracy", title="Accuracy against size")
axes[1].set(title="Accuracy against compute")
fig.legend(*axes[1].get_legend_handles_labels(), loc="outside lower center", ncol=5,
           fontsize=9)
fig.suptitle(f"Fashion-MNIST: {len(conv_layers(plain))}-conv nets {STEPS} steps, the others "
             f"{aug_steps} (small ResNets on 500 images)")
show(fig, "accuracy_vs_cost")
assert all(0.1 < val_accuracy <= 1 for *_, val_accuracy in rows)     # all above chance
best_name = max(rows, key=lambda row: row[3])[0]
print(f"most accurate here: {best_name}")

# %% [markdown]
# LeNet-5 has by far the most *parameters* (its fully connected layers hold 95 % of them) but
# needs the fewest FLOPs; the convolutional networks are the other way round: a few thousand
# weights, reused at every position of every image, cost millions of multiply-adds. Which
# matters depends on where the network runs: parameters are memory and download size, FLOPs
# are time and energy per image. Tutorial 11 takes the same measurements for the models in
# `minicnn.models`, and makes convolutions cheaper with depthwise-separable layers.
#
# **Why LeNet-5, the oldest and shallowest network here, wins** (it does in both modes when
# this was written; the cell above prints the winner of your run). The comparison is not
# about depth alone: LeNet-5 trained on the whole training split, the small ResNets on 500
# images, and data is what they lack; the 21-convolution nets have 8 channels per layer and
# half LeNet's steps, so after a few hundred steps they are still far from trained. Depth
# buys accuracy when there is enough data and training to fit the extra layers, and a task
# that needs them; 28×28 grayscale clothes, after a short run, need neither. Skip
# connections made deep networks *trainable* (section 3); they did not make them the right
# choice for every problem.
#
# ## Exercise (continued)
#
# 1. Make the plain network deeper (`BLOCKS = 20`) and run sections 2 and 3 again. What
#    happens to the spread of its gradient norms, and to its training curve? And the
#    residual one's?
# 2. Replace `RandomCrop(28, padding=2)` by `padding=4`, and add a vertical flip. Which of the
#    two helps on Fashion-MNIST, and which one hurts? Why?
