# %% [markdown]
# # 11 · Efficient architectures: depthwise-separable convolutions
#
# A standard 3x3 convolution mixes *space* (the 3x3 neighbourhood) and *channels* (all input
# channels) in one step. MobileNet's idea is to do the two separately: a **depthwise** 3x3
# convolution that filters each channel on its own (`groups = in_channels`), then a
# **pointwise** 1x1 convolution that mixes channels. You will:
#
# - build both versions of a layer and count their parameters and FLOPs with
#   `minicnn.models.summary` / `profile` / `count_parameters`;
# - **write** the depthwise convolution yourself (the exercise) and build the separable
#   layer from it;
# - see that a separable convolution is a standard one with a factorised kernel;
# - gradient-check it and time it (fewer FLOPs is not automatically less time);
# - compare the models in `minicnn.models` on MNIST: parameters and FLOPs against accuracy.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter, NullFormatter

from minicnn import gradcheck, models, nn, optim
from minicnn.data import DataLoader, default_transform, load_dataset
from minicnn.train import evaluate
from exercise_checks import check_depthwise_conv2d, library_depthwise_conv2d
from tutorial_tools import FAST, check, check_exercise, claim, exercise, loop_length, show

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Standard against depthwise-separable
#
# For $C_{in}$ input channels, $C_{out}$ output channels and a $k \times k$ kernel (biases left
# out, as they usually are before batch norm):
#
# - standard: $C_{out} \cdot C_{in} \cdot k^2$ weights;
# - depthwise: $C_{in} \cdot k^2$ (one $k \times k$ filter per channel), pointwise:
#   $C_{out} \cdot C_{in}$.
#
# The ratio is $1/C_{out} + 1/k^2$, and since every weight is used once per output pixel, the
# FLOPs shrink by the same factor.

# %%
c_in, c_out, k = 32, 64, 3
standard = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1, bias=False, rng=0))
separable = nn.Sequential(
    nn.Conv2d(c_in, c_in, k, padding=1, groups=c_in, bias=False, rng=0),   # depthwise
    nn.Conv2d(c_in, c_out, 1, bias=False, rng=0))                          # pointwise
print("standard:")
models.summary(standard, (c_in, 14, 14))
print("\ndepthwise-separable:")
models.summary(separable, (c_in, 14, 14))

print("depthwise weight shape:", separable[0].weight.shape)   # (32, 1, 3, 3): one filter each
param_ratio = models.count_parameters(separable) / models.count_parameters(standard)
flop_ratio = (sum(r.flops for r in models.profile(separable, (c_in, 14, 14)))
              / sum(r.flops for r in models.profile(standard, (c_in, 14, 14))))
print(f"parameters: {param_ratio:.3f} of standard, FLOPs: {flop_ratio:.3f}, "
      f"formula 1/C_out + 1/k^2 = {1 / c_out + 1 / k ** 2:.3f}")
assert np.isclose(param_ratio, 1 / c_out + 1 / k ** 2)
assert np.isclose(flop_ratio, 1 / c_out + 1 / k ** 2)

# %% [markdown]
# With `groups = in_channels`, output channel $c$ sees input channel $c$ only. Change one input
# channel and only that channel of the depthwise output moves:

# %%
x = rng.standard_normal((2, c_in, 14, 14), dtype=np.float32)
depthwise = separable[0]
bumped = x.copy()
bumped[:, 5] += 1.0
changed = np.abs(depthwise(bumped) - depthwise(x)).max(axis=(0, 2, 3)) > 0
print("output channels that changed:", np.flatnonzero(changed))
assert np.array_equal(np.flatnonzero(changed), [5])

# %% [markdown]
# ### Exercise: write the depthwise convolution
#
# Write `depthwise_conv2d(x, weight, stride, padding)`: `x` is `(N, C, H, W)`, `weight` is
# `(C, 1, kH, kW)` (the shape `Conv2d(C, C, k, groups=C)` stores: one `kH x kW` filter per
# channel), no bias; output channel `c` is channel `c` of `x` cross-correlated with filter `c`,
# and **nothing is summed across channels**. Stride and zero padding are the same along H and
# W, as in tutorial 02: `H_out = (H + 2 * padding - kH) // stride + 1`.
#
# Hint: the loop of tutorial 02 over output positions works, but there is a shorter one, over
# the kH·kW taps: tap `(a, b)` of every window is one strided slice of the padded input,
# `x_padded[:, :, a:a + stride*H_out:stride, b:b + stride*W_out:stride]`, and each channel
# multiplies it by its own weight `weight[c, 0, a, b]` (broadcast it as `(1, C, 1, 1)`). That
# is kH·kW multiply-adds per output value, which is why the layer is memory-bound.
#
# `check_depthwise_conv2d` compares your output with `Conv2d(groups=C)` on three cases (a
# 2x3 kernel and a stride that does not divide among them) and says which case is wrong and
# where. Until yours passes, the tutorial uses the library's. A worked solution is in
# `solutions/11_efficient_architectures.py`.

# %%
@exercise("11_efficient_architectures")
def depthwise_conv2d(x, weight, stride=1, padding=0):
    """Filter each channel with its own kernel; nothing is summed across channels.

    x (N, C, H, W), weight (C, 1, kH, kW) -> y (N, C, H_out, W_out), with
    H_out = (H + 2 * padding - kH) // stride + 1 (and W_out likewise).
    """
    # YOUR CODE HERE: pad, allocate y, add one strided slice per tap, scaled per channel.
    raise NotImplementedError("fill in depthwise_conv2d")


depthwise_forward = check_exercise("depthwise_conv2d", depthwise_conv2d, check_depthwise_conv2d,
                                   reference=library_depthwise_conv2d)

# %% [markdown]
# With it, the separable layer is your depthwise step followed by the pointwise one, which is
# a matrix product over the channels at every pixel (`einsum` writes it directly):

# %%
y_depthwise = depthwise_forward(x, separable[0].weight.data, stride=1, padding=1)
P = separable[1].weight.data[:, :, 0, 0]        # (C_out, C_in)
y_separable = np.einsum("oc,nchw->nohw", P, y_depthwise)
assert np.allclose(y_separable, separable(x), atol=1e-4)
print("pointwise(depthwise(x)) with your depthwise step == separable(x):", y_separable.shape)

# %% [markdown]
# **A separable convolution is a standard convolution with a constrained kernel.** Composing
# the two steps gives a full $C_{out} \times C_{in} \times k \times k$ kernel
# $W[o, c, i, j] = P[o, c] \cdot D[c, i, j]$, where $P$ is the pointwise and $D$ the depthwise
# weight: for each pair of channels, the 3x3 kernel is just a scaled copy of one shared filter.
# Load that product into the standard layer and the outputs agree.

# %%
D = separable[0].weight.data[:, 0]              # (C_in, k, k)
P = separable[1].weight.data[:, :, 0, 0]        # (C_out, C_in)
standard[0].weight.data[...] = P[:, :, None, None] * D[None]
assert np.allclose(standard(x), separable(x), atol=1e-4)
print("separable(x) == standard conv with kernel P[o, c] * D[c]: True")

# %% [markdown]
# Backward through both layers, checked in float64 (small sizes: every input element and
# weight is perturbed twice).

# %%
small = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4, rng=1), nn.Conv2d(4, 6, 1, rng=1))
result = gradcheck(small, rng.standard_normal((2, 4, 5, 5)))
print(result)
assert result.max_error < 1e-6

# %% [markdown]
# Now time one training step (forward and backward) of each on a batch of 32. The separable
# version does about 8x fewer FLOPs, but a depthwise convolution does only 9 multiply-adds per
# value it reads: it is limited by memory traffic, not arithmetic. minicnn's numba backend
# runs it as direct loops over each channel's plane (`minicnn.kernels.depthwise`), since a
# matrix product of one channel's 9 weights would be far too small to pay for itself, while
# the standard convolution's work is one large GEMM that runs near the machine's peak
# (tutorial 09). Expect a smaller gain than the FLOP count promises, or none.

# %%
def median_step_ms(net, inputs, repeats=5):
    grad = np.ones_like(net(inputs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net(inputs)
        net.backward(grad)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


batch = rng.standard_normal((32, c_in, 14, 14), dtype=np.float32)
ms_standard, ms_separable = median_step_ms(standard, batch), median_step_ms(separable, batch)
print(f"standard {ms_standard:.1f} ms, separable {ms_separable:.1f} ms per step: "
      f"{ms_standard / ms_separable:.1f}x faster for {1 / flop_ratio:.1f}x fewer FLOPs")

# %% [markdown]
# ## 2. Parameters and FLOPs against accuracy
#
# `minicnn.models` has three MNIST-sized networks: LeNet-5, the classic two-conv "MNIST CNN",
# and a small MobileNet-style `separable_cnn` (depthwise-separable blocks with batch norm).
# We count each one's parameters and FLOPs per image, train each with the same budget and
# compare test accuracy. (Fast mode: a short budget on a subset, so the numbers are rough.)
# The training uses the Adam optimiser, and `separable_cnn` batch normalisation: both are
# taken apart in tutorial 12 (optimisers) and 07 (batch norm); here they are just the
# settings that train these three networks well.

# %%
train_set = load_dataset("mnist", "train", limit=3000 if FAST else None)
test_set = load_dataset("mnist", "test", limit=300 if FAST else None)
transform = default_transform(train_set)
steps, batch_size = loop_length(full=600, fast=60), 16 if FAST else 32

results = {}
for name in ("lenet5", "mnist_cnn", "separable_cnn"):
    net = getattr(models, name)(rng=0)
    params = models.count_parameters(net)
    flops = sum(r.flops for r in models.profile(net, (1, 28, 28)))
    optimizer = optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                        transform=transform, rng=0)
    start, step = time.perf_counter(), 0
    while step < steps:
        for xb, yb in loader:
            loss = loss_fn(net(xb), yb)
            optimizer.zero_grad()
            net.backward(loss_fn.backward(), need_input_grad=False)
            optimizer.step()
            step += 1
            if step == steps:
                break
    seconds = time.perf_counter() - start
    accuracy = evaluate(net, test_set, batch_size=100, transform=transform).accuracy
    results[name] = dict(params=params, flops=flops, accuracy=accuracy, seconds=seconds)
    # A training step costs about 3x the forward FLOPs (forward, input gradient, weight
    # gradient), so this is the arithmetic rate the network achieved on this machine.
    results[name]["gflops_per_s"] = 3 * flops * batch_size * steps / seconds / 1e9
    print(f"{name:<14} {params:>8,} params  {flops / 1e6:6.2f} MFLOP/image  "
          f"accuracy {accuracy:.3f}  ({seconds:.1f} s for {steps} steps, about "
          f"{results[name]['gflops_per_s']:.1f} GFLOP/s)")
    claim(accuracy > 0.3, f"{name} is well above chance (0.1)")

# %%
fig, (ax_flops, ax_params) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
for name, r in results.items():
    for ax, key in ((ax_flops, "flops"), (ax_params, "params")):
        ax.scatter(r[key], 100 * r["accuracy"], s=80)
        ax.annotate(name, (r[key], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(6, 6))
ax_flops.set(xscale="log", xlabel="forward FLOPs per image (log scale)",
             ylabel="test accuracy (%)", title="Accuracy against compute")
ax_params.set(xscale="log", xlabel="parameters (log scale)",
              title="Accuracy against model size")
for ax in (ax_flops, ax_params):
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.3, y=0.2)
    ax.xaxis.set_major_formatter(EngFormatter())         # 100k, 1M, 10M
    ax.xaxis.set_minor_formatter(NullFormatter())
fig.suptitle(f"MNIST, {steps} training steps of {batch_size} images each")
fig.tight_layout()
show(fig, "accuracy_vs_cost")

# %% [markdown]
# Parameters and FLOPs measure different things. `separable_cnn` has about as few parameters
# as LeNet-5 but the most FLOPs: it keeps a 28x28 resolution with 32-64 channels through its
# first blocks, and FLOPs scale with the number of pixels while parameters do not. The MNIST
# CNN spends most of its parameters in one big fully connected layer. And accuracy after a
# short, fixed budget measures how *quickly* each network learns as much as how well it can do
# in the end; run without `MINICNN_FAST` for a longer, fairer comparison.
#
# **Time is not FLOPs.** Compare the seconds and the GFLOP/s printed above: `separable_cnn`
# takes several times longer than the MNIST CNN (on the machine these tutorials were written
# on, 60 s against 5.3 s for 600 steps) for about twice its FLOPs, so it runs at a fraction
# of the MNIST CNN's arithmetic rate. Its FLOPs are spread over ten thin layers, each
# followed by batch norm and ReLU: the depthwise ones do 9 multiply-adds per value they read,
# the 1x1 ones are small GEMMs, and batch norm and ReLU do almost no arithmetic at all, but
# every one of them reads and writes whole activation maps at 28x28 or 14x14. The time goes
# to memory traffic and to the fixed cost of each layer, not to multiply-adds. The MNIST
# CNN's FLOPs sit in two convolutions that are large GEMMs, which run near the machine's
# peak. FLOP counts predict time only between layers of similar arithmetic intensity
# (tutorial 09 sets FLOPs against the machine's GEMM peak); on mobile chips with fast
# depthwise kernels the gap is smaller, which is where MobileNet comes from.
# Separable convolutions pay off most in wide, deep networks, where the $1/C_{out} + 1/k^2$
# factor applies to almost every layer.
#
# ## Exercise
#
# How many weights does a depthwise-separable replacement for `Conv2d(128, 256, 3,
# bias=False)` have? Build it to check.

# %%
# Your answer here (the worked answer is filled in; try changing it)
answer = 128 * 3 * 3 + 256 * 128

replacement = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1, groups=128, bias=False, rng=0),
                            nn.Conv2d(128, 256, 1, bias=False, rng=0))
check("weights in the separable replacement", answer, models.count_parameters(replacement))
