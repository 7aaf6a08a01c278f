# %% [markdown]
# # 16 · Smaller networks: magnitude pruning and knowledge distillation
#
# A small machine (a laptop, a phone, a microcontroller) wants a network that is small on
# disk and fast to run. Two classic ways to get one from a network that is good but big:
#
# - **magnitude pruning**: set the weights of smallest magnitude to zero, then fine-tune the
#   rest with the zeros held at zero. Most of a trained network's weights turn out to be
#   dispensable;
# - **knowledge distillation** (Hinton, Vinyals, Dean, 2015): train a *small* network, the
#   student, to match the softened output probabilities of the big one, the teacher, as well
#   as the labels. The teacher's "this shirt looks a bit like a T-shirt, not at all like a
#   boot" carries more information per image than the label alone.
#
# On Fashion-MNIST, with the classic MNIST CNN (two 3x3 convolutions of 32 and 64 channels,
# 421,642 parameters) as the teacher, you will measure accuracy against sparsity,
# and accuracy against size (parameters, bytes) and *measured* inference time for teacher,
# pruned teacher and student. You write the pruning mask and the distillation loss with its
# gradient. Fast mode (`MINICNN_FAST=1`) trains for fewer steps and tests on fewer images.

# %%
import copy
import time

import matplotlib.pyplot as plt
import numpy as np

from minicnn import models, nn, optim
from minicnn.data import default_transform, load_dataset
from exercise_checks_small_machines import (check_distillation_loss, check_magnitude_masks,
                                            library_distillation_loss, library_magnitude_masks)
from tutorial_tools import FAST, check_exercise, claim, exercise, loop_length, show

start_time = time.perf_counter()
seed = 0            # every generator below derives from it: change it to see the spread
train_set = load_dataset("fashion-mnist", "train", limit=5000 if FAST else 12000)
test_set = load_dataset("fashion-mnist", "test", limit=1000 if FAST else 3000)
transform = default_transform(train_set)
train_x = transform(train_set.images.astype(np.float32) / 255)
test_x = transform(test_set.images.astype(np.float32) / 255)
train_y, test_y = train_set.labels, test_set.labels
print(train_set, test_set, sep="\n")

loss_fn = nn.CrossEntropyLoss()


def accuracy(model, x=test_x, y=test_y):
    """Test accuracy (eval mode, batches of 500)."""
    model.eval()
    predictions = np.concatenate([model(x[i:i + 500]).argmax(axis=1)
                                  for i in range(0, len(x), 500)])
    model.train()
    return float(np.mean(predictions == y))


def train(model, steps, lr, seed, after_step=None):
    """Adam, `steps` random batches of 64; `after_step()` runs after every update."""
    optimizer = optim.Adam(model.parameters(), lr=lr)
    batches = np.random.default_rng(seed)
    for _ in range(steps):
        rows = batches.integers(0, len(train_x), 64)
        loss_fn(model(train_x[rows]), train_y[rows])
        optimizer.zero_grad()
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()
        if after_step is not None:
            after_step()


teacher = models.mnist_cnn(rng=np.random.default_rng(seed))
train(teacher, steps=loop_length(full=600, fast=250), lr=1e-3, seed=seed + 1)
teacher_accuracy = accuracy(teacher)
print(f"teacher (MNIST CNN, {models.count_parameters(teacher):,} parameters): test accuracy "
      f"{teacher_accuracy:.3f}")
claim(teacher_accuracy > 0.75, "the teacher reaches 75 %")

# %% [markdown]
# ## 1. Magnitude pruning
#
# Rank the weights by magnitude $|w|$ and zero the smallest fraction $s$ (the **sparsity**).
# A mask per weight array remembers which survive. Two choices matter:
#
# - **global** (one ranking over all layers) or **per layer** (each layer loses the same
#   fraction). Global pruning takes more from the big, redundant fully connected layers and
#   less from the small first convolution, where every weight counts;
# - **exactly** $\mathrm{round}(s \cdot n)$ weights go. Comparing with a threshold
#   (`|w| > t`) keeps too few when several weights tie at the threshold, `>=` too many, so
#   sort instead (`np.argsort` on all magnitudes) and cut at the right count.
#
# Your part: `magnitude_masks(weights, sparsity)` takes a list of arrays and returns a list of
# boolean masks of the same shapes (True: keep), pruning globally. Biases are not pruned
# (they are few, and each one shifts a whole feature map).

# %%
@exercise("16_pruning_distillation")
def magnitude_masks(weights, sparsity):
    """Global magnitude pruning masks.

    weights: a list of arrays (any shapes); sparsity: the fraction to prune, in [0, 1].
    Returns a list of boolean arrays, one per array and of its shape: True for the weights
    kept. Exactly round(sparsity * total) weights are pruned, none larger in |w| than a kept one.
    """
    # YOUR CODE HERE
    raise NotImplementedError("fill in magnitude_masks")


masks_for = check_exercise("magnitude_masks", magnitude_masks, check_magnitude_masks,
                           reference=library_magnitude_masks)

# %% [markdown]
# **One-shot pruning**: prune the trained teacher and test it straight away, globally and per
# layer, over a range of sparsities. `prunable` are the weight arrays of the convolutions and
# the linear layers.

# %%
def prunable(model):
    """The weight Parameters of a model's Conv2d and Linear layers (biases excluded)."""
    return [layer.weight for layer in model.modules() if isinstance(layer, (nn.Conv2d,
                                                                            nn.Linear))]


def pruned_copy(model, masks):
    """A copy of `model` with the weights outside `masks` set to zero."""
    copy_of = copy.deepcopy(model)
    for parameter, mask in zip(prunable(copy_of), masks):
        parameter.data *= mask
    return copy_of


teacher_weights = [p.data for p in prunable(teacher)]
sparsities = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99]
one_shot = {"global": [], "per layer": []}
for sparsity in sparsities:
    global_masks = masks_for(teacher_weights, sparsity)
    layer_masks = [masks_for([w], sparsity)[0] for w in teacher_weights]
    one_shot["global"].append(accuracy(pruned_copy(teacher, global_masks)))
    one_shot["per layer"].append(accuracy(pruned_copy(teacher, layer_masks)))
print(f"{'sparsity':>9} {'global':>8} {'per layer':>10}")
for index, sparsity in enumerate(sparsities):
    print(f"{sparsity:>9.2f} {one_shot['global'][index]:>8.3f} "
          f"{one_shot['per layer'][index]:>10.3f}")
kept_per_layer = [int(mask.sum()) for mask in masks_for(teacher_weights, 0.9)]
print("weights kept per layer at global sparsity 0.9:",
      ", ".join(f"{k}/{w.size}" for k, w in zip(kept_per_layer, teacher_weights)))

# %% [markdown]
# **Pruning with fine-tuning**: after pruning, train a little more, and after *every* update
# multiply the weights by their masks again. Without that, the optimiser moves the zeros
# (their gradients are not zero) and the network is dense again after the first step; we
# check that on one run.

# %%
fine_tune_sparsities = [0.9, 0.98] if FAST else [0.9, 0.95, 0.98, 0.99]
fine_tune_steps = loop_length(full=120, fast=50)
fine_tuned = {}
for sparsity in fine_tune_sparsities:
    masks = masks_for(teacher_weights, sparsity)
    student_of_pruning = pruned_copy(teacher, masks)
    weights = prunable(student_of_pruning)

    def reapply_masks(weights=weights, masks=masks):
        for parameter, mask in zip(weights, masks):
            parameter.data *= mask              # the zeros stay zero

    train(student_of_pruning, fine_tune_steps, lr=5e-4, seed=seed + 2,
          after_step=reapply_masks)
    nonzero = sum(int(np.count_nonzero(p.data)) for p in weights)
    total = sum(p.data.size for p in weights)
    assert nonzero <= total - round(sparsity * total)       # still exactly as sparse
    fine_tuned[sparsity] = (accuracy(student_of_pruning), student_of_pruning)
    print(f"sparsity {sparsity:.2f}: one-shot {one_shot['global'][sparsities.index(sparsity)]:.3f}"
          f" -> fine-tuned {fine_tuned[sparsity][0]:.3f}  ({nonzero:,} of {total:,} weights "
          f"non-zero)")

regrown = pruned_copy(teacher, masks_for(teacher_weights, 0.9))
train(regrown, 1, lr=5e-4, seed=seed + 2)                    # one step, masks not re-applied
regrown_nonzero = sum(int(np.count_nonzero(p.data)) for p in prunable(regrown))
print(f"without re-applying the masks, one step later {regrown_nonzero:,} of "
      f"{sum(w.size for w in teacher_weights):,} weights are non-zero again")
# The masks kept 10 % of the weights; one Adam step moves every weight whose gradient is not
# zero, and most are not.
assert regrown_nonzero > 3 * 0.1 * sum(w.size for w in teacher_weights)

# %%
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(sparsities, one_shot["global"], "o-", label="one-shot, global")
ax.plot(sparsities, one_shot["per layer"], "s--", label="one-shot, per layer")
ax.plot(list(fine_tuned), [value[0] for value in fine_tuned.values()], "D-", ms=7,
        label=f"global + {fine_tune_steps} fine-tuning steps")
ax.axhline(teacher_accuracy, color="grey", ls=":", label="dense teacher")
ax.set(title="Accuracy against sparsity (MNIST CNN on Fashion-MNIST)",
       xlabel="sparsity (fraction of weights set to zero)", ylabel="test accuracy")
ax.grid(alpha=0.3)
ax.legend()
show(fig, "accuracy_vs_sparsity")

# %% [markdown]
# Half the weights go for free; with global pruning and a short fine-tuning most of the
# accuracy survives even when only 1 weight in 10 or 20 is left. Per-layer pruning falls off
# sooner: it strips the first convolution (288 weights, all useful) as hard as the 401,408
# weights of the first fully connected layer.

# %%
one_shot_at = {sparsity: (one_shot["global"][index], one_shot["per layer"][index])
               for index, sparsity in enumerate(sparsities)}
claim(one_shot_at[0.5][0] > teacher_accuracy - 0.02,
      "pruning half the weights globally, without fine-tuning, costs less than 2 points")
claim(fine_tuned[0.9][0] > teacher_accuracy - 0.03,
      "pruned to 90 % and fine-tuned, the teacher stays within 3 points of its accuracy")
claim(fine_tuned[0.98][0] > one_shot_at[0.98][0] + 0.02,
      "at 98 % sparsity fine-tuning wins back more than 2 points")
claim(one_shot_at[0.9][0] > one_shot_at[0.9][1] + 0.1,
      "at 90 % sparsity global pruning beats per-layer pruning by more than 10 points")

# %% [markdown]
# ## 2. Knowledge distillation
#
# The student is a much smaller CNN: two 3x3 convolutions of 4 and 8 channels and one linear
# layer. It learns from the teacher's logits $z^t$ through a **temperature** $T$:
# $p^t = \mathrm{softmax}(z^t / T)$ and $p^s = \mathrm{softmax}(z^s / T)$. $T > 1$ flattens
# the distributions, so the small probabilities (which wrong classes the teacher finds
# plausible) become visible. The soft-target loss is
#
# $$L_{\text{soft}} = T^2 \cdot \frac{1}{N} \sum_n \mathrm{KL}\left(p^t_n \,\|\, p^s_n\right)
#   = T^2 \cdot \frac{1}{N} \sum_n \sum_c p^t_{nc} \left(\ln p^t_{nc} - \ln p^s_{nc}\right),$$
#
# and its gradient with respect to the student's logits is
# $\frac{\partial L_{\text{soft}}}{\partial z^s} = \frac{T}{N}\left(p^s - p^t\right)$: the
# softmax-cross-entropy gradient of tutorial 06, with a $1/T$ from the chain rule through
# $z^s / T$. The factor $T^2$ undoes the two $1/T$ so the soft gradient keeps its size
# whatever the temperature, and can be mixed with the usual loss on the labels at a fixed
# weight.
#
# Your part: `distillation_loss(student_logits, teacher_logits, temperature)` returns
# `(loss, dstudent_logits)`. The check compares it with the formula (several temperatures,
# and logits in the thousands, so use the stable softmax) and your gradient with a float64
# central difference of your own loss.

# %%
@exercise("16_pruning_distillation")
def distillation_loss(student_logits, teacher_logits, temperature):
    """Soft-target loss and its gradient.

    student_logits, teacher_logits: (N, C) arrays; temperature: T > 0.
    Returns (loss, dstudent_logits): the float T^2 * mean_n KL(p_teacher || p_student) with
    p = softmax(logits / T), and its gradient with respect to student_logits, shape (N, C).
    """
    # YOUR CODE HERE
    raise NotImplementedError("fill in distillation_loss")


soft_loss = check_exercise("distillation_loss", distillation_loss, check_distillation_loss,
                           reference=library_distillation_loss)

# %% [markdown]
# The student is trained twice from the same initial weights on the same batches: **alone**
# (labels only) and **distilled** ($0.3 \cdot$ the label loss $+ 0.7 \cdot L_{\text{soft}}$ at
# $T = 4$). Both see only the first 1,000 training images (the *transfer set*): a small
# network on a small machine is often trained on little data, and that is where the
# teacher's soft targets are worth most, as a description of each image far richer than its
# label. The teacher's logits for those images are computed once, before training.

# %%
def small_student(seed):
    """A 2-convolution student: 4 and 8 channels of 3x3, then one linear layer."""
    rng = np.random.default_rng(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 7 * 7, 10, rng=rng))


teacher.eval()
transfer_size = 1000
teacher_logits = np.concatenate([teacher(train_x[i:i + 500])
                                 for i in range(0, transfer_size, 500)])
teacher.train()
temperature, soft_weight = 4.0, 0.7
student_steps = loop_length(full=400, fast=200)


def train_student(distilled, seed):
    """The student, trained alone or distilled; returns it and its loss on the labels."""
    student = small_student(seed + 3)
    optimizer = optim.Adam(student.parameters(), lr=3e-3)
    batches = np.random.default_rng(seed + 4)
    for _ in range(student_steps):
        rows = batches.integers(0, transfer_size, 64)
        logits = student(train_x[rows])
        loss_fn(logits, train_y[rows])
        grad = loss_fn.backward()
        if distilled:
            _, soft_grad = soft_loss(logits, teacher_logits[rows], temperature)
            grad = (1 - soft_weight) * grad + soft_weight * soft_grad
        optimizer.zero_grad()
        student.backward(grad.astype(np.float32), need_input_grad=False)
        optimizer.step()
    return student


student_alone = train_student(distilled=False, seed=seed)
student_distilled = train_student(distilled=True, seed=seed)
alone_accuracy, distilled_accuracy = accuracy(student_alone), accuracy(student_distilled)
print(f"student ({models.count_parameters(student_alone):,} parameters) alone: "
      f"{alone_accuracy:.3f}, distilled: {distilled_accuracy:.3f}; teacher {teacher_accuracy:.3f}")

# %% [markdown]
# ## 3. Accuracy against size and speed
#
# Size first. A dense float32 array costs 4 bytes per weight, zero or not. A pruned network
# only gets smaller on disk if it is *stored* sparsely, e.g. each non-zero weight as a 4-byte
# value and a 4-byte index (biases stay dense): that pays off below 50 % density.
#
# Then speed, measured here and now: the median of repeated forward passes of a batch of 256
# test images, the models taking turns so that a busy machine slows all of them alike.

# %%
def dense_bytes(model):
    return sum(p.data.nbytes for p in model.parameters())


def sparse_bytes(model):
    """Non-zero weights as (4-byte value, 4-byte index) pairs; biases dense."""
    weights = prunable(model)
    nonzero = sum(int(np.count_nonzero(p.data)) for p in weights)
    biases = sum(p.data.nbytes for p in model.parameters()) - sum(p.data.nbytes for p in weights)
    return nonzero * 8 + biases


pruned_teacher = fine_tuned[0.9][1]
contenders = {"teacher (dense)": teacher, "teacher pruned to 90 %, fine-tuned": pruned_teacher,
              "student alone": student_alone, "student distilled": student_distilled}
batch = test_x[:256]
repeats = loop_length(full=25, fast=9)
times = {name: [] for name in contenders}
for model in contenders.values():
    model.eval()
    model(batch)                                   # warm up (and compile) first
for _ in range(repeats):
    for name, model in contenders.items():
        tick = time.perf_counter()
        model(batch)
        times[name].append(time.perf_counter() - tick)
median_ms = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
for model in contenders.values():
    model.train()

print(f"{'':<36} {'accuracy':>8} {'parameters':>11} {'dense bytes':>12} {'sparse bytes':>13} "
      f"{'ms / 256 images':>16}")
rows = {}
for name, model in contenders.items():
    rows[name] = (accuracy(model), models.count_parameters(model), dense_bytes(model),
                  sparse_bytes(model), median_ms[name])
    print(f"{name:<36} {rows[name][0]:>8.3f} {rows[name][1]:>11,} {rows[name][2]:>12,} "
          f"{rows[name][3]:>13,} {rows[name][4]:>16.2f}")

# %%
fig, (ax_size, ax_speed) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
for name, (acc, _, dense, sparse, ms) in rows.items():
    stored = sparse if "pruned" in name else dense
    ax_size.scatter(stored / 1024, acc, s=60, label=name)
    ax_speed.scatter(ms, acc, s=60, label=name)
ax_size.set(xscale="log", title="Accuracy against stored size",
            xlabel="KiB (pruned: stored sparsely; others dense float32)", ylabel="test accuracy")
ax_speed.set(title="Accuracy against measured inference time",
             xlabel="ms per batch of 256 (median)", ylabel="test accuracy")
for ax in (ax_size, ax_speed):
    ax.grid(alpha=0.3, which="both")
ax_size.legend(fontsize=8)
show(fig, "accuracy_vs_size_and_speed")

# %% [markdown]
# What the table says:
#
# - The **student** has a hundredth of the teacher's parameters and runs faster (by how much
#   depends on the machine: it does about 1/50 of the teacher's arithmetic, but at this size
#   the fixed cost of each layer call weighs too), for a few points of accuracy.
# - **Distillation** moves the student little here, at the same size and speed: from -0.3 to
#   +1.9 points in our runs (seed 0: about +2 in full mode, -0.3 in fast mode, where the
#   teacher trained for fewer steps and is only 3 points better than the student). The
#   teacher's soft targets can only add what the teacher knows beyond the labels; distillation
#   pays when the teacher is much better than the student can become alone, and when it can
#   label images that have no labels (exercise 2).
# - The **pruned teacher** keeps most of the teacher's accuracy and is smaller *when stored
#   sparsely*, but it runs **no faster**: its zeros are still stored densely in the arrays
#   that the dense convolution and matrix kernels multiply, and a multiplication by zero costs
#   what any other does. Speed from sparsity needs sparse kernels (which skip the zeros but
#   pay for indexing, so gain only at high sparsity) or *structured* pruning: removing whole
#   channels or neurons, which makes the dense arrays themselves smaller.

# %%
# Sizes are exact. The times were measured live; the margins are wide (the student took about
# half the teacher's time on a busy 2-core machine, the pruned teacher 0.95-1.05 of it).
assert rows["student alone"][1] * 50 < rows["teacher (dense)"][1]
assert rows["teacher pruned to 90 %, fine-tuned"][3] < rows["teacher (dense)"][2] / 3
assert median_ms["student distilled"] < median_ms["teacher (dense)"]
assert median_ms["teacher pruned to 90 %, fine-tuned"] > 0.75 * median_ms["teacher (dense)"], \
    "a pruned network in dense arrays should not run much faster"

# %% [markdown]
# ## Summary
#
# | Method | Smaller on disk | Faster | Accuracy |
# |---|---|---|---|
# | Magnitude pruning, global, fine-tuned with masks re-applied | yes, if stored sparsely | not with dense kernels | most kept up to high sparsity |
# | Distillation into a small student | yes (fewer parameters) | yes | below the teacher, above the student alone (a little) |
#
# ## Exercise (continued)
#
# You wrote `magnitude_masks` and `distillation_loss` above. Now try: (1) distil at $T = 1$
# and at $T = 10$ and compare; (2) let the teacher label all the training images and train
# the distilled student on the soft targets of all of them, keeping the label loss on the
# first 1,000 only: how far does it get past the student alone? (3) prune the *student* to
# 50 %: how much does a network with no spare capacity lose? (4) structured pruning: remove
# the 16 output channels of the teacher's second convolution with the smallest weight norms
# (and the matching inputs of the next layer) and time it again.

# %%
print(f"tutorial 16 ran in {time.perf_counter() - start_time:.0f} s "
      f"({time.process_time():.0f} s of CPU)")
