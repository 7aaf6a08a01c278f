# %% [markdown]
# # 09 · Making it fast
#
# A convolution can be written as six nested loops, as one big matrix product, or as compiled
# parallel code. minicnn has all three (`backend="reference"`, `"im2col"`, `"numba"`), and they
# compute the same numbers. In this tutorial you will:
#
# - check that the three backends agree, forward and backward;
# - time them, and find out where a whole network spends its time;
# - count FLOPs and measure your machine's matrix-multiply peak in GFLOP/s, to see how close
#   a convolution gets to it;
# - look at threads, the BLAS library doing the heavy lifting, memory layout and
#   float32 vs float64.
#
# All timings are medians over repeats, measured on *your* machine right now; a busy machine
# gives noisy numbers, so read them as orders of magnitude. To compare *algorithms* rather than
# thread pools, sections 1-3 run on one thread; section 4 adds the others.

# %%
import os
import time

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from minicnn import kernels, models, nn
from minicnn.kernels import threads
from minicnn.kernels.im2col import im2col
from tutorial_tools import FAST, check, show

REPEATS = 5 if FAST else 20
rng = np.random.default_rng(0)
all_threads = threads.get_num_threads()["numba"]     # by default: one per core
threads.set_num_threads(1)                            # Numba and BLAS both


def median_time(fn, repeats=REPEATS):
    """Run fn once to warm up, then return the median wall time of `repeats` runs (seconds)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


# %% [markdown]
# ## 1. One convolution, three implementations
#
# - **reference** loops over output positions $(i, j)$ and multiplies each input window with
#   the kernel: the definition, written to be read.
# - **im2col** copies every window into a column of a matrix, so the whole convolution becomes
#   a single matrix product (GEMM) that BLAS runs at full speed.
# - **numba** keeps the GEMM but does the copying (im2col, col2im, layout changes) in compiled
#   parallel loops.
#
# We take a 3x3 convolution from 16 to 32 channels on a batch of 16 images of 14x14 (the size
# of layers in small MNIST networks), build it once per backend from the same seed (so the
# weights are identical) and compare.

# %%
x = rng.standard_normal((16, 16, 14, 14), dtype=np.float32)
dy = rng.standard_normal((16, 32, 14, 14), dtype=np.float32)
layers = {name: nn.Conv2d(16, 32, 3, padding=1, backend=name, rng=0)
          for name in kernels.BACKENDS}
outputs = {}
for name, layer in layers.items():
    y = layer(x)
    dx = layer.backward(dy)
    outputs[name] = (y, dx, layer.weight.grad, layer.bias.grad)
    print(f"{name:<10} y {y.shape} {y.dtype}   dx {dx.shape}")

for name in ("im2col", "numba"):
    for what, ours, ref in zip(("y", "dx", "dweight", "dbias"), outputs[name],
                               outputs["reference"]):
        worst = np.abs(ours - ref).max() / np.abs(ref).max()
        assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4), (name, what, worst)
    print(f"{name} matches reference (float32 round-off only)")

# %% [markdown]
# Now time them: forward, and backward (which computes `dx` *and* `dweight`, about twice the
# work of the forward pass).

# %%
timings = {}
for name, layer in layers.items():
    forward = median_time(lambda: layer(x))
    backward = median_time(lambda: layer.backward(dy))
    timings[name] = (forward, backward)
    print(f"{name:<10} forward {forward[0] * 1e3:7.2f} ms   backward {backward[0] * 1e3:7.2f} ms")

# Extremely loose check (the fastest run of each, robust to a busy machine):
reference_total = timings["reference"][0][1] + timings["reference"][1][1]
for name in ("im2col", "numba"):
    assert timings[name][0][1] + timings[name][1][1] < reference_total, name

# %% [markdown]
# ## 2. Where does a network spend its time?
#
# `models.profile` runs one image through a model and records each layer's output shape,
# parameters and FLOPs (a multiply-add counts as 2). Then we time every layer's forward and
# backward pass on a batch of 32, walking through the `Sequential` by hand.

# %%
model = models.mnist_cnn(rng=0)
layer_info = models.profile(model, (1, 28, 28))
batch = rng.standard_normal((32, 1, 28, 28), dtype=np.float32)

inputs = [batch]
for layer in model:                 # forward once to get every layer's input
    inputs.append(layer(inputs[-1]))
forward_ms, backward_ms = [], []
for layer, layer_input, layer_output in zip(model, inputs[:-1], inputs[1:]):
    grad = np.ones_like(layer_output)
    forward_ms.append(median_time(lambda: layer(layer_input))[0] * 1e3)
    backward_ms.append(median_time(lambda: layer.backward(grad))[0] * 1e3)

labels = [f"{info.name} {info.kind}" for info in layer_info]
flops = np.array([info.flops for info in layer_info]) * len(batch)
fig, (ax_flops, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
ax_flops.barh(labels, flops / 1e6, color="tab:gray")
ax_flops.set(title="Forward FLOPs per layer (batch of 32)", xlabel="MFLOP")
ax_time.barh(labels, forward_ms, label="forward")
ax_time.barh(labels, backward_ms, left=forward_ms, label="backward")
ax_time.set(title="Measured time per layer (median)", xlabel="milliseconds")
ax_time.legend()
ax_flops.invert_yaxis()
for ax in (ax_flops, ax_time):
    ax.grid(axis="x", alpha=0.3)
fig.tight_layout()
show(fig, "time_per_layer")

total_ms = sum(forward_ms) + sum(backward_ms)
conv_ms = sum(f + b for f, b, info in zip(forward_ms, backward_ms, layer_info)
              if info.kind == "Conv2d")
print(f"forward + backward: {total_ms:.1f} ms, convolutions: {conv_ms / total_ms:.0%} of it; "
      f"{flops.sum() / 1e6:.0f} MFLOP forward")
conv_flop_share = flops[[i.kind == "Conv2d" for i in layer_info]].sum() / flops.sum()
print(f"convolutions do {conv_flop_share:.0%} of the forward FLOPs")
assert conv_flop_share > 0.8 and len(forward_ms) == len(layer_info)

# %% [markdown]
# Time is not proportional to FLOPs. The first convolution does about 15x fewer FLOPs than the
# second, yet typically takes a large fraction of its time: with one input channel its matrix
# product is tiny (K = 1*3*3 = 9) and the work is dominated by writing its big 32x28x28 output.
# ReLU and pooling do almost no arithmetic but still read and write every value. Such layers
# are *memory-bound*: their speed is set by bytes moved, not by FLOPs.

# %% [markdown]
# ## 3. FLOPs against the machine's peak
#
# How fast *could* it go? Almost all the work is inside matrix products, so the best a
# convolution can do is the speed of a large, well-shaped GEMM. Multiplying two $n \times n$
# matrices costs $2n^3$ FLOPs; timing it gives GFLOP/s.

# %%
n = 1024
a32 = rng.standard_normal((n, n), dtype=np.float32)
b32 = rng.standard_normal((n, n), dtype=np.float32)
gemm32 = median_time(lambda: a32 @ b32)[0]
a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
gemm64 = median_time(lambda: a64 @ b64)[0]
peak = 2 * n ** 3 / gemm32 / 1e9
print(f"GEMM {n}x{n} on one thread: float32 {peak:.0f} GFLOP/s, "
      f"float64 {2 * n ** 3 / gemm64 / 1e9:.0f} GFLOP/s")

conv = layers["numba"]
conv_flops = models.profile(conv, (16, 14, 14))[0].flops * len(x)
conv_gflops = conv_flops / timings["numba"][0][0] / 1e9
print(f"the numba conv forward above: {conv_gflops:.1f} GFLOP/s = {conv_gflops / peak:.0%} "
      "of the one-thread GEMM peak")

# %% [markdown]
# A small convolution reaches only a fraction of the peak: its matrices are small (K = 16*9
# = 144 rows) and the copying around the GEMM is pure memory traffic with no arithmetic.
# Bigger batches and more channels get closer.
#
# ## 4. Threads and the BLAS library
#
# NumPy hands `@` to a BLAS library (OpenBLAS in NumPy's wheels), which picks a kernel for the
# CPU it finds: `corename`. The environment variable `OPENBLAS_CORETYPE` can force a different
# one (`Haswell` = AVX2 only, which on AVX-512 machines costs close to half the float32 speed).
# `threads.set_num_threads(n)` sets Numba's, BLAS's (and PyTorch's, if loaded) thread counts
# together, so comparisons stay fair. More threads help only if there are idle cores: on a
# machine busy with other work, a multithreaded GEMM keeps waiting for its slowest thread to
# get a core and can end up far *slower* than one thread. If a threads bar in the chart below
# is under 1, that is what happened.

# %%
info = threads.blas_info()
print("BLAS:", info["config"])
print("BLAS core kernel:", info["corename"], "  OPENBLAS_CORETYPE =",
      os.environ.get("OPENBLAS_CORETYPE", "(not set)"))
assert threads.get_num_threads()["numba"] == 1
threads.set_num_threads(all_threads)
print("threads now:", threads.get_num_threads())
gemm_all_threads = median_time(lambda: a32 @ b32)[0]
conv_all_threads = median_time(lambda: (conv(x), conv.backward(dy)))[0]
conv_one_thread = sum(t[0] for t in timings["numba"])
print(f"GEMM float32: {peak:.0f} GFLOP/s on 1 thread, "
      f"{2 * n ** 3 / gemm_all_threads / 1e9:.0f} GFLOP/s on {all_threads}")
print(f"numba conv fwd+bwd: {conv_one_thread * 1e3:.2f} ms on 1 thread, "
      f"{conv_all_threads * 1e3:.2f} ms on {all_threads}")
threads.set_num_threads(1)

# %% [markdown]
# ## 5. Memory layout and precision
#
# NumPy arrays are stored row-major: in an NCHW array the W axis is contiguous, and
# `strides` says how many bytes one step along each axis skips. Kernels want contiguous data;
# a transposed view (say, an NHWC array viewed as NCHW) must be copied first. im2col trades
# memory for speed: its column matrix holds every input pixel up to $k_H k_W$ times.

# %%
print("NCHW strides (bytes):", x.strides)
x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))       # the same numbers, NHWC in memory
as_nchw_view = x_nhwc.transpose(0, 3, 1, 2)                  # NCHW shape, NHWC strides
print("NHWC data viewed as NCHW, strides:", as_nchw_view.strides,
      " contiguous:", as_nchw_view.flags["C_CONTIGUOUS"])
relayout = median_time(lambda: np.ascontiguousarray(as_nchw_view))[0]
print(f"re-layout copy: {relayout * 1e3:.3f} ms  vs the conv forward "
      f"{timings['numba'][0][0] * 1e3:.3f} ms")
cols, _ = im2col(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))   # kernel, stride, padding, dilation
print(f"input {x.nbytes / 1e6:.2f} MB -> im2col columns {cols.shape}, "
      f"{cols.nbytes / 1e6:.2f} MB ({cols.nbytes / x.nbytes:.0f}x)")
assert cols.shape == (16 * 9, 16 * 14 * 14)

# float64 halves the numbers per SIMD register and doubles the bytes to move:
x64 = x.astype(np.float64)
forward64 = median_time(lambda: conv(x64))[0]
assert conv(x64).dtype == np.float64                        # a layer keeps its input's dtype
print(f"conv forward float32 {timings['numba'][0][0] * 1e3:.2f} ms, "
      f"float64 {forward64 * 1e3:.2f} ms")

# %% [markdown]
# ## 6. The speed-ups, in one picture
#
# Each bar is a ratio of two medians measured above (1 = no gain; log scale).

# %%
speedups = {
    "im2col vs reference\n(conv fwd+bwd)": sum(t[0] for t in timings["reference"])
    / sum(t[0] for t in timings["im2col"]),
    "numba vs reference\n(conv fwd+bwd)": sum(t[0] for t in timings["reference"])
    / sum(t[0] for t in timings["numba"]),
    "float32 vs float64\n(GEMM)": gemm64 / gemm32,
    "float32 vs float64\n(numba conv fwd)": forward64 / timings["numba"][0][0],
    f"{all_threads} threads vs 1\n(GEMM)": gemm32 / gemm_all_threads,
    f"{all_threads} threads vs 1\n(numba conv fwd+bwd)": conv_one_thread / conv_all_threads,
}
values = np.array(list(speedups.values()))
fig, ax = plt.subplots(figsize=(11, 4.5))
# Bars start at 1 (no change): up is faster, down is slower.
bars = ax.bar(list(speedups), values - 1, bottom=1,
              color=np.where(values >= 1, "tab:green", "tab:red"))
ax.bar_label(bars, labels=[f"{v:.2g}x" for v in values])
ax.set_yscale("log")
ax.set_ylim(min(values.min(), 1) / 2, max(values.max(), 1) * 2)
low, high = ax.get_ylim()
ax.set_yticks([2.0 ** k for k in range(-6, 12) if low <= 2.0 ** k <= high])   # 0.5x, 1x, 2x...
ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
ax.axhline(1, color="black", lw=0.8)
ax.set(title="Speed-ups measured on this machine (ratio of medians; below 1 = slower)",
       ylabel="speed-up (x, log scale)")
ax.tick_params(axis="x", labelsize=8)
ax.grid(axis="y", alpha=0.3, which="both")
show(fig, "speedups")
threads.set_num_threads(all_threads)                  # leave the process as we found it

# %% [markdown]
# ## Exercise
#
# How many FLOPs does the forward pass of `Conv2d(16, 32, 3, padding=1)` cost for *one*
# 16x14x14 input? Each of the $32 \cdot 14 \cdot 14$ outputs is a dot product of length
# $16 \cdot 3 \cdot 3$ (a multiply and an add per term), plus one addition for the bias.

# %%
# Your answer here (the worked answer is filled in; try changing it)
answer = 32 * 14 * 14 * (2 * 16 * 3 * 3 + 1)

check("FLOPs of Conv2d(16, 32, 3, padding=1) on 16x14x14",
      answer, models.profile(conv, (16, 14, 14))[0].flops)
