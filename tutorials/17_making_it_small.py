# %% [markdown]
# # 17 · Making the network small: 8-bit integers instead of 32-bit floats
#
# Tutorial 16 made a network small by removing weights. Here every weight stays, but each
# one is stored in **one byte** instead of four, and the network runs on **integers only**:
# uint8 activations, int8 weights, int32 sums. This is *post-training quantization*, what a
# phone or a microcontroller runs: no float unit needed, a quarter of the memory traffic,
# and, on CPUs with 8-bit dot-product instructions (VNNI on x86, SDOT on ARM), four
# multiply-adds in the room of one float32 multiply-add.
#
# You will:
#
# - see what a **scale** and a **zero point** are (the affine map between reals and
#   integers), draw the grid they lay over real activations, and measure the round-trip
#   error: at most half a step inside the range, unbounded outside it (saturation);
# - measure why weights get a scale **per output channel**;
# - **calibrate** the activation ranges on images, and measure how it fails: an outlier,
#   too few images, the wrong images;
# - follow one convolution through **integer-only inference**: int32 accumulation, the bias
#   folded into int32, the fixed-point multiplier, requantization, ReLU as a clamp, max
#   pooling on integers;
# - measure what it costs (accuracy) and what it buys (bytes on disk, time on this machine),
#   and run both networks in ONNX Runtime side by side.
#
# You write `quantize` / `dequantize` and the integer requantization step. The network is
# LeNet-5 trained on MNIST here, as in tutorial 15; `minicnn.quant` does the rest. Fast mode
# (`MINICNN_FAST=1`) trains for fewer steps and tests on fewer images.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from minicnn import models, nn, optim, quant, serialize
from minicnn.data import default_transform, load_dataset
from minicnn.kernels import int8_reference
from minicnn.quant import arithmetic
from exercise_checks_quant import (check_dequantize, check_quantize, check_requantize,
                                   library_dequantize, library_quantize, library_requantize)
from tutorial_tools import (FAST, check_exercise, claim, exercise, loop_length, output_dir,
                            show)

start_time = time.perf_counter()
seed = 0            # every generator below derives from it: change it to see the spread
mnist = load_dataset("mnist", "train", limit=6000 if FAST else 12000)
mnist_test = load_dataset("mnist", "test", limit=2000 if FAST else 10000)
# A different data set, for the calibration that goes wrong in section 3.
fashion = load_dataset("fashion-mnist", "train", limit=512)
transform = default_transform(mnist)


def as_inputs(dataset):
    """uint8 images -> float32 (N, 1, 28, 28), normalised as the network was trained."""
    return transform(dataset.images.astype(np.float32) / 255)


train_x, train_y = as_inputs(mnist), mnist.labels
test_x, test_y = as_inputs(mnist_test), mnist_test.labels
fashion_x = as_inputs(fashion)          # clothes, normalised with MNIST's statistics
print(mnist, mnist_test, sep="\n")

loss_fn = nn.CrossEntropyLoss()


def accuracy(model, x=test_x, y=test_y):
    """Test accuracy of a float model or a QuantizedModel (put in eval mode), batches of 500."""
    model.eval()
    predictions = np.concatenate([model(x[i:i + 500]).argmax(axis=1)
                                  for i in range(0, len(x), 500)])
    return float(np.mean(predictions == y))


float_model = models.lenet5(rng=np.random.default_rng(seed))
optimizer = optim.Adam(float_model.parameters(), lr=2e-3)
batches = np.random.default_rng(seed + 1)
for _ in range(loop_length(full=600, fast=250)):
    rows = batches.integers(0, len(train_x), 64)
    loss_fn(float_model(train_x[rows]), train_y[rows])
    optimizer.zero_grad()
    float_model.backward(loss_fn.backward(), need_input_grad=False)
    optimizer.step()
float_accuracy = accuracy(float_model)         # eval mode from here on: it only infers
print(f"LeNet-5 ({models.count_parameters(float_model):,} parameters): MNIST test accuracy "
      f"{float_accuracy:.4f} on {len(test_y):,} images")
claim(float_accuracy > 0.93, "LeNet-5 reaches 93 % on MNIST")


def layer_outputs(model, x):
    """The output of every layer of a float Sequential for input ``x`` (a list)."""
    outputs = []
    for layer in model.children():
        x = layer(x)
        outputs.append(x)
    return outputs

# %% [markdown]
# ## 1. A scale and a zero point
#
# An 8-bit integer has 256 values. To stand for reals, they are laid on an evenly spaced grid
# by an **affine map**: two numbers, a **scale** $s$ (the real step between neighbouring
# integers) and a **zero point** $z$ (the integer that stands for the real 0):
#
# $$x \approx s\,(q - z), \qquad q = \mathrm{clamp}\big(\mathrm{round}(x / s) + z,\;
#   q_{\min},\; q_{\max}\big).$$
#
# - **uint8** has $[0, 255]$, **int8** $[-128, 127]$: the same 256 levels, placed differently.
# - **Asymmetric**: to cover a real range $[\ell, h]$, take $s = (h - \ell) / 255$ and
#   $z = \mathrm{round}(-\ell / s)$ for uint8: every level is used, and the range need not be
#   centred on 0. Activations after ReLU ($\ell = 0$, so $z = 0$) are the typical case.
# - **Symmetric**: $z = 0$ and $s = \max|x| / 127$ (int8): the integer product $q_w q_x$
#   then needs no zero-point correction, which is why **weights** are stored this way. For
#   values that are never negative it wastes half the levels.
#
# The range is always widened to include 0 and $z$ is an integer, so **the real 0 is
# represented exactly**: $q = z$. That matters twice in a CNN: a convolution's zero
# *padding* becomes the integer $z$ with no error at every border, and **ReLU** becomes
# $\max(q, z)$, a clamp on integers.
#
# Inside the range, rounding to the nearest level costs at most **half a step**, $s/2$.
# Outside it the integer **saturates** at $q_{\min}$ or $q_{\max}$ and the error grows
# without bound: that is the trade calibration makes in section 3.
#
# Your part: `quantize(x, scale, zero_point, dtype)` with `dtype` `np.uint8` or `np.int8`,
# and `dequantize(q, scale, zero_point)` returning float32. Round to the nearest integer
# (`np.rint`, ties to even as ONNX does; the checks avoid exact ties), **clip before the
# cast** (a cast of 300 to uint8 wraps around to 44), and compute `q - zero_point` in a type
# wide enough not to wrap (in uint8, `3 - 200` is 59).

# %%
@exercise("17_making_it_small")
def quantize(x, scale, zero_point, dtype):
    """Reals to 8-bit integers.

    x: float array, any shape; scale: float > 0; zero_point: int; dtype: np.uint8 or np.int8.
    Returns an array of dtype and x's shape: clip(round(x / scale) + zero_point, qmin, qmax).
    """
    # YOUR CODE HERE
    raise NotImplementedError("fill in quantize")


@exercise("17_making_it_small")
def dequantize(q, scale, zero_point):
    """8-bit integers back to reals.

    q: uint8 or int8 array, any shape; scale: float > 0; zero_point: int.
    Returns float32 scale * (q - zero_point), q's shape.
    """
    # YOUR CODE HERE
    raise NotImplementedError("fill in dequantize")


quantize_fn = check_exercise("quantize", quantize, check_quantize, reference=library_quantize)
dequantize_fn = check_exercise("dequantize", dequantize, check_dequantize,
                               reference=library_dequantize)

# %% [markdown]
# Real activations to quantize: the first convolution's outputs (before its ReLU, so they
# have both signs) on 64 test images. `arithmetic.choose_params(low, high, "uint8")` picks
# the asymmetric scale and zero point for their range; we quantize with your function, go
# back with `dequantize`, and measure the error.

# %%
conv1_out = layer_outputs(float_model, test_x[:64])[0]
values = conv1_out.ravel()
params = arithmetic.choose_params(float(values.min()), float(values.max()), "uint8")
scale, zero_point = params.scale, params.zero_point
print(f"conv1 outputs in [{values.min():.3f}, {values.max():.3f}]: scale {scale:.5f}, "
      f"zero point {zero_point}")
round_trip = dequantize_fn(quantize_fn(values, scale, zero_point, np.uint8), scale, zero_point)
error = values - round_trip
print(f"round-trip error inside the range: at most {np.abs(error).max():.5f} "
      f"= {np.abs(error).max() / scale:.3f} steps (half a step is {scale / 2:.5f})")
assert np.abs(error).max() <= scale / 2 * (1 + 1e-4)      # float32 rounding of x / scale
zero_q = quantize_fn(np.zeros(1), scale, zero_point, np.uint8)
assert zero_q[0] == zero_point and dequantize_fn(zero_q, scale, zero_point)[0] == 0.0
print(f"0.0 -> {int(zero_q[0])} -> {float(dequantize_fn(zero_q, scale, zero_point)[0])} "
      f"(exact)")

# The same values on the symmetric int8 grid, and post-ReLU values on both grids.
bound = float(np.abs(values).max())
symmetric_error = values - dequantize_fn(quantize_fn(values, bound / 127, 0, np.int8),
                                         bound / 127, 0)
after_relu = np.maximum(values, 0)
relu_u8 = arithmetic.choose_params(0.0, float(after_relu.max()), "uint8")
relu_i8_scale = float(after_relu.max()) / 127
rms = {
    "conv1, uint8 asymmetric": np.sqrt(np.mean(error ** 2)),
    "conv1, int8 symmetric": np.sqrt(np.mean(symmetric_error ** 2)),
    "after ReLU, uint8 (zero point 0)": np.sqrt(np.mean((after_relu - dequantize_fn(
        quantize_fn(after_relu, relu_u8.scale, relu_u8.zero_point, np.uint8), relu_u8.scale,
        relu_u8.zero_point)) ** 2)),
    "after ReLU, int8 symmetric": np.sqrt(np.mean((after_relu - dequantize_fn(
        quantize_fn(after_relu, relu_i8_scale, 0, np.int8), relu_i8_scale, 0)) ** 2)),
}
for name, value in rms.items():
    print(f"  RMS round-trip error, {name:<34} {value:.5f}")
# After ReLU nothing is negative: symmetric int8 leaves all its negative levels unused, so
# its step, and its error, is about twice uint8's.
assert rms["after ReLU, int8 symmetric"] > 1.5 * rms["after ReLU, uint8 (zero point 0)"]

# %%
fig, (ax_hist, ax_zoom, ax_error) = plt.subplots(1, 3, figsize=(16, 4), layout="constrained")
ax_hist.hist(values, bins=200, color="tab:blue", alpha=0.8)
ax_hist.set_yscale("log")
levels = dequantize_fn(np.arange(0, 256, 16, dtype=np.uint8), scale, zero_point)
for level in levels:
    ax_hist.axvline(level, color="grey", lw=0.6, alpha=0.6)
ax_hist.axvline(0.0, color="tab:red", lw=1.5, label=f"real 0 = level {zero_point}")
ax_hist.set(title="conv1 outputs and the uint8 grid (every 16th level)",
            xlabel="real value", ylabel="count (log)")
ax_hist.legend(fontsize=8)

window = (values > -4 * scale) & (values < 4 * scale)
zoom = np.sort(values[window])
ax_zoom.plot(zoom, zoom, color="grey", lw=0.8, label="x")
ax_zoom.step(zoom, dequantize_fn(quantize_fn(zoom, scale, zero_point, np.uint8), scale,
                                 zero_point), where="mid", color="tab:blue",
             label="dequantize(quantize(x))")
for level in dequantize_fn(np.arange(max(zero_point - 4, 0), min(zero_point + 5, 256))
                           .astype(np.uint8), scale, zero_point):
    ax_zoom.axhline(level, color="grey", lw=0.4, ls=":")
ax_zoom.set(title=f"close to 0: the levels, one step = {scale:.4f}", xlabel="x",
            ylabel="value after the round trip")
ax_zoom.legend(fontsize=8)

# A little beyond the calibrated range on both sides: there the error leaves the band.
wide = np.linspace(values.min() - 4 * scale, values.max() + 4 * scale, 6000).astype(np.float32)
wide_error = wide - dequantize_fn(quantize_fn(wide, scale, zero_point, np.uint8), scale,
                                  zero_point)
ax_error.plot(wide, wide_error / scale, lw=0.6)
ax_error.axvspan(values.min(), values.max(), color="tab:green", alpha=0.1,
                 label="calibrated range")
ax_error.axhline(0.5, color="tab:red", ls="--", lw=0.8, label="half a step")
ax_error.axhline(-0.5, color="tab:red", ls="--", lw=0.8)
ax_error.set(title="round-trip error: half a step inside, saturation outside",
             xlabel="x", ylabel="x - round trip (steps)", ylim=(-4.5, 4.5))
ax_error.legend(fontsize=8)
show(fig, "scale_and_zero_point")

# %% [markdown]
# ## 2. Weights: one scale per output channel
#
# Each output channel of a convolution (each row of a linear layer) is its own filter, with
# its own range of weights. One scale for the whole tensor must cover the largest channel,
# so the channels with small weights get only a few of the 255 levels. One scale **per
# output channel** costs 4 bytes per channel and fixes that. It is free at inference: the
# channel's scale only multiplies that channel's int32 sum (section 4).
#
# Measured on the trained network's second convolution (16 filters of 6x5x5) and its first
# linear layer (120 rows), symmetric int8 either way:

# %%
def symmetric_round_trip(weight, per_channel):
    """int8 symmetric quantization of ``weight`` (out, ...) and back, with one scale for the
    tensor or one per output channel; returns (round trip, scales)."""
    flat = weight.reshape(weight.shape[0], -1)
    bounds = np.abs(flat).max(axis=1) if per_channel else np.full(len(flat),
                                                                    np.abs(flat).max())
    scales = (bounds / 127).astype(np.float32)
    back = np.stack([dequantize_fn(quantize_fn(row, float(s), 0, np.int8), float(s), 0)
                     for row, s in zip(flat, scales)])
    return back.reshape(weight.shape), scales


def relative_error_per_channel(weight, back):
    flat, flat_back = weight.reshape(len(weight), -1), back.reshape(len(weight), -1)
    return np.linalg.norm(flat - flat_back, axis=1) / np.linalg.norm(flat, axis=1)


weight_errors = {}
for name, layer in (("conv2", float_model[3]), ("fc1", float_model[7])):
    w = layer.weight.data
    per_tensor, _ = symmetric_round_trip(w, per_channel=False)
    per_channel, channel_scales = symmetric_round_trip(w, per_channel=True)
    weight_errors[name] = (relative_error_per_channel(w, per_tensor),
                           relative_error_per_channel(w, per_channel),
                           np.abs(w.reshape(len(w), -1)).max(axis=1))
    total_tensor = np.linalg.norm(w - per_tensor) / np.linalg.norm(w)
    total_channel = np.linalg.norm(w - per_channel) / np.linalg.norm(w)
    ranges = weight_errors[name][2]
    print(f"{name} {tuple(w.shape)}: channel max |w| from {ranges.min():.3f} to "
          f"{ranges.max():.3f}; relative error per tensor {total_tensor:.4f}, per channel "
          f"{total_channel:.4f}")
    # A channel's own scale is never coarser than the tensor's.
    assert total_channel < total_tensor
    # minicnn.quant stores the weights exactly this way (int8 in [-127, 127], scale max/127).
    library_q, library_scales = arithmetic.quantize_weights_per_channel(w)
    assert np.allclose(library_scales, channel_scales, rtol=1e-6)
    ours = np.stack([quantize_fn(row, float(s), 0, np.int8)
                     for row, s in zip(w.reshape(len(w), -1), channel_scales)])
    assert np.abs(ours.astype(int) - library_q.reshape(len(w), -1)).max() <= 1   # ties only

# Quantize every weight of the float network (activations stay float) both ways: what does
# the weight rounding alone cost?
for per_channel in (False, True):
    rounded = models.lenet5(rng=0)
    rounded.load_state_dict(float_model.state_dict())
    for layer in rounded.children():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.weight.data[...] = symmetric_round_trip(layer.weight.data, per_channel)[0]
    print(f"int8 weights {'per channel' if per_channel else 'per tensor '}, float "
          f"activations: test accuracy {accuracy(rounded):.4f} (float {float_accuracy:.4f})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 4), layout="constrained")
for ax, (name, (tensor_err, channel_err, ranges)) in zip(axes, weight_errors.items()):
    order = np.argsort(ranges)
    channels = np.arange(len(ranges))
    ax.bar(channels - 0.2, tensor_err[order], 0.4, label="one scale per tensor")
    ax.bar(channels + 0.2, channel_err[order], 0.4, label="one scale per channel")
    twin = ax.twinx()
    twin.plot(channels, ranges[order], "k.", ms=4, label="channel max |w|")
    twin.set_ylabel("channel max |w|")
    ax.set(title=f"{name}: relative round-trip error per output channel",
           xlabel="output channel (sorted by its largest |w|)", ylabel="relative error")
    ax.legend(fontsize=8, loc="upper right")
show(fig, "per_channel_weights")

# %% [markdown]
# The channels with the smallest weights lose most under one shared scale: their error is
# largest on the left of each plot, and per-channel scales flatten it. In LeNet-5's
# convolutions the channels' ranges differ by less than 2x, so the gain is modest; in its
# first linear layer, and in networks with batch norm folded into the weights, they differ
# far more. The accuracy with rounded weights alone barely moves either way: 8 bits are
# plenty for *weights*. The activations are where the care goes.
#
# ## 3. Calibration: choosing the activation ranges
#
# A weight's range is known; an activation's depends on the input. **Calibration** runs the
# float network on a few hundred representative images (training images, normalised as in
# training) and records, for every tensor that will be stored in uint8, a range $[\ell, h]$:
#
# - **min/max**: the smallest and largest value seen. Nothing saturates on those images, but
#   one rare large value stretches the step for all the others;
# - **percentile**: the 0.01th and 99.99th percentiles: the extreme 0.01 % saturate, and
#   everything else gets a finer step;
# - **entropy** (TensorRT's method): the clipping point whose 255-level histogram is closest
#   to the real one in KL divergence.
#
# First, by hand, on one tensor: the second convolution's outputs after ReLU on 256
# calibration images, plus 20 outliers at 4x the largest value: real networks have such
# rare large activations (an unusual image, a channel that fires hard on a few inputs);
# LeNet-5 on MNIST hardly does, so we add them by hand.

# %%
calibration_rng = np.random.default_rng(seed + 2)
calibration_rows = calibration_rng.choice(len(train_x), 512 if not FAST else 256,
                                          replace=False)
calibration_x = train_x[calibration_rows]
relu2 = layer_outputs(float_model, calibration_x[:256])[4].ravel()
outliers = np.full(20, 4 * relu2.max(), dtype=np.float32)
recorded = np.concatenate([relu2, outliers])
test_relu2 = layer_outputs(float_model, test_x[:256])[4].ravel()
observed = {"min/max": (float(recorded.min()), float(recorded.max())),
            "percentile 99.99": tuple(float(v) for v in np.percentile(recorded,
                                                                      [0.01, 99.99]))}
calibration_rms = {}
for name, (low, high) in observed.items():
    p = arithmetic.choose_params(low, high, "uint8")
    back = dequantize_fn(quantize_fn(test_relu2, p.scale, p.zero_point, np.uint8), p.scale,
                         p.zero_point)
    calibration_rms[name] = float(np.sqrt(np.mean((test_relu2 - back) ** 2)))
    saturated = float(np.mean(test_relu2 > high))
    print(f"{name:>17}: range [{low:.3f}, {high:.3f}], step {p.scale:.4f}; on test images: "
          f"RMS error {calibration_rms[name]:.4f}, {100 * saturated:.3f} % of values saturate")
# The 20 outliers are 0.005 % of the 409,600 values, fewer than the 0.01 % the percentile
# cuts: it ignores them; min/max stretches its range to reach them.
assert calibration_rms["percentile 99.99"] < 0.5 * calibration_rms["min/max"]

# %% [markdown]
# Now the whole network, through `minicnn.quant.quantize(model, calibration_images,
# method=...)`: it records the input's range and every conv/linear output's (after its ReLU),
# and builds the integer layers. Test accuracy alone is a coarse instrument here (LeNet-5 is
# confident on most digits, and a small error rarely changes its answer), so we also
# compare every int8 network with the float one on the test set: how often they **agree**
# on the class, and the **relative logit error** $\lVert z_{\text{int8}} - z_{\text{float}}
# \rVert / \lVert z_{\text{float}} \rVert$. Measured for each method, for calibration sets of
# 1 image to all of them, and for calibrations on the **wrong data**: 512 Fashion-MNIST images
# (clothes, normalised exactly like the digits) and 512 images of Gaussian noise.

# %%
float_logits = np.concatenate([float_model(test_x[i:i + 500])
                               for i in range(0, len(test_x), 500)])


def against_float(qmodel):
    """(test accuracy, agreement with the float model's class, relative logit error)."""
    logits = np.concatenate([qmodel(test_x[i:i + 500]) for i in range(0, len(test_x), 500)])
    return (float(np.mean(logits.argmax(1) == test_y)),
            float(np.mean(logits.argmax(1) == float_logits.argmax(1))),
            float(np.linalg.norm(logits - float_logits) / np.linalg.norm(float_logits)))


quantized, measured = {}, {}
for method in ("minmax", "percentile", "entropy"):
    quantized[method] = quant.quantize(float_model, calibration_x, method=method)
    measured[f"{method}, {len(calibration_x)} MNIST images"] = against_float(quantized[method])
calibration_sizes = [1, 4, 16, 64, len(calibration_x)]
for n in calibration_sizes[:-1]:
    measured[f"minmax, {n} MNIST images"] = against_float(
        quant.quantize(float_model, calibration_x[:n], method="minmax"))
wrong_data = quant.quantize(float_model, fashion_x, method="minmax")
measured[f"minmax, {len(fashion_x)} Fashion-MNIST images"] = against_float(wrong_data)
noise = np.random.default_rng(seed + 3).standard_normal(fashion_x.shape).astype(np.float32)
measured[f"minmax, {len(noise)} noise images"] = against_float(
    quant.quantize(float_model, noise, method="minmax"))

print(f"float: test accuracy {float_accuracy:.4f}")
print(f"{'int8, calibrated with':<40} {'accuracy':>8} {'same class':>11} {'logit error':>12}")
for name, (acc_q, agreement, logit_error) in measured.items():
    print(f"{name:<40} {acc_q:>8.4f} {agreement:>11.4f} {logit_error:>12.4f}")
int8_accuracy = {method: measured[f"{method}, {len(calibration_x)} MNIST images"][0]
                 for method in quantized}
all_images = measured[f"minmax, {len(calibration_x)} MNIST images"]
by_size = [measured[f"minmax, {n} MNIST images"][2] for n in calibration_sizes]
fashion_error = measured[f"minmax, {len(fashion_x)} Fashion-MNIST images"][2]
noise_error = measured[f"minmax, {len(noise)} noise images"][2]
good_ranges = [layer.output.scale * 255 for layer in quantized["minmax"].layers
               if getattr(layer, "output", None) is not None]
wrong_ranges = [layer.output.scale * 255 for layer in wrong_data.layers
                if getattr(layer, "output", None) is not None]
print("activation ranges (high - low) per layer, calibrated on digits:  ",
      ", ".join(f"{r:.1f}" for r in good_ranges))
print("                                          calibrated on clothes: ",
      ", ".join(f"{r:.1f}" for r in wrong_ranges))

# %%
fig, (ax_hist, ax_sizes) = plt.subplots(1, 2, figsize=(14, 4), layout="constrained")
ax_hist.hist(recorded, bins=300, color="tab:blue", alpha=0.8)
ax_hist.set_yscale("log")
for (name, (low, high)), colour in zip(observed.items(), ("tab:red", "tab:green")):
    ax_hist.axvline(high, color=colour, lw=1.5, label=f"{name}: high = {high:.2f}")
ax_hist.set(title="conv2 after ReLU, with 20 outliers: where each method puts the top",
            xlabel="activation", ylabel="count (log)")
ax_hist.legend(fontsize=8)
ax_sizes.plot(calibration_sizes, by_size, "o-", label="min/max on n MNIST images")
ax_sizes.axhline(fashion_error, color="tab:red", ls="--",
                 label=f"min/max on {len(fashion_x)} Fashion-MNIST images")
ax_sizes.axhline(noise_error, color="tab:purple", ls=":",
                 label=f"min/max on {len(noise)} noise images")
ax_sizes.set(xscale="log", yscale="log", title="int8 against float: relative logit error",
             xlabel="calibration images", ylabel="relative logit error (test set)")
ax_sizes.legend(fontsize=8)
show(fig, "calibration")

# %% [markdown]
# What calibration taught us (your numbers are printed above; ours are from a full run):
#
# - **Accuracy barely moves**, whatever we do short of calibrating on noise (float 96.95 %;
#   int8 96.97 % with min/max on 512 images, 96.78 % with one image, 96.10 % with noise):
#   LeNet-5 on MNIST has wide margins between its first and second choice. The logit error
#   is where the differences show, and a network with narrower margins (harder data, more
#   classes) turns them into lost accuracy.
# - On clean data min/max does best here (logit error 0.5 % against 0.8 % for percentile and
#   1.1 % for entropy): LeNet-5's activations have no wild outliers, so cutting the tail
#   saturates real values and gains little step. Percentile and entropy pay off where a few
#   values are far out, as in the histogram, and in networks with long-tailed activations.
# - **A few images are not enough**: their ranges are too narrow for the next image, whose
#   larger activations saturate; one image gave 15 times the error of 512 (8 % against
#   0.5 %), and a few dozen already come close.
# - **The wrong data gives the wrong ranges**: clothes drive the digit network's later layers
#   to smaller values than digits do (the ranges printed above), so on digits those layers
#   saturate: as bad as calibrating on one image. Noise, nothing like what the network was
#   trained on, is worst of all. Calibrate on what the network will see.

# %%
claim(all_images[0] > float_accuracy - 0.01,
      "int8 with min/max calibration stays within 1 point of float")
claim(by_size[0] > 2 * all_images[2],
      "calibrating on one image gives more than twice the logit error of all of them")
claim(fashion_error > 2 * all_images[2],
      "calibrating on clothes gives more than twice the logit error of calibrating on digits")
claim(noise_error > fashion_error, "noise is a worse calibration set than clothes")
claim(all_images[2] < min(measured[f"{method}, {len(calibration_x)} MNIST images"][2]
                          for method in ("percentile", "entropy")),
      "on clean MNIST calibration images min/max gives the smallest logit error")

# %% [markdown]
# ## 4. Integer-only inference, one layer by hand
#
# Take the first convolution, with input $x \approx s_x (q_x - z_x)$ (uint8) and weights
# $w \approx s_w[c]\, q_w$ (int8, symmetric, one scale per output channel $c$). Its output
# is
#
# $$y[c] = b[c] + \sum w\,x = b[c] + s_x\, s_w[c] \sum q_w\,(q_x - z_x).$$
#
# - The sum $\mathrm{acc} = \sum q_w (q_x - z_x)$ is computed in **int32**: each product
#   fits in 16 bits, and 25 of them (LeNet's 5x5 on one channel) or 150 (6 channels) stay
#   far inside 32 bits. Padding is $z_x$, which adds exactly nothing.
# - The **bias** is stored as int32 in the same units, $q_b = \mathrm{round}(b / (s_x s_w))$,
#   and added to the sum: no float anywhere.
# - The output is stored in uint8 with its own scale and zero point $(s_y, z_y)$:
#   $q_y = z_y + \mathrm{round}(M\,\mathrm{acc})$ with $M = s_x s_w[c] / s_y$, a real
#   number below 1. An integer machine represents it as a **fixed-point multiplier**:
#   $M \approx m \cdot 2^{-(31 + \text{shift})}$ with a 31-bit integer $m$
#   (`arithmetic.quantize_multiplier`). Then $M\,\mathrm{acc}$ is one int64 product and one
#   right shift, with half the divisor added first so that the shift rounds to nearest.
# - **ReLU** is $\max(q_y, z_y)$: a clamp at the zero point. After a ReLU the calibrated
#   range starts at 0, so $z_y = 0$ and the clamp is the uint8 saturation itself: free.
# - **Max pooling** works on the integers directly: quantization is monotonic (a larger real
#   never gets a smaller integer), so the largest integer in a window is the integer of the
#   largest real, and no requantization is needed.
#
# First the fixed-point multiplier of channel 0:

# %%
qmodel = quantized["minmax"]
conv = qmodel.layers[0]
print(qmodel)
print(f"conv1: input scale {conv.input.scale:.5f}, zero point {conv.input.zero_point}; "
      f"output scale {conv.output.scale:.5f}, zero point {conv.output.zero_point}; "
      f"weights {conv.weight.dtype}, scales {np.round(conv.weight_scale, 5)}")
real_multiplier = conv.input.scale * float(conv.weight_scale[0]) / conv.output.scale
multiplier, shift = arithmetic.quantize_multiplier(real_multiplier)
represented = multiplier * 2.0 ** -(31 + shift)
print(f"M = {real_multiplier:.10f} ~= {multiplier} * 2^-(31 + {shift}) = {represented:.10f} "
      f"(relative error {abs(represented - real_multiplier) / real_multiplier:.1e})")
assert abs(represented - real_multiplier) <= real_multiplier * 2.0 ** -30
assert (multiplier, shift) == (conv.multiplier[0], conv.shift[0])

# %% [markdown]
# The int32 accumulators of the first convolution for 8 test images, in NumPy: the input
# centred on its zero point (so the padding is 0), every 5x5 window as a view
# (`sliding_window_view`), products summed in int32, plus the int32 bias. They equal
# minicnn's loop kernel (`minicnn.kernels.int8_reference.conv2d_int8`) exactly.

# %%
images = test_x[:8]
xq = qmodel.quantize_input(images)                       # uint8 (8, 1, 28, 28)
top, bottom, left, right = conv.padding
centred = np.pad(xq.astype(np.int32) - conv.input.zero_point,
                 ((0, 0), (0, 0), (top, bottom), (left, right)))     # padding: real 0 = 0
windows = sliding_window_view(centred, conv.weight.shape[2:], axis=(2, 3))  # (8,1,28,28,5,5)
acc = np.einsum("nchwij,ocij->nohw", windows, conv.weight.astype(np.int32))
acc = (acc + conv.bias.reshape(1, -1, 1, 1)).astype(np.int32)
print(f"accumulators: {acc.dtype} {acc.shape}, from {acc.min():,} to {acc.max():,}")
assert np.array_equal(acc, int8_reference.conv2d_int8(xq, conv.input.zero_point, conv.weight,
                                                      conv.bias, conv.stride, conv.padding))

# %% [markdown]
# Your part: `requantize(acc, multiplier, shift, zero_point)` takes int32 accumulators (any
# shape) and one channel's `multiplier` and `shift`, and returns uint8
#
# $$q = \mathrm{clip}\big(z + \lfloor (\mathrm{acc} \cdot m + 2^{30 + \text{shift}}) /
#   2^{31 + \text{shift}} \rfloor,\; 0,\; 255\big)$$
#
# in integer arithmetic: the product in **int64** (an int32 times a 31-bit multiplier needs
# up to 62 bits), then `>> (31 + shift)` after adding **half the divisor** (a bare `>>`
# rounds toward minus infinity, a bias of half a step on every value), then the zero point,
# then the clamp to $[0, 255]$ before the cast.

# %%
@exercise("17_making_it_small")
def requantize(acc, multiplier, shift, zero_point):
    """int32 accumulators to uint8, integers only.

    acc: int32 array, any shape; multiplier: int in [2**30, 2**31); shift: int >= 0;
    zero_point: int. Returns uint8 clip(zero_point + round(acc * multiplier /
    2**(31 + shift)), 0, 255), acc's shape.
    """
    # YOUR CODE HERE
    raise NotImplementedError("fill in requantize")


requantize_fn = check_exercise("requantize", requantize, check_requantize,
                               reference=library_requantize)

# %% [markdown]
# Requantize each channel with its own multiplier, clamp at the zero point for the fused
# ReLU, max-pool on the integers, and compare: with minicnn's integer layers, and with the
# float network.

# %%
q_conv = np.stack([requantize_fn(acc[:, c], int(conv.multiplier[c]), int(conv.shift[c]),
                                 conv.output.zero_point) for c in range(acc.shape[1])], axis=1)
q_relu = np.maximum(q_conv, np.uint8(conv.output.zero_point))          # ReLU: a clamp
assert np.array_equal(q_relu, int8_reference.requantize(acc, conv.multiplier, conv.shift,
                                                        conv.output.zero_point,
                                                        conv.output.zero_point))
n, c, h, w = q_relu.shape
q_pool = q_relu.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))   # 2x2 max on uint8
first_two = quant.QuantizedModel(qmodel.layers[:2], qmodel.input_shape, backend="reference")
assert np.array_equal(q_pool, first_two.forward_int(xq))               # minicnn's layers

float_pool = layer_outputs(float_model, images)[2]
pool_error = dequantize_fn(q_pool, conv.output.scale, conv.output.zero_point) - float_pool
print(f"after conv1 + ReLU + max pool: integer path against float, at most "
      f"{np.abs(pool_error).max():.4f} = {np.abs(pool_error).max() / conv.output.scale:.2f} "
      f"output steps; RMS {np.sqrt(np.mean(pool_error ** 2)) / conv.output.scale:.2f} steps, "
      f"mean {np.mean(pool_error) / conv.output.scale:+.3f} steps")

# Max pooling commutes with quantization: pool then quantize == quantize then pool.
float_relu = layer_outputs(float_model, images)[1]
quantize_then_pool = quantize_fn(float_relu, conv.output.scale, conv.output.zero_point,
                                 np.uint8).reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
pool_then_quantize = quantize_fn(float_pool, conv.output.scale, conv.output.zero_point,
                                 np.uint8)
assert np.array_equal(quantize_then_pool, pool_then_quantize)
print("max pool of the quantized values == quantized max pool: True")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), layout="constrained")
channel = int(np.argmax(np.abs(float_pool[0]).sum(axis=(1, 2))))
shown = {"input image": images[0, 0],
         f"float: conv1 + ReLU + pool, channel {channel}": float_pool[0, channel],
         "int8 path, dequantized": dequantize_fn(q_pool[0, channel], conv.output.scale,
                                                 conv.output.zero_point),
         "int8 - float (in output steps)": pool_error[0, channel] / conv.output.scale}
for ax, (title, image) in zip(axes, shown.items()):
    cmap = "coolwarm" if "steps" in title else "gray"
    limit = max(float(np.abs(image).max()), 1e-9)
    artist = ax.imshow(image, cmap=cmap, vmin=-limit if "steps" in title else None,
                       vmax=limit if "steps" in title else None)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.colorbar(artist, ax=ax, shrink=0.8)
show(fig, "integer_conv")

# %% [markdown]
# The integer path lands within a step or two of the float one: the input, the weights and
# the output were each rounded once. Their mean is close to 0 (printed above): rounding to
# nearest is unbiased, which a shift without its rounding term is not (exercise 3 at the
# end). Every other layer of the network does the same; the last layer keeps its int32
# accumulators, which `QuantizedModel` turns into float logits (`acc * s_x * s_w[c]`) so
# its output can be compared with the float model's.
#
# ## 5. What it costs and what it buys
#
# Accuracy we measured above. Size: the float model as minicnn saves it (`.npz` of float32
# arrays) against the quantized one (`quant.save`: int8 weights, int32 biases, scales, zero
# points, multipliers). Speed: measured here and now, the median of repeated forward passes
# at batch 64 and batch 1, the two models taking turns so that a busy machine slows both
# alike. minicnn's int8 kernels are compiled the first time they run (cached afterwards);
# the warm-up call below takes that.

# %%
folder = output_dir()
float_path = serialize.save(float_model, folder / "lenet5.npz")
int8_path = quant.save(qmodel, folder / "lenet5.int8.npz")
float_bytes, int8_bytes = Path(float_path).stat().st_size, Path(int8_path).stat().st_size
print(f"float32 file {float_bytes:,} bytes, int8 file {int8_bytes:,} bytes: "
      f"{float_bytes / int8_bytes:.2f}x smaller")
# The weights are a quarter of the size; biases (int32), scales and multipliers add a little.
assert int8_bytes < float_bytes / 3
reloaded = quant.load(int8_path)
assert np.array_equal(reloaded(test_x[:64]), qmodel(test_x[:64]))

repeats = loop_length(full=40, fast=10)
timings = {}
for batch_size in (64, 1):
    batch = test_x[:batch_size]
    contenders = {"float": float_model, "int8": qmodel}
    for model in contenders.values():
        model(batch)                                   # warm up (and compile) first
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, model in contenders.items():
            tick = time.perf_counter()
            model(batch)
            times[name].append(time.perf_counter() - tick)
    for name, values in times.items():
        timings[(name, batch_size)] = 1e3 * float(np.median(values))
    print(f"batch {batch_size:>2}: float {timings[('float', batch_size)]:.3f} ms, int8 "
          f"{timings[('int8', batch_size)]:.3f} ms (median of {repeats}; this machine, now)")

# %%
fig, (ax_acc, ax_size, ax_time) = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
names = ["float"] + [f"int8 {method}" for method in int8_accuracy]
values_acc = [float_accuracy] + list(int8_accuracy.values())
ax_acc.bar(names, values_acc, color=["tab:grey", "tab:blue", "tab:orange", "tab:green"])
for index, value in enumerate(values_acc):
    ax_acc.text(index, value, f"{100 * value:.2f} %", ha="center", va="bottom", fontsize=8)
ax_acc.set(ylim=(min(values_acc) - 0.01, max(values_acc) + 0.004),
           title="test accuracy (note the axis)", ylabel="accuracy")
ax_acc.tick_params(axis="x", labelsize=8)
ax_size.bar(["float32", "int8"], [float_bytes / 1024, int8_bytes / 1024],
            color=["tab:grey", "tab:blue"])
ax_size.set(title="file size", ylabel="KiB")
positions = np.arange(2)
ax_time.bar(positions - 0.2, [timings[("float", 64)], timings[("float", 1)]], 0.4,
            label="float", color="tab:grey")
ax_time.bar(positions + 0.2, [timings[("int8", 64)], timings[("int8", 1)]], 0.4,
            label="int8", color="tab:blue")
ax_time.set(xticks=positions, xticklabels=["batch 64", "batch 1"], yscale="log",
            title="forward time here (median)", ylabel="ms")
ax_time.legend(fontsize=8)
show(fig, "cost_and_gain")

# %% [markdown]
# ## 6. The same two networks in ONNX Runtime
#
# Both can be exported to ONNX: the float one with `minicnn.onnx.export`, the int8 one with
# `minicnn.quant.export_onnx` as a **QDQ** graph: QuantizeLinear / DequantizeLinear nodes
# around each Conv and Gemm, holding the same int8 weights, per-channel scales, int32 biases
# and activation scales and zero points. ONNX Runtime can run that graph two ways:
#
# - **as written** (graph optimisations off): dequantize, a float Conv, quantize. This
#   simulates the integer network in float and should agree with minicnn's int8 model up to
#   float rounding;
# - **fused** (its default): it recognises each DQ -> Conv -> Q pattern and runs its own
#   integer kernel (QLinearConv, a uint8 x int8 GEMM) in its place.
#
# We run the float graph and both int8 variants on the test set: outputs against minicnn's,
# predictions compared, times measured.
#
# This section needs the `onnx` and `onnxruntime` packages: `pip install -e ".[onnx]"` and
# `pip install onnxruntime`. Without them it is skipped with a note.

# %%
try:
    import onnx  # noqa: F401 - only checking that it is there
    import onnxruntime
except ImportError:
    onnxruntime = None
    print("[skipped] ONNX section: needs onnx and onnxruntime -- pip install -e \".[onnx]\" "
          "and pip install onnxruntime")

if onnxruntime is not None:
    from minicnn import onnx as minicnn_onnx

    onnx_files = {"float": minicnn_onnx.export(float_model, folder / "lenet5.onnx", (1, 28, 28)),
                  "int8": quant.export_onnx(qmodel, folder / "lenet5.int8.onnx", (1, 28, 28))}

    def session(path, optimise):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3             # no warnings about the fusions it makes
        if not optimise:
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        return onnxruntime.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    sessions = {"float": session(onnx_files["float"], True),
                "int8, as written": session(onnx_files["int8"], False),
                "int8, fused (default)": session(onnx_files["int8"], True)}

    def run_onnx(name, x):
        return sessions[name].run(None, {sessions[name].get_inputs()[0].name: x})[0]

    def in_batches(fn):
        return np.concatenate([fn(test_x[i:i + 500]) for i in range(0, len(test_x), 500)])

    ours = {"float": float_logits, "int8": in_batches(qmodel)}
    onnx_rows = {}
    for name in sessions:
        logits = in_batches(lambda x, name=name: run_onnx(name, x))
        mine = ours["float" if name == "float" else "int8"]
        onnx_rows[name] = (Path(onnx_files[name.split(",")[0]]).stat().st_size,
                           float(np.abs(logits - mine).max()),
                           float(np.mean(logits.argmax(1) == mine.argmax(1))),
                           float(np.mean(logits.argmax(1) == test_y)))
    ort_times = {}
    for batch_size in (64, 1):
        batch = test_x[:batch_size]
        for name in sessions:
            run_onnx(name, batch)                 # warm up
        samples = {name: [] for name in sessions}
        for _ in range(repeats):
            for name in sessions:
                tick = time.perf_counter()
                run_onnx(name, batch)
                samples[name].append(time.perf_counter() - tick)
        for name in sessions:
            ort_times[(name, batch_size)] = 1e3 * float(np.median(samples[name]))
    print(f"{'ONNX Runtime':<22} {'file bytes':>10} {'max |logit diff|':>17} "
          f"{'same class':>11} {'accuracy':>9} {'ms, batch 64':>13} {'ms, batch 1':>12}")
    for name, (size, difference, agreement, onnx_accuracy) in onnx_rows.items():
        print(f"{name:<22} {size:>10,} {difference:>17.4f} {agreement:>11.4f} "
              f"{onnx_accuracy:>9.4f} {ort_times[(name, 64)]:>13.3f} "
              f"{ort_times[(name, 1)]:>12.3f}")
    print("(logit difference and same class: against minicnn's float or int8 model)")
    print(f"minicnn: float {timings[('float', 64)]:.3f} / {timings[('float', 1)]:.3f} ms, "
          f"int8 {timings[('int8', 64)]:.3f} / {timings[('int8', 1)]:.3f} ms "
          f"(batch 64 / 1, measured in section 5)")
    # The float graph computes what minicnn computes, up to float32 summation order.
    assert onnx_rows["float"][1] < 1e-3 * max(1.0, float(np.abs(float_logits).max()))
    assert onnx_rows["float"][2] > 0.999
    # The int8 graph as written simulates minicnn's integers in float: a rare accumulator
    # lands one step away, and a class may change only on a near-tie.
    assert onnx_rows["int8, as written"][2] > 0.995
    assert Path(onnx_files["int8"]).stat().st_size < Path(onnx_files["float"]).stat().st_size / 3

# %% [markdown]
# The float graph and the int8 graph *as written* reproduce minicnn's models. The **fused**
# int8 graph may not, depending on your CPU: on x86 processors without VNNI (AVX2 only), ONNX
# Runtime's uint8 x int8 kernels multiply with an instruction that adds pairs of products in
# signed 16-bit lanes and saturates them, and $2 \cdot 255 \cdot 127 = 64{,}770$ is more
# than such a lane holds (32,767). Some sums clip, and some classes change. That is why its
# quantization tools offer a `reduce_range` option (7-bit weights) for machines without
# VNNI. On the 2-core AVX2 machine this tutorial was written on, the fused graph changed
# about 1 % of the classes against minicnn's int8 model; with the weights requantized to 7
# bits by hand it agreed with minicnn on every image. Integer kernels have overflow rules of
# their own: check them against a reference, as we did here.

# %% [markdown]
# What to read in these numbers:
#
# - **Accuracy**: int8 costs LeNet-5 on MNIST a fraction of a point, often nothing, with any
#   of the three calibrations, as long as the calibration images are the right kind and
#   there are more than a handful of them.
# - **Size**: the weights take a quarter of the bytes; with the int32 biases, scales and
#   multipliers, minicnn's int8 file is 3.9x smaller than the float one and the QDQ ONNX file
#   3.4x (it also spells out every scale and zero point as a tensor of its own).
# - **Speed** depends on the kernels, not on the bit width alone: integer kernels are faster
#   only where they use the CPU's integer dot-product instructions and keep the data moving.
#   On the machine this tutorial was written on (AVX2, no VNNI), ONNX Runtime's int8 graph
#   ran no faster than its float graph at batch 64, and in most of our runs several times
#   slower. minicnn's int8 path ran LeNet-5 about 1.4x and the MNIST CNN about 1.4-1.5x
#   faster than its fastest float path there (`inference.forward`, the whole-network plan;
#   the float time measured above is the layer-by-layer forward, slower still), but not
#   because an 8-bit multiply is cheap: without VNNI its kernels multiply 16-bit pairs
#   (`vpmaddwd`, 16 multiply-adds an instruction, twice float32's 8). The rest came from
#   arithmetic it could skip or fuse, exactly: the max pooling taken on the int32 sums before
#   requantizing (requantization is monotonic, so the maximum commutes with it: a quarter of
#   the values requantized), the 3x3 convolution as *integer* Winograd (the filter transform
#   times 4 has no fractions, and the output divides back by 4 exactly: 2.25x fewer
#   multiplies, the same integers), and LeNet-5's first conv (one input channel, 6 outputs)
#   with output positions rather than channels in the vector lanes, so that no lane
#   multiplies a channel that is not there.
#   Your machine's numbers are above; measure before you claim a speed-up.
#
# ## Summary
#
# | Step | What it does | What can go wrong |
# |---|---|---|
# | scale, zero point | $x \approx s(q - z)$, 0.0 exact | error beyond the range is unbounded (saturation) |
# | weights | int8 symmetric, one scale per output channel | one scale per tensor wastes levels on small channels |
# | calibration | activation ranges from a few hundred images | outliers (min/max), too few images, the wrong images |
# | integer layer | int32 sums, int32 bias, fixed-point $M$, rounding shift, clamp | int32 overflow, a shift without rounding, a forgotten zero point |
#
# ## Exercise (continued)
#
# You wrote `quantize`, `dequantize` and `requantize` above. Now try: (1) quantize the
# network with `percentile=99.9` and `99.0`: where does cutting the tail start to hurt?
# (2) calibrate on 512 images of random noise (`rng.standard_normal`) and on MNIST images
# inverted (white background): which layers' ranges change most, and what happens to the
# accuracy? (3) replace `requantize`'s rounding term by 0 in the integer path of section 4
# and measure the average error in output steps (it is about half a step, always in the same
# direction). (4) quantize the MNIST CNN of tutorial 16 (`models.mnist_cnn`) and compare its
# accuracy, size and time with LeNet-5's.

# %%
print(f"tutorial 17 ran in {time.perf_counter() - start_time:.0f} s "
      f"({time.process_time():.0f} s of CPU)")
