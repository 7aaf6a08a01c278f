# %% [markdown]
# # 09 · Making it fast
#
# A convolution can be written as six nested loops, as one big matrix product, or as compiled
# parallel code. minicnn has all three (`backend="reference"`, `"im2col"`, `"numba"`), and they
# compute the same numbers. The numba backend has been built twice: first as a *relay* between
# thread pools, then as *one pool*. This tutorial measures, on your machine, what made the
# difference. You will:
#
# 1. check that the backends agree, forward and backward, the one-pool kernels included;
# 2. time one convolution layer with the relay design and with the one-pool design, on one
#    thread and on all of them, and see which one gains from a second core;
# 3. draw the **shift trick**, which turns a stride-1 convolution into a few matrix products
#    over *views* of the padded input, with no unrolled matrix at all, and check
#    **Winograd's** trick, which does a 3x3 convolution with 2.25x fewer multiplies;
# 4. find where a training step spends its time, and how close each layer gets to your
#    machine's matrix-multiply peak;
# 5. measure the small overheads that shaped the kernels: waking a thread pool, loops that
#    Numba cannot vectorise, and memory faulted back in between training steps;
# 6. look at memory layout and precision;
# 7. serve one image at a time: compare its arithmetic floor with what a forward pass takes,
#    find where the rest goes layer by layer, and run the whole network as **one compiled
#    call** (`minicnn.inference`), timed against the layers from batch 1 to 64;
#
# and finally write the shift trick yourself, and a parallel Numba kernel that you place on
# your machine's **roofline** (its GEMM peak and memory bandwidth, measured live). Section 7
# has a small exercise of its own: the arithmetic floor, in microseconds.
#
# All timings are measured on *your* machine right now. A machine busy with other work gives
# noisy numbers, so we interleave the runs we compare and read the results as ratios and
# orders of magnitude.
#
# **Where this fits.** This tutorial is a side road: it is about how minicnn computes fast,
# not about how networks learn, and tutorials 10-14 do not need it (tutorial 11 points back
# to its GEMM peak when a layer is slower than its FLOPs). It is long; read it in its
# sections, whenever speed interests you, after 03 (im2col) and 08 (a training step).

# %%
import contextlib
import json
import os
import subprocess
import sys
import time

import matplotlib.pyplot as plt
import numpy as np
import threadpoolctl
from numba import njit, prange

from minicnn import inference, models, nn
from minicnn.kernels import blas, numba_backend, onepool, reference, threads
from minicnn.kernels.im2col import im2col
from exercise_checks import check_bias_relu, library_bias_relu
from tutorial_tools import FAST, check, check_exercise, exercise, loop_length, show

REPEATS = loop_length(full=20, fast=5)
rng = np.random.default_rng(0)
start_threads = threads.get_num_threads()           # what to leave behind at the end
start_onepool = numba_backend.USE_ONEPOOL
all_threads = start_threads["numba"]                  # by default: one per core
print("threads:", start_threads, "  one-pool kernels on:", start_onepool)


@contextlib.contextmanager
def threads_at(n):
    """Run the block with `n` threads for Numba and BLAS, then put the previous counts back."""
    before = threads.get_num_threads()
    threads.set_num_threads(n)
    try:
        yield
    finally:
        threads.set_num_threads(before["numba"])          # sets BLAS to the same count ...
        if threads.get_num_threads()["blas"] != before["blas"]:   # ... unless it differed
            threadpoolctl.threadpool_limits(before["blas"], user_api="blas")


@contextlib.contextmanager
def conv_design(onepool_on):
    """Run the block with the numba backend's convolutions on the one-pool kernels (True)
    or on the relay (False), then put the switch back."""
    before = numba_backend.USE_ONEPOOL
    numba_backend.USE_ONEPOOL = onepool_on
    try:
        yield
    finally:
        numba_backend.USE_ONEPOOL = before


def median_time(fn, repeats=REPEATS):
    """Run fn once to warm up, then return (median, fastest) wall time of `repeats` runs, in s."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def race(fns, repeats=REPEATS):
    """Time several functions *interleaved* (a, b, c, a, b, c, ...), so a burst of load on a
    shared machine hits all of them alike. Returns {name: (median, fastest)} in seconds."""
    for fn in fns.values():
        fn()                                          # warm up: compile, allocate
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


# %% [markdown]
# ## 1. The backends agree
#
# - **reference** loops over output positions and multiplies each input window with the
#   kernel: the definition, written to be read.
# - **im2col** copies every window into a column of a matrix, so the whole convolution becomes
#   one matrix product (GEMM) that BLAS runs at full speed (tutorial 03).
# - **numba, relay**: the first design of the fast backend. NumPy unrolls, OpenBLAS multiplies
#   on *its own* thread pool, Numba's compiled loops fold the result back and add the bias on
#   *another* pool, and the element-wise work runs in NumPy on one thread.
# - **numba, one pool** (the default now): each of Numba's threads takes a chunk of the batch
#   and does everything for its own samples, calling a single-threaded GEMM from compiled code.
#
# `numba_backend.USE_ONEPOOL` switches the numba backend's convolutions between the two
# designs (the other layers stay as they are); `conv_design` above sets it for one block and
# puts it back. We build a 3x3 convolution from 16 to 32 channels once per
# variant from the same seed (so the weights are identical) and compare with `reference`.

# %%
x = rng.standard_normal((16, 16, 14, 14), dtype=np.float32)
dy = rng.standard_normal((16, 32, 14, 14), dtype=np.float32)
variants = {"reference": ("reference", True), "im2col": ("im2col", True),
            "numba relay": ("numba", False), "numba one pool": ("numba", True)}
layers = {name: nn.Conv2d(16, 32, 3, padding=1, backend=backend, rng=0)
          for name, (backend, _) in variants.items()}


def conv_step(name, x=x, dy=dy):
    """Forward and backward through the layer of variant `name`, in its design."""
    layer = layers[name]
    with conv_design(variants[name][1]):
        y = layer(x)
        dx = layer.backward(dy)
    return y, dx


results = {}
for name in variants:
    layers[name].zero_grad()
    y, dx = conv_step(name)
    results[name] = (y, dx, layers[name].weight.grad, layers[name].bias.grad)

for name in ("im2col", "numba relay", "numba one pool"):
    for what, ours, ref in zip(("y", "dx", "dweight", "dbias"), results[name],
                               results["reference"]):
        assert np.allclose(ours, ref, rtol=1e-4, atol=1e-4), (name, what)
    print(f"{name:<15} matches reference (float32 round-off only)")

# %% [markdown]
# `Linear` and `ReLU` also run in the one pool on the numba backend
# (`minicnn.kernels.dense`, `minicnn.kernels.pointwise`); they agree with the NumPy code too.

# %%
features = rng.standard_normal((16, 200), dtype=np.float32)
for layer_type in (lambda backend: nn.Linear(200, 10, rng=0, backend=backend),
                   lambda backend: nn.ReLU(backend=backend)):
    numpy_layer, numba_layer = layer_type("reference"), layer_type("numba")
    out_numpy, out_numba = numpy_layer(features), numba_layer(features)
    upstream = np.ones_like(out_numpy)
    assert np.allclose(out_numba, out_numpy, atol=1e-5)
    assert np.allclose(numba_layer.backward(upstream), numpy_layer.backward(upstream), atol=1e-5)
    print(f"{type(numba_layer).__name__:<7} numba == NumPy, forward and backward")

# %% [markdown]
# On one thread, the four variants compare algorithms, not thread pools:

# %%
with threads_at(1):
    timings = race({name: (lambda name=name: conv_step(name)) for name in variants})
for name, (median, fastest) in timings.items():
    print(f"{name:<15} forward + backward {median * 1e3:7.2f} ms (fastest {fastest * 1e3:.2f})")
assert timings["numba one pool"][1] < timings["reference"][1]    # a very loose sanity check

# %% [markdown]
# ## 2. The relay against one pool
#
# Now a layer of realistic size: the second convolution of the MNIST CNN (32 to 64 channels,
# 3x3, on a batch of 64 maps of 14x14), forward and backward, with each design, on one thread
# and on all of them.
#
# In the **relay** a layer hands its work between pools several times: Numba's threads wake up
# to unroll, OpenBLAS's threads wake up to multiply, Numba's again to fold back. Every hand-off
# costs a wake-up, and OpenBLAS's workers keep *spinning* for a while after each GEMM, waiting
# for more work, so the Numba loop that follows finds the cores busy. In the **one-pool** design
# a layer is one parallel loop over the batch: one wake-up, and each thread pads, multiplies
# and writes the output (with the bias) for its own samples. Backward is the same loop: each
# thread adds up its *own* partial weight gradient, and the partials are added at the end (no
# two threads write the same place, so no locks).

# %%
batch_size = 64
x_big = rng.standard_normal((batch_size, 32, 14, 14), dtype=np.float32)
dy_big = rng.standard_normal((batch_size, 64, 14, 14), dtype=np.float32)
big = nn.Conv2d(32, 64, 3, padding=1, backend="numba", rng=0)
thread_counts = sorted({1, all_threads})


def big_step(onepool_on):
    def step():
        with conv_design(onepool_on):
            big(x_big)
            big.backward(dy_big)
    return step


# Each design is timed in a block of its own, one pool first. Not interleaved: after the
# relay's GEMMs, OpenBLAS's threads keep spinning, and a one-pool layer started right then
# finds its second core taken -- the very hand-off problem this section is about, which would
# make the one-pool layer look as if it did not scale at all.
big_times = {}                                        # (design, threads) -> (median, fastest)
for n in thread_counts:
    with threads_at(n):
        for design, onepool_on in (("one pool", True), ("relay", False)):
            big_times[(design, n)] = median_time(big_step(onepool_on),
                                                 repeats=max(REPEATS, 8))
for (design, n), (median, fastest) in big_times.items():
    print(f"{design:<9} {n} thread(s): {median * 1e3:6.1f} ms  (fastest {fastest * 1e3:.1f})")

# %% [markdown]
# The number that matters is the **thread scaling**: how much faster the same layer runs on
# all cores than on one. We use the fastest run of each (the one least disturbed by other
# programs on the machine).

# %%
scaling = {design: big_times[(design, 1)][1] / big_times[(design, all_threads)][1]
           for design in ("relay", "one pool")}
for design, gain in scaling.items():
    print(f"{design:<9} 1 -> {all_threads} threads: speed-up {gain:.2f}x")
if all_threads == 1:
    print("(this machine gives Numba one thread, so there is no scaling to see)")

fig, ax = plt.subplots(figsize=(7.5, 4))
width = 0.8 / len(thread_counts)
for k, n in enumerate(thread_counts):
    fastest_ms = [big_times[(design, n)][1] * 1e3 for design in ("relay", "one pool")]
    bars = ax.bar(np.arange(2) + (k - (len(thread_counts) - 1) / 2) * width, fastest_ms,
                  width, label=f"{n} thread" + ("s" if n > 1 else ""))
    ax.bar_label(bars, fmt="%.1f ms", fontsize=9)
ax.set_xticks(np.arange(2))
ax.set_xticklabels([f"{design}\n1 -> {all_threads} threads: speed-up {scaling[design]:.2f}x"
                    for design in ("relay", "one pool")])
ax.set(ylabel="ms (fastest run)",
       title=f"Conv 32->64 3x3 on {batch_size}x32x14x14, forward + backward")
ax.margins(y=0.15)
ax.legend()
ax.grid(axis="y", alpha=0.3)
show(fig, "relay_vs_onepool")

# %% [markdown]
# On one thread both designs do the same arithmetic with the same GEMM kernel; they differ
# only in how the data moves (the relay unrolls the whole batch into one big matrix, one pool
# works on a few samples at a time while they are in cache), so their times are of the same
# order. The difference is in what a second core gives. In the relay, the hand-offs and the
# spinning BLAS workers usually eat much of it; one pool keeps every thread busy with its own
# samples from start to end. On a machine shared with other programs both gains shrink,
# because a thread that waits for a core holds up the whole layer. A speed-up below 1 means
# that the second thread made the layer *slower*: threads of the two pools, and of other
# programs, fought over the cores. If your numbers do not tell this story, run the cell
# again: on a busy machine one burst of load can flip a comparison.
#
# One condition makes this work: BLAS must not start threads of its own *inside* our threads.
# minicnn sets BLAS's thread count with
# [threadpoolctl](https://github.com/joblib/threadpoolctl) (`threads.set_num_threads` sets
# Numba's and BLAS's together) and holds BLAS at one thread while a kernel runs. The GEMM
# itself comes from the OpenBLAS that NumPy ships: its CBLAS functions are declared to Numba
# as external C functions (`minicnn/kernels/blas.py`), so compiled code calls them directly,
# without going back to Python.

# %%
with threads_at(all_threads):
    with threads.blas_single_threaded():
        inside = threads.get_num_threads()
    outside = threads.get_num_threads()
print("inside a kernel:", inside, "  outside:", outside)
print("the GEMM the kernels call:", blas.describe())
assert inside["blas"] == 1

# %% [markdown]
# ## 3. The shift trick
#
# im2col copies every input pixel up to $k_H k_W$ times. For stride 1 there is a way to need
# only one copy of the input: the padded one (none at all when the layer has no padding),
# each pixel stored once. Number the output positions not on the $H_{out} \times W_{out}$
# grid but on the padded input's width $W_p$: output $(o_h, o_w)$ gets the index $q = o_h W_p + o_w$. Tap
# $(i, j)$ of the kernel reads, for output $q$, the padded pixel $(o_h + i, o_w + j)$, whose
# flat index is
#
# $$ (o_h + i) W_p + (o_w + j) = q + (i W_p + j). $$
#
# So for *every* output at once, tap $(i, j)$ reads a contiguous stretch of the flattened
# padded plane, shifted by $i W_p + j$. The price: the last $W_p - W_{out}$ positions of each
# grid row are **garbage**, windows that wrap around into the next row; we compute them and
# throw them away. The picture uses a 4x4 input with padding 1 (a 6x6 padded plane) and a 3x3
# kernel.

# %%
size, pad, k = 4, 1, 3
hp = wp = size + 2 * pad                              # padded plane: 6 x 6
out_h = out_w = hp - k + 1                            # 4 x 4 outputs
length = (out_h - 1) * wp + out_w                     # wide grid positions: 22
tap = (1, 2)
offset = tap[0] * wp + tap[1]
is_pad = np.ones((hp, wp), bool)
is_pad[pad:pad + size, pad:pad + size] = False
valid_q = (np.arange(length) % wp) < out_w           # False = garbage column

fig = plt.figure(figsize=(12, 7.2))
grid_spec = fig.add_gridspec(2, 2, height_ratios=[3, 1.3])
ax_plane, ax_out, ax_flat = (fig.add_subplot(grid_spec[0, 0]), fig.add_subplot(grid_spec[0, 1]),
                             fig.add_subplot(grid_spec[1, :]))
read_colour, garbage_colour, pad_colour = "tab:blue", "tab:orange", "0.85"

# Left: the padded plane; the cells tap (1, 2) reads for the 22 wide-grid positions.
for (r, c), padding_cell in np.ndenumerate(is_pad):
    flat = r * wp + c
    face = pad_colour if padding_cell else "white"
    if offset <= flat < offset + length:
        face = read_colour if valid_q[flat - offset] else garbage_colour
    ax_plane.add_patch(plt.Rectangle((c, r), 1, 1, fc=face, ec="0.5", alpha=0.8))
    ax_plane.text(c + 0.5, r + 0.5, flat, ha="center", va="center", fontsize=10)
ax_plane.add_patch(plt.Rectangle((pad, pad), size, size, fill=False, ec="black", lw=2))
ax_plane.set(xlim=(0, wp), ylim=(hp, 0), aspect="equal", xticks=np.arange(wp) + 0.5,
             yticks=np.arange(hp) + 0.5, xticklabels=range(wp), yticklabels=range(hp),
             xlabel="column", ylabel="row",
             title=f"padded plane {hp}x{wp}, flat index in each cell\n"
                   f"tap {tap} reads flat[{offset} : {offset} + {length}]")

# Right: the wide output grid, q = oh * Wp + ow.
for q in range(length):
    oh, ow = divmod(q, wp)
    face = "white" if valid_q[q] else garbage_colour
    ax_out.add_patch(plt.Rectangle((ow, oh), 1, 1, fc=face, ec="0.5", alpha=0.8))
    label = f"q={q}\ny[{oh},{ow}]" if valid_q[q] else f"q={q}\ngarbage"
    ax_out.text(ow + 0.5, oh + 0.5, label, ha="center", va="center", fontsize=8)
ax_out.set(xlim=(0, wp), ylim=(out_h, 0), aspect="equal", xticks=np.arange(wp) + 0.5,
           yticks=np.arange(out_h) + 0.5, xticklabels=range(wp), yticklabels=range(out_h),
           xlabel="ow", ylabel="oh",
           title=f"wide output grid: {out_h} rows of Wp = {wp}, L = {length} positions\n"
                 f"tap (i, j) reads flat[q + i*Wp + j] for output q; "
                 f"columns {out_w}..{wp - 1} are dropped")

# Bottom: the flat padded plane, and the stretch each tap reads.
taps_drawn = [(0, 0), (1, 2), (2, 2)]
for flat in range(hp * wp):
    face = pad_colour if is_pad.flat[flat] else "white"
    ax_flat.add_patch(plt.Rectangle((flat, 0), 1, 1, fc=face, ec="0.5"))
    ax_flat.text(flat + 0.5, 0.5, flat, ha="center", va="center", fontsize=7)
for row, (i, j) in enumerate(taps_drawn, start=1):
    start = i * wp + j
    for q in range(length):
        ax_flat.add_patch(plt.Rectangle((start + q, -row * 0.9), 1, 0.7, ec="white",
                                        fc=read_colour if valid_q[q] else garbage_colour))
    ax_flat.text(start - 0.3, -row * 0.9 + 0.35, f"tap ({i},{j}): offset {i}*{wp}+{j} = {start}",
                 ha="right", va="center", fontsize=9)
handles = [plt.Rectangle((0, 0), 1, 1, fc=colour, ec="0.5", alpha=0.8) for colour in
           (pad_colour, read_colour, garbage_colour)]
fig.legend(handles, ["zero padding (black box: the 4x4 input)", "read and used",
                     "read, garbage (wraps around a row)"], loc="upper center", ncol=3,
           bbox_to_anchor=(0.5, 1.04), frameon=False)
ax_flat.set(xlim=(-12, hp * wp), ylim=(-len(taps_drawn) * 0.9 - 0.2, 1.1), yticks=[],
            xticks=[], title="the flattened padded plane (top) and the contiguous stretch of "
                             f"L = {length} that each tap reads (blue: used, orange: garbage)")
for side in ("left", "right", "top", "bottom"):
    ax_flat.spines[side].set_visible(False)
fig.tight_layout()
show(fig, "shift_trick")

# %% [markdown]
# With $C_{in}$ input channels, the stretches of all channels for one tap form a
# $(C_{in}, L)$ matrix: row $c$ starts $H_p W_p$ elements after row $c - 1$. That is just a
# *view* of the padded array (a slice of its flat form), so no copy is made. The
# convolution becomes $k_H k_W$ matrix products, one per tap, each with inner size $C_{in}$:
#
# $$ Y_{wide} = \sum_{i, j} W_{:, :, i, j} \; X_{shift(i, j)}, \qquad
#    W_{:, :, i, j} \in \mathbb{R}^{C_{out} \times C_{in}}, \;
#    X_{shift(i, j)} \in \mathbb{R}^{C_{in} \times L}. $$
#
# Let us check it with NumPy on one small sample, against the reference convolution.

# %%
c_in, c_out = 2, 3
x_small = rng.standard_normal((1, c_in, size, size))
w_small = rng.standard_normal((c_out, c_in, k, k))
x_padded = np.pad(x_small[0], ((0, 0), (pad, pad), (pad, pad)))     # (C_in, Hp, Wp)
planes = x_padded.reshape(c_in, hp * wp)                             # one flat plane per row

y_wide = np.zeros((c_out, length))
for i in range(k):
    for j in range(k):
        x_shift = planes[:, i * wp + j:i * wp + j + length]          # (C_in, L): a view
        assert np.shares_memory(x_shift, x_padded)                   # ... no copy made
        y_wide += w_small[:, :, i, j] @ x_shift                      # one GEMM per tap

# Back to (C_out, H_out, W_out): fill the grid's last row to Wp, drop the garbage columns.
y_grid = np.concatenate([y_wide, np.zeros((c_out, out_h * wp - length))], axis=1)
y_shift = y_grid.reshape(c_out, out_h, wp)[:, :, :out_w]
y_ref, _ = reference.conv2d_forward(x_small, w_small, None, (1, 1), (pad,) * 4, (1, 1), 1)
print("largest difference from the reference:", np.abs(y_shift - y_ref[0]).max())
assert np.allclose(y_shift, y_ref[0])

# %% [markdown]
# minicnn's one-pool kernels (`minicnn/kernels/onepool.py`) do exactly this for stride-1
# layers with at least `onepool.SHIFT_MIN_CHANNELS` input channels, with three refinements:
#
# - **several samples per GEMM**: a thread stacks `onepool.SHIFT_GROUP` of its samples, per
#   channel, into one zero-padded buffer, so one tap's view spans all of them and each GEMM is
#   that many times longer; the positions between samples come out as more garbage (you will
#   write this in the exercise). The kernels also let neighbouring samples share their padding
#   rows and columns, which leaves less garbage to compute;
# - backward uses the same views: $dX_{shift(i,j)} \mathrel{+}= W_{:,:,i,j}^T\, dY_{wide}$, with
#   the garbage columns of $dY_{wide}$ set to zero so they add nothing;
# - the weight gradient is *not* one GEMM per tap. $dW_{:,:,i,j} \mathrel{+}= dY_{wide}\,
#   X_{shift(i,j)}^T$ has a tiny result ($C_{out} \times C_{in}$) and a long inner dimension, and
#   the GEMM would copy (pack) all of $dY_{wide}$ again for each of the $k_H k_W$ taps. Instead,
#   a slab of grid positions at a time, the taps' shifted rows are copied one under another into
#   a $(k_H k_W C_{in}, \text{slab})$ matrix and one GEMM adds that matrix times the slab of
#   $dY_{wide}^T$: $dY$ is packed once, and the GEMM has $k_H k_W C_{in}$ rows to work with.
#
# With few input channels (the first layer of an image network has 1 or 3) a GEMM with inner
# size $C_{in}$ is too thin to be fast, so those layers copy the taps into a
# $(C_{in} k_H k_W, L)$ matrix first (still one contiguous copy per tap) and do one GEMM. So do
# 'valid' convolutions with large kernels: stacking samples leaves $k_H - 1$ rows of every
# sample with no output, and past `onepool.SHIFT_MAX_GRID_WASTE` grid positions per output the
# copy is cheaper than the wasted multiplies (LeNet's 5x5 layers take the unroll path).

# %%
print(f"shift path from {onepool.SHIFT_MIN_CHANNELS} input channels up and at most "
      f"{onepool.SHIFT_MAX_GRID_WASTE} grid positions per output, "
      f"{onepool.SHIFT_GROUP} samples per GEMM, weight gradient in slabs of "
      f"{onepool.WEIGHT_GRAD_SLAB} positions")

# %% [markdown]
# ### Fewer multiplies: Winograd's F(2x2, 3x3)
#
# The shift trick removes the copies; the multiplies remain, $9 C_{in}$ per output. For a 3x3
# kernel there is a way to need fewer. Take a 4x4 block $d$ of one input channel: it holds the
# windows of a 2x2 block of outputs. Computed directly those four outputs take $4 \times 9 =
# 36$ multiplies. Winograd's minimal filtering algorithm (Lavin and Gray, 2016) gets the same
# four numbers from **16** elementwise products:
#
# $$ Y = A^T \left[ (G\, g\, G^T) \odot (B^T d\, B) \right] A $$
#
# where $g$ is the 3x3 filter and $A$, $B$, $G$ are small fixed matrices of 0, ±1 and ±1/2.
# The transforms $B^T d B$ and $A^T (\cdot) A$ are only additions. Over many channels the
# elementwise product becomes, for each of the 16 positions $\xi$ of the 4x4 tile, one matrix
# product $M_\xi = U_\xi V_\xi$ with $U_\xi \in \mathbb{R}^{C_{out} \times C_{in}}$ (the
# transformed filters) and $V_\xi \in \mathbb{R}^{C_{in} \times tiles}$ (the transformed input
# tiles): the GEMMs carry $16/36$ of the multiply-adds, 2.25x fewer. Check it on one tile:

# %%
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)
tile = rng.standard_normal((4, 4))
g = rng.standard_normal((3, 3))
winograd_tile = A_T @ ((G @ g @ G.T) * (B_T @ tile @ B_T.T)) @ A_T.T      # 16 products
direct_tile = np.array([[np.sum(tile[r:r + 3, c:c + 3] * g) for c in range(2)]
                        for r in range(2)])                                # 36 products
print("Winograd 2x2 outputs:\n", winograd_tile, "\nlargest difference from the direct sum:",
      np.abs(winograd_tile - direct_tile).max())
assert np.allclose(winograd_tile, direct_tile)

# %% [markdown]
# minicnn runs the forward pass of 3x3 stride-1 layers with at least
# `onepool.WINOGRAD_MIN_CHANNELS` input channels this way (`minicnn/kernels/winograd.py`).
# The input gradient of such a layer (padding 1) is itself a 3x3 convolution, of the output
# gradient with the filters flipped and transposed, and runs the same way; the weight gradient
# stays on the shift path. Two layout details
# decided whether it paid, and both are the lessons of this tutorial again:
#
# - **The GEMM's operand layout.** With the transformed tiles stored channels-last
#   ($V_\xi^T$, tiles by channels) the 16 GEMMs ran at 65 % of the core's peak; stored as
#   $V_\xi$ (channels by tiles) the same products ran at the peak.
# - **Long loops.** Tile $(t_y, t_x)$ reads rows $2t_y..2t_y+3$ and columns $2t_x..2t_x+3$:
#   stride-2 accesses, in rows only 7 tiles long on a 14x14 image, which LLVM leaves
#   scalar. Splitting each padded plane into its four *phases* (even/odd rows x even/odd
#   columns) makes every cell of every tile a contiguous shift of one phase, the shift
#   trick once more, so each transform step is one long loop over all of a plane's tiles.
#   The output transform writes each tile's two columns side by side, so output rows come out
#   in order, ready to copy and to pool (a fused block pools the 2x2 tiles directly). On wider
#   planes (8 tiles a row or more: ResNet-20's 32x32 and 16x16) the register blocks skip the
#   phases: a block loads two rows' worth of floats and takes the even and odd ones apart
#   with shuffles in registers, one trip through memory fewer.
# - **Cache sets.** Each block touches one vector in each of the 16 rows of a channel's
#   transformed tiles. With rows a multiple of 4 KB apart those 16 vectors compete for the same
#   few lines of the L1 cache; a few floats of padding per row spread them out (ResNet-20's
#   16-channel layer 10 % faster), the same trap as a power-of-two leading dimension in a
#   GEMM.
#
# The additions before the multiplies round differently from the direct sum: the results agree
# to float32 tolerance, not bit for bit. Time the forward pass of the MNIST CNN's second
# convolution both ways on your machine (`onepool.USE_WINOGRAD` switches it):

# %%
conv2 = nn.Conv2d(32, 64, 3, padding=1, backend="numba", rng=0)
x_conv2 = rng.standard_normal((64, 32, 14, 14)).astype(np.float32)


@contextlib.contextmanager
def winograd_on(on):
    before = onepool.USE_WINOGRAD
    onepool.USE_WINOGRAD = on
    try:
        yield
    finally:
        onepool.USE_WINOGRAD = before


def conv2_forward(on):
    def run():
        with winograd_on(on):
            return conv2(x_conv2)
    return run


y_winograd, y_shift = conv2_forward(True)(), conv2_forward(False)()
print("largest difference, Winograd against the shift path:",
      np.abs(y_winograd - y_shift).max(), " (largest output:", np.abs(y_shift).max(), ")")
assert np.allclose(y_winograd, y_shift, rtol=1e-4, atol=1e-4)
with threads_at(1):
    winograd_race = race({"shift": conv2_forward(False), "winograd": conv2_forward(True)})
for name, (median, fastest) in winograd_race.items():
    print(f"MNIST conv2 forward, 1 thread, {name:8s}: {median * 1e3:6.2f} ms (fastest "
          f"{fastest * 1e3:.2f})")
print(f"Winograd / shift: {winograd_race['winograd'][0] / winograd_race['shift'][0]:.2f}x "
      f"(2.25x fewer multiplies; the transforms and the output copy take the rest)")
assert onepool.USE_WINOGRAD

# %% [markdown]
# ## 4. Where does a training step spend its time?
#
# `models.profile` runs one image through a model and records each layer's output shape,
# parameters and FLOPs (a multiply-add counts as 2). We time every layer's forward and
# backward pass on a batch, on all threads, walking through the `Sequential` by hand.

# %%
model = models.mnist_cnn(rng=0)                       # default backend: numba, one pool
layer_info = models.profile(model, (1, 28, 28))
batch = rng.standard_normal((32 if FAST else 64, 1, 28, 28), dtype=np.float32)

with threads_at(all_threads):
    inputs = [batch]
    for layer in model:                               # forward once to get every layer's input
        inputs.append(layer(inputs[-1]))
    forward_s, backward_s = [], []
    for layer, layer_input, layer_output in zip(model, inputs[:-1], inputs[1:]):
        grad = np.ones_like(layer_output)
        forward_s.append(median_time(lambda: layer(layer_input)))
        backward_s.append(median_time(lambda: layer.backward(grad)))
forward_ms = np.array([t[0] for t in forward_s]) * 1e3
backward_ms = np.array([t[0] for t in backward_s]) * 1e3
flops = np.array([info.flops for info in layer_info]) * len(batch)
total_ms = forward_ms.sum() + backward_ms.sum()
is_conv = np.array([info.kind == "Conv2d" for info in layer_info])
print(f"forward + backward: {total_ms:.1f} ms on {all_threads} thread(s), "
      f"convolutions {(forward_ms + backward_ms)[is_conv].sum() / total_ms:.0%} of it; "
      f"they do {flops[is_conv].sum() / flops.sum():.0%} of the forward FLOPs")
assert flops[is_conv].sum() / flops.sum() > 0.8 and len(forward_ms) == len(layer_info)

# %% [markdown]
# How fast *could* a layer go? Nearly all its work is matrix products, so the limit is the
# speed of a large, well-shaped GEMM. Multiplying two $n \times n$ matrices costs $2n^3$ FLOPs;
# timing it on one thread gives the peak of one core in GFLOP/s (we take the fastest run:
# the machine's ability, not its load). With $T$ threads the ideal is $T$ times that.

# %%
n = 512 if FAST else 1024
a32 = rng.standard_normal((n, n), dtype=np.float32)
b32 = rng.standard_normal((n, n), dtype=np.float32)
with threads_at(1):
    gemm32 = median_time(lambda: a32 @ b32)[1]
peak = 2 * n ** 3 / gemm32 / 1e9
print(f"GEMM {n}x{n} float32 on one thread: {peak:.0f} GFLOP/s per core")

share_of_peak = {}
for index, info in enumerate(layer_info):
    if info.kind in ("Conv2d", "Linear"):
        gflops = flops[index] / forward_s[index][1] / 1e9
        share_of_peak[index] = gflops / (peak * all_threads)
        print(f"{info.name} {info.kind:<7} fastest forward {gflops:6.1f} GFLOP/s = "
              f"{share_of_peak[index]:.0%} of {all_threads} x the one-core peak")
closest = max(share_of_peak, key=share_of_peak.get)
print(f"closest to the peak: layer {closest}, {layer_info[closest].kind} "
      f"(output {layer_info[closest].output_shape})")

# %%
labels = [f"{info.name} {info.kind}" for info in layer_info]
fig, (ax_flops, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
ax_flops.barh(labels, flops / 1e6, color="tab:gray")
ax_flops.set(title=f"Forward FLOPs per layer (batch of {len(batch)})", xlabel="MFLOP")
ax_time.barh(labels, forward_ms, label="forward")
ax_time.barh(labels, backward_ms, left=forward_ms, label="backward")
for index, share in share_of_peak.items():
    ax_time.text(forward_ms[index] + backward_ms[index], index, f"  fwd {share:.0%} of peak",
                 va="center", fontsize=8)
ax_time.set(title=f"Measured time per layer (median, {all_threads} thread(s))",
            xlabel="milliseconds")
ax_time.margins(x=0.25)
ax_time.legend(loc="lower right")
ax_flops.invert_yaxis()
for ax in (ax_flops, ax_time):
    ax.grid(axis="x", alpha=0.3)
fig.tight_layout()
show(fig, "time_per_layer")

# %% [markdown]
# Time is not proportional to FLOPs. The second convolution (32 to 64 channels, the shift
# path) does most of the arithmetic, in GEMMs with $K = C_{in} = 32$. The first one does far
# fewer FLOPs but has one input channel: its GEMM is thin ($K = 1 \cdot 3 \cdot 3 = 9$, the
# unroll path) and much of its time goes into reading and writing its large 32x28x28 maps.
# ReLU and pooling do almost no arithmetic but still read and write every value: they are
# *memory-bound*, their speed set by bytes moved rather than FLOPs. Run the cells again and
# the numbers move; the picture stays.
#
# ### Fusing the memory-bound layers
#
# If ReLU and pooling cost bytes, not FLOPs, the cure is to move fewer bytes. Run one by one,
# a `Conv2d -> ReLU -> MaxPool2d(2)` block makes three passes over the convolution's output:
# the convolution writes it, the ReLU reads it and writes a rectified copy, the pooling reads
# that and writes a quarter of it; backward makes three more. But the convolution already
# touches every output value once: it adds the bias as it copies each row off its GEMM's
# grid. It can rectify the value right there, and pool each finished pair of rows while they
# are still in cache; backward, it can send each window's gradient to its winner, where the
# pooled value is positive, as it copies its gradient onto the grid. A `Sequential` on the
# numba backend does exactly that (`minicnn/nn/fusion.py`), and `model.fuse = False` turns
# it off. A ReLU and a maximum only *pick* values, they never round, so the fused block must
# give the same bits; we check that first, then time one training step both ways, on all
# threads and on one.

# %%
def training_step(net, images, labels, loss):
    """Forward, loss and backward: returns the output and the gradients."""
    net.zero_grad()
    out = net(images)
    loss.forward(out, labels)
    net.backward(loss.backward(), need_input_grad=False)
    return [out] + [p.grad.copy() for p in net.parameters()]


step_labels = rng.integers(0, 10, len(batch))
fused_net, separate_net = models.mnist_cnn(rng=0), models.mnist_cnn(rng=0)
separate_net.fuse = False
step_loss = nn.CrossEntropyLoss()
for a, b in zip(training_step(fused_net, batch, step_labels, step_loss),
                training_step(separate_net, batch, step_labels, step_loss)):
    assert a.tobytes() == b.tobytes(), "a fused block changed a bit"
print("fused blocks end at layers", sorted(fused_net._fused_blocks), "- same bits as the layers")
for n_threads in sorted({1, all_threads}):
    with threads_at(n_threads):
        timings = race({
            "fused": lambda: training_step(fused_net, batch, step_labels, step_loss),
            "one by one": lambda: training_step(separate_net, batch, step_labels, step_loss)})
    print(f"{n_threads} thread(s): training step fused {timings['fused'][0] * 1e3:.2f} ms, "
          f"one by one {timings['one by one'][0] * 1e3:.2f} ms "
          f"({timings['one by one'][0] / timings['fused'][0]:.2f}x)")

# %% [markdown]
# On the 2-core machine this was written on, the fused step was 5-10 % faster, at one thread
# and at two (where it also saves two wake-ups of the thread pool per block and direction). Two details mattered more than the fusion itself, and both are about what
# the compiler makes of a loop. A loop that tested the mode (plain, ReLU, ReLU + pooling)
# inside stopped LLVM vectorising the plain copy, so each mode has a loop of its own. And a
# choice such as `zero if value <= 0 else grad`, in a loop that also scatters or sums, became
# a *branch*, mispredicted on every other value after a ReLU, and ran several times slower
# than the same choice in a loop of its own, which LLVM turns into a vector blend.
#
# One more saving is for inference only. Most of max pooling's work is not the maximum but
# remembering *where* it was, for backward. In eval mode a fused block skips that, and if a
# backward comes after all (a saliency map, say), the pooling finds the positions then, from
# the ReLU's output, with the same rule. Time `fused_net.eval()` against `separate_net.eval()`
# the same way to see what that is worth on your machine.
#
# ## 5. Small overheads that shaped the kernels
#
# **Waking the pool costs time.** A `prange` loop starts a *parallel region*: the threads are
# woken, given their share and waited for. Here is a kernel that does almost nothing, called
# as plain compiled code and as a parallel region.

# %%
@njit
def touch(out):
    out[0] += 1.0


@njit(parallel=True)
def touch_parallel(out, n_threads):
    for t in prange(n_threads):
        out[t] += 1.0


counters = np.zeros(max(all_threads, 1))
calls = 200
call_cost = {}
for label, fn, n in [("plain call", lambda: touch(counters), 1),
                     ("parallel region, 1 thread", lambda: touch_parallel(counters, 1), 1),
                     (f"parallel region, {all_threads} threads",
                      lambda: touch_parallel(counters, all_threads), all_threads)]:
    with threads_at(n):
        call_cost[label] = median_time(lambda: [fn() for _ in range(calls)])[1] / calls
    print(f"{label:<28} {call_cost[label] * 1e6:8.2f} us per call")
assert call_cost["parallel region, 1 thread"] > call_cost["plain call"]
region_us = call_cost[f"parallel region, {all_threads} threads"] * 1e6
print(f"a parallel region of {all_threads} threads costs {region_us:.1f} us here: "
      f"{region_us / 10_000:.3%} of a 10 ms layer, {region_us / 300:.1%} of a 300 us one")

# %% [markdown]
# A microsecond or a few per region (measured on the 2-core machine these tutorials are
# tested on: 0.7 us with one thread, 1.65 us with two; your numbers are above, and they grow
# with the thread count and on a busy machine, where a sleeping thread waits to be
# scheduled) are nothing next to a 10 ms layer, and little next to a small layer's few
# hundred microseconds; but a training step runs a dozen layers, each with several regions
# per pass, and a region with one thread buys nothing for its cost. So the kernels avoid
# regions that cannot pay: with one
# thread, `parallel.run` (in `minicnn/kernels/parallel.py`) calls the chunk function
# (`_forward_shift_chunk`, ...) directly instead of starting the `prange` loop, and ReLU stays
# on one thread below `pointwise.PARALLEL_MIN_SIZE` elements.
#
# **Compile time is part of the cost.** A new process with an empty kernel cache compiles
# every kernel it meets, and a user waits for that before the first step. Two things halved
# it here: copies written as loops instead of slice assignments (`a[i:j] = b[k:l]` makes
# Numba compile a shape check whose error message alone costs over a second per function),
# and the `prange` loop calling each chunk function through a *function pointer*
# (`parallel.run`): a `prange` loop that calls a jitted function directly links that
# function's code into its own and LLVM optimises it all again, about a second per kernel;
# through a pointer, one compiled loop serves every chunk function with the same argument
# types. `minicnn bench --compile` measures the cold and warm start on your machine.
#
# **Loop over slices, not over `range(first, last)`.** Each thread works on its part of an
# array, `first` to `last`. The obvious loop is `for i in range(first, last)`. But Numba cannot
# prove that such an `i` is never negative, and a negative index means "count from the end",
# so it adds a wrap-around check to every access, and the check stops LLVM from vectorising
# the loop (using SIMD instructions that handle 8 or 16 floats at once). Taking slices first
# and looping from 0 gives the same result without the checks:

# %%
@njit
def scale_range(x, out, first, last):
    for i in range(first, last):                     # i could be negative, as far as Numba knows
        out[i] = 2 * x[i] + 1


@njit
def scale_slices(x, out, first, last):
    src, dest = x[first:last], out[first:last]
    for i in range(src.size):                        # 0 <= i < size: no checks needed
        dest[i] = 2 * src[i] + 1


values = rng.standard_normal(1 << 16, dtype=np.float32)
out_range, out_slices = np.empty_like(values), np.empty_like(values)
scale_range(values, out_range, 0, values.size)
scale_slices(values, out_slices, 0, values.size)
assert np.array_equal(out_range, out_slices)
loop_times = race({"range(first, last)": lambda: scale_range(values, out_range, 0, values.size),
                   "slices from 0": lambda: scale_slices(values, out_slices, 0, values.size)},
                  repeats=5 * REPEATS)
for label, (_, fastest) in loop_times.items():
    print(f"{label:<20} {fastest * 1e6:7.1f} us for {values.size} floats")
print(f"slices are {loop_times['range(first, last)'][1] / loop_times['slices from 0'][1]:.1f}x "
      "faster")

# %% [markdown]
# Every inner loop in `onepool.py`, `pointwise.py` and the depthwise kernels of
# `numba_backend.py` is written this way. (To see for yourself, compare
# `scale_range.inspect_asm()` with `scale_slices.inspect_asm()`: look for vector registers,
# `ymm` or `zmm`, in the second.)
#
# **Every other element, on short rows.** A stride-2 layer's backward *folds* each tap's
# column row back onto the input: tap $j$ of output column $o$ lands on input column
# $2o + j$, so tap by tap a loop writes every other element. On CIFAR's 32x32 -> 16x16
# layer the rows are 16 outputs long and their length is known only at run time; LLVM left
# those loops scalar. Written for three taps at once, taps 0 and 1 fill whole column pairs
# $(2o, 2o+1)$, and tap 2's column $2(o-1) + 2$ is tap 0's column $2o$: one loop that writes
# every element, which LLVM vectorises. Each pixel still adds tap 0 before tap 2, so the
# result is bit for bit the same. `onepool._fold` (and its mirror `_unroll`) do this for the
# usual 3-wide stride-2 kernel.

# %%
@njit
def fold_tap_by_tap(taps, dest):
    """taps: (3, rows, width) columns of a 3-wide stride-2 kernel; dest: (rows, 2*width + 1)."""
    for j in range(3):
        for r in range(taps.shape[1]):
            src, row = taps[j, r], dest[r, j:]
            for o in range(src.size):
                row[2 * o] += src[o]


@njit
def fold_column_pairs(taps, dest):
    for r in range(taps.shape[1]):
        left, middle, right, row = taps[0, r], taps[1, r], taps[2, r], dest[r]
        width = left.size
        row[0] += left[0]
        row[1] += middle[0]
        for o in range(1, width):
            row[2 * o] = (row[2 * o] + left[o]) + right[o - 1]   # tap 0, then tap 2
            row[2 * o + 1] += middle[o]
        row[2 * width] += right[width - 1]


taps = rng.standard_normal((3, 4096, 16), dtype=np.float32)
by_tap, by_pair = np.zeros((4096, 33), np.float32), np.zeros((4096, 33), np.float32)
fold_tap_by_tap(taps, by_tap)
fold_column_pairs(taps, by_pair)
np.testing.assert_array_equal(by_pair, by_tap)   # the same additions in the same order
fold_times = race({"tap by tap": lambda: fold_tap_by_tap(taps, by_tap),
                   "column pairs": lambda: fold_column_pairs(taps, by_pair)},
                  repeats=5 * REPEATS)
for label, (_, fastest) in fold_times.items():
    print(f"{label:<13} {fastest * 1e6:7.1f} us for 4096 rows of 16")
print(f"column pairs are {fold_times['tap by tap'][1] / fold_times['column pairs'][1]:.1f}x "
      "faster")

# %% [markdown]
# **Memory given back, then faulted in again.** A training step frees and allocates the same
# large arrays every time. With glibc's default settings, `free` hands memory at the top of
# the heap back to the operating system, and the next step takes it back one 4 KiB page at a
# time, each page zeroed by the kernel: a *page fault* per page. The benchmark found it by
# accident: in every setting the first process, which had run one extra forward pass before
# timing, was 15-35 % faster than the others. So `import minicnn` raises two of glibc's
# thresholds (`minicnn/allocator.py`) and the memory stays with the process.
# `MINICNN_ALLOCATOR=system` leaves glibc alone. Here are LeNet-5's training steps in two
# fresh processes, one each way, with the page faults the operating system counted:

# %%
STEP_FAULTS = """
import json, resource, time
import numpy as np
import minicnn
from minicnn import models, nn, optim

rng = np.random.default_rng(0)
model = models.lenet5(backend="numba", rng=0)
opt, loss = optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss()
x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
labels = rng.integers(0, 10, 64)

def step():
    opt.zero_grad()
    loss(model(x), labels)
    model.backward(loss.backward(), need_input_grad=False)
    opt.step()

for _ in range(3):
    step()
faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(STEPS):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"ms": 1e3 * float(np.median(times)), "faults": faults / STEPS,
                  "allocator": minicnn.allocator.describe()}))
""".replace("STEPS", str(loop_length(full=40, fast=10)))

step_runs = {}
for choice in ("system", "tuned"):
    child = subprocess.run([sys.executable, "-c", STEP_FAULTS], capture_output=True, text=True,
                           env=dict(os.environ, MINICNN_ALLOCATOR=choice), check=True)
    step_runs[choice] = json.loads(child.stdout)
    run = step_runs[choice]
    print(f"MINICNN_ALLOCATOR={choice:<7} {run['ms']:6.2f} ms per step, "
          f"{run['faults']:6.0f} page faults per step  (allocator: {run['allocator']})")

# %% [markdown]
# On glibc the `tuned` process should fault almost never. How much the `system` one faults
# depends on the machine and on what the process did before (glibc's threshold follows
# recent allocation sizes): on the benchmarks' reference machine, where it was found
# (`benchmarks/RESULTS.md`, "Keeping freed memory"), 411 faults per LeNet-5 step and 3.0
# against 2.25 ms per step at one thread, so about 1.8 us of kernel time per fault in the
# middle of the training loop; on the 2-core machine these tutorials are tested on, 7 faults
# per step and 2.70 against 2.68 ms, no difference worth having. The cell below compares
# your two processes. If both lines say "left alone", your C library is not glibc, or you set
# glibc's allocator yourself.

# %%
extra_faults = step_runs["system"]["faults"] - step_runs["tuned"]["faults"]
slower = step_runs["system"]["ms"] / step_runs["tuned"]["ms"] - 1
print(f"on this machine the system allocator's process faults {extra_faults:.0f} more pages "
      f"per step and its step is {slower:+.1%} slower than the tuned one's" +
      (": the effect shows here" if extra_faults > 100 else
       ": too few faults for the effect to show here"))

# %% [markdown]
# The lesson reaches beyond allocators: when one run of a benchmark is consistently faster
# than the others, find out why. Here the faster run was the right one.
#
# ## 6. Memory layout and precision
#
# NumPy arrays are stored row-major: in an NCHW array the W axis is contiguous, and `strides`
# says how many bytes one step along each axis skips. The shift trick is a strides trick: the
# view $X_{shift(i,j)}$ steps $H_p W_p$ elements between rows and 1 along a row. Compare the
# memory each method needs besides the input: im2col's column matrix holds every pixel up to
# $k_H k_W$ times; the shift trick needs only a padded copy.

# %%
print("NCHW strides (bytes):", x.strides)
print(f"X_shift view {x_shift.shape}, strides {x_shift.strides} bytes: {hp * wp} float64 "
      "elements between rows, 1 along a row")
cols, _ = im2col(x, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1))   # kernel, stride, padding, dilation
padded_bytes = x.shape[0] * x.shape[1] * (14 + 2) * (14 + 2) * x.itemsize   # padding 1
print(f"input {x.nbytes / 1e6:.2f} MB -> im2col columns {cols.nbytes / 1e6:.2f} MB "
      f"({cols.nbytes / x.nbytes:.0f}x), padded copy {padded_bytes / 1e6:.2f} MB "
      f"({padded_bytes / x.nbytes:.1f}x)")
assert cols.shape == (16 * 9, 16 * 14 * 14)

# %% [markdown]
# float64 holds half as many numbers per SIMD register and moves twice the bytes. The one-pool
# kernels call the float64 GEMM (`dgemm`) for float64 layers; a layer keeps its input's dtype.

# %%
conv = layers["numba one pool"]
x64 = x.astype(np.float64)
with threads_at(1):
    precision = race({"float32": lambda: conv(x), "float64": lambda: conv(x64)})
assert conv(x64).dtype == np.float64
print(f"conv forward on one thread: float32 {precision['float32'][1] * 1e3:.2f} ms, "
      f"float64 {precision['float64'][1] * 1e3:.2f} ms "
      f"({precision['float64'][1] / precision['float32'][1]:.1f}x)")

# We changed thread counts and the design switch only inside `with` blocks; check that
# everything is as we found it.
assert threads.get_num_threads() == start_threads
assert numba_backend.USE_ONEPOOL == start_onepool

# %% [markdown]
# ## 7. One image at a time: per-call overhead and the whole-network plan
#
# Everything so far timed batches of 32 or 64: training, where thousands of images wait to be
# processed. A model that *serves* answers often sees one image at a time (a camera frame, a
# request), and batch 1 is a different problem. The arithmetic shrinks 64-fold; the number of
# Python calls, argument checks, array allocations and kernel launches per forward pass does
# not. Start with the arithmetic: `models.profile` counts one image's FLOPs per layer, and
# section 4 measured this machine's GEMM rate on one core (`peak`, GFLOP/s). FLOPs divided by
# that rate is the **arithmetic floor**: the time one image would take if every FLOP ran at
# the speed of a large, well-shaped GEMM. Nothing that does those FLOPs runs faster on one
# core (Winograd's trick of section 3 does fewer multiplies than the count, so the floor is
# that of the direct arithmetic); everything above it is work that is not arithmetic, or
# arithmetic done slower than the peak.
#
# ### Exercise: the arithmetic floor
#
# Write `arithmetic_floor_us(flops, gflops)`: the time in **microseconds** that `flops`
# floating-point operations take at a rate of `gflops` GFLOP/s (10^9 FLOP per second).
# `flops` is a number or an array (one entry per layer); the result has its shape. It is one
# line; the units are the exercise. Until yours passes, the tutorial uses the library's
# version (the worked solution is in `solutions/09_making_it_fast.py`).

# %%
@exercise("09_making_it_fast")
def arithmetic_floor_us(flops, gflops):
    """Microseconds that ``flops`` FLOPs take at ``gflops`` GFLOP/s.

    flops: float or ndarray (any shape); gflops: float -> float or ndarray (flops' shape).
    """
    # YOUR CODE HERE: one line, in microseconds.
    raise NotImplementedError("fill in arithmetic_floor_us")


def library_arithmetic_floor_us(flops, gflops):
    """flops / (gflops * 1e9) seconds, in microseconds (flops' shape)."""
    return np.asarray(flops, dtype=np.float64) / (gflops * 1e9) * 1e6


def check_arithmetic_floor_us(fn):
    """Cases whose answers differ by the usual unit slips (s, ms, ns, a ratio upside down)."""
    cases = [(2e9, 1.0), (8.5e6, 100.0), (np.array([476_672.0, 0.0, 802_944.0]), 40.0)]
    for flops, gflops in cases:
        expected = library_arithmetic_floor_us(flops, gflops)
        got = fn(flops, gflops)
        if got is None:
            raise AssertionError("arithmetic_floor_us returned None: did it forget to return?")
        got = np.asarray(got, dtype=np.float64)
        what = f"arithmetic_floor_us({flops!r}, {gflops!r})"
        if got.shape != expected.shape:
            raise AssertionError(f"{what}: shape {got.shape}, expected {expected.shape} "
                                 f"(one floor per entry of flops)")
        if np.allclose(got, expected, rtol=1e-9, atol=0):
            continue
        scale = float(np.max(expected))
        for unit, factor in (("milliseconds", 1e-3), ("seconds", 1e-6), ("nanoseconds", 1e3)):
            if np.allclose(got, expected * factor, rtol=1e-6, atol=0):
                raise AssertionError(f"{what} = {np.max(got):.6g}: that is the time in {unit}; "
                                     f"the exercise asks for microseconds ({scale:.6g})")
        raise AssertionError(f"{what}: got {got!r}, expected {expected!r} (seconds are "
                             f"flops / (gflops * 1e9); a microsecond is 1e-6 s)")


floor_us = check_exercise("arithmetic_floor_us", arithmetic_floor_us,
                          check_arithmetic_floor_us, reference=library_arithmetic_floor_us)

# %% [markdown]
# Now the floor of one MNIST CNN image on this machine, against what the model really takes
# for it: `model(x)` in eval mode, the fused `Conv2d -> ReLU -> MaxPool2d` blocks included, on
# one thread (the floor is one core's; the end of this section says what a second thread does
# for a batch of one). We time a loop of calls and divide, so that the clock's own resolution
# does not matter.

# %%
serving_net = models.mnist_cnn(rng=0).eval()
one_image = rng.standard_normal((1, 1, 28, 28), dtype=np.float32)
serving_info = models.profile(serving_net, (1, 28, 28))
image_flops = np.array([info.flops for info in serving_info], dtype=np.float64)
CALLS = loop_length(full=50, fast=10)               # calls per timed sample
OVERHEAD_REPEATS = loop_length(full=10, fast=5)


def per_call_s(fn, calls=CALLS, repeats=OVERHEAD_REPEATS):
    """Fastest of `repeats` timings of `calls` back-to-back calls of fn, per call, in s."""
    return median_time(lambda: [fn() for _ in range(calls)], repeats=repeats)[1] / calls


floor_total_us = float(np.sum(floor_us(image_flops, peak)))
with threads_at(1):
    model_us = per_call_s(lambda: serving_net(one_image)) * 1e6
print(f"one image: {image_flops.sum() / 1e6:.2f} MFLOP; at the one-core GEMM peak of "
      f"{peak:.0f} GFLOP/s that is {floor_total_us:.1f} us")
print(f"serving_net(one_image) takes {model_us:.1f} us: {model_us / floor_total_us:.1f}x the "
      f"floor; {model_us - floor_total_us:.1f} us ({1 - floor_total_us / model_us:.0%}) "
      f"are not the floor's arithmetic")

# %% [markdown]
# ### Where the rest goes, layer by layer
#
# Call each layer on its own, at batch 1, and set its time against its own floor. Next to
# them, two calls that do no work at all: a ReLU layer on a 1-element array (the Python of a
# layer call: the argument checks, the output allocation, the kernel's dispatch) and section
# 5's empty compiled function (`touch`, the cost of entering compiled code from Python).

# %%
layer_inputs = [one_image]
for layer in serving_net:                             # each layer's input, at batch 1
    layer_inputs.append(layer(layer_inputs[-1]))
empty_relu = nn.ReLU()
tiny = np.zeros(1, dtype=np.float32)
with threads_at(1):
    layer_us = np.array([per_call_s(lambda: layer(layer_input)) * 1e6
                         for layer, layer_input in zip(serving_net, layer_inputs[:-1])])
    empty_layer_us = per_call_s(lambda: empty_relu(tiny)) * 1e6
    empty_compiled_us = per_call_s(lambda: touch(counters)) * 1e6
layer_floor_us = floor_us(image_flops, peak)

print(f"{'layer':<12} {'output':>12} {'kFLOP':>8} {'floor us':>9} {'measured us':>12} "
      f"{'above floor':>12}")
for info, floor, measured in zip(serving_info, layer_floor_us, layer_us):
    shape = "x".join(str(s) for s in info.output_shape)
    print(f"{info.name + ' ' + info.kind:<12} {shape:>12} {info.flops / 1e3:8.1f} "
          f"{floor:9.2f} {measured:12.1f} {measured - floor:12.1f}")
print(f"{'sum':<12} {'':>12} {image_flops.sum() / 1e3:8.1f} {layer_floor_us.sum():9.2f} "
      f"{layer_us.sum():12.1f} {layer_us.sum() - layer_floor_us.sum():12.1f}")
print(f"an empty layer call (ReLU on 1 element): {empty_layer_us:.1f} us; entering an empty "
      f"compiled function: {empty_compiled_us:.2f} us")
print(f"{len(serving_net)} layer calls x the empty layer call = "
      f"{len(serving_net) * empty_layer_us:.0f} us of the {layer_us.sum():.0f} us the layers "
      f"take one by one (the model's own call, with its fused blocks: {model_us:.0f} us)")

# %% [markdown]
# Read the table by its last column (your figures are above; what follows is what to look
# for). The layers that do almost no arithmetic (the ReLUs, the poolings, the flatten, the
# last `Linear`) should cost a few times the empty layer call: at batch 1 their time *is*
# overhead. The convolutions sit far above their floors because a GEMM for one image is small
# and thin (the first layer: 32 filters of 9 taps against one image's 784 positions), and a
# small GEMM runs far from the peak that a 512x512 one reaches. And the first `Linear` is
# memory-bound: at batch 1 it is a matrix-*vector* product that reads all of its 3136x128
# weights (1.6 MB) to do 2 FLOPs per weight, 0.5 FLOP per byte, so memory, not arithmetic,
# sets its time (the roofline exercise at the end of this tutorial measures that limit). At
# batch 64 the same weights serve 64 rows.
#
# ### The whole network in one call
#
# `minicnn.inference` removes the per-layer cost altogether. `inference.plan_for(model,
# input_shape)` reads the layers once and writes down a *plan*: a short list of steps that one
# compiled function (`minicnn/kernels/network.py`) runs from start to end, with no Python
# between the layers.

# %%
plan = inference.plan_for(serving_net, (1, 28, 28))
print(plan)

# %% [markdown]
# Each line is one step; the names in brackets are the layers it stands for.
#
# - **conv**: a convolution, then, per output channel and while the values are still in
#   cache, its bias, a batch norm folded in from its running statistics (in eval mode a batch
#   norm is a per-channel scale and shift), the activation and the 2x2 max pooling: a whole
#   `Conv2d -> ReLU -> MaxPool2d` block is one step. `gemm` means an unrolled matrix and a GEMM
#   (per sample or per small group of samples), `winograd` the F(2x2, 3x3) of section 3
#   (`winograd-4x4`: its big sibling F(4x4, 3x3), 36 products per 4x4 outputs instead of
#   144, on layers of 64 channels or more such as ResNet-20's last stage), and
#   `blocked` a convolution with few input channels computed in place: for each tap, one
#   multiply-add of a few input vectors into a block of 4 output channels x 24 outputs held
#   in registers (`minicnn/kernels/direct_blocks.py`). With `K = 9` or `25` terms per
#   output, a GEMM spends its time packing and on its edges; the block has nothing to pack.
# - **flatten** turns each sample's maps into one row of features, the layout a linear
#   layer's GEMM wants; from there on, the **linear** steps take the rows of a thread's
#   share of the batch in one GEMM, with the bias and activation in the same pass.
# - The *buffers* are a few per-thread scratch arrays that the steps read and write in turn
#   (0 -> 1 -> 0 ...): allocated once and reused from call to call, not once per layer.
#
# `inference.forward(model, x)` runs the plan: **one** compiled call per batch. The weights
# are not copied into the plan: it reads the layers' own arrays at every call (the "tensors
# read live" above), so a training step or an edit between two calls is seen by the next one.
# It computes the same function as the layers, in another summation order, so the outputs
# agree to float32 rounding, not bit for bit. We check both, at the batch sizes we are about
# to time. (The first call compiles the network kernel; Numba caches it on disk, but in a
# fresh installation that first compile can take a minute.)

# %%
PLAN_BATCHES = (1, 2, 8, 64)
plan_inputs = {n: rng.standard_normal((n, 1, 28, 28), dtype=np.float32) for n in PLAN_BATCHES}
with threads_at(1):          # one thread, as timed below: one kernel to compile, not two
    for n, images in plan_inputs.items():
        by_plan = inference.forward(serving_net, images, use_plan=True)
        by_layers = serving_net(images)
        worst = np.abs(by_plan - by_layers).max() / np.abs(by_layers).max()
        assert by_plan.shape == by_layers.shape == (n, 10)
        assert worst < 1e-4, f"batch {n}: the plan differs from the layers by {worst:.1e}"
        print(f"batch {n:2d}: plan == layers to {worst:.1e} of the largest logit")

    last_bias = serving_net[-1].bias.data             # edited in place, then put back
    before = inference.forward(serving_net, one_image, use_plan=True)
    last_bias += 1.0
    after = inference.forward(serving_net, one_image, use_plan=True)
    last_bias -= 1.0
assert np.allclose(after - before, 1.0, atol=1e-5), "the plan did not see the edited bias"
print("an in-place edit of the last bias moved every logit by", float((after - before).mean()))

# %% [markdown]
# Now the race: `inference.forward(net, x, use_plan=True)` against `net(x)` on one thread, at
# batch 1, 2, 8 and 64, each timed over the same number of images, interleaved as in section
# 1. We report the time **per image**.
#
# What to expect. At batch 1 the plan should win clearly: it pays the call overhead once
# instead of once per layer. As the batch grows, the overhead is shared by more images on both
# sides and the arithmetic takes over, and there the layers have the kernels built for it:
# the one-pool convolutions stack several samples into each GEMM (the shift trick's
# `SHIFT_GROUP`, Winograd's tiles of many samples), long GEMMs that run near the peak. The
# plan's GEMMs grow much less with the batch: a thread carries only a cache's worth of
# samples through all the steps at a time, and its convolutions multiply one sample (or one
# chunk of Winograd tiles) per GEMM. So the plan's lead shrinks as the batch grows, and at
# some batch size the layers catch up: on the machine these notes were measured on, the plan
# still won at 64 and the two were level by a few hundred images, so `inference.forward` uses
# the plan up to `inference.PLAN_MAX_BATCH` images unless told otherwise. Your own machine's
# figures are printed below.

# %%
images_per_sample = loop_length(full=128, fast=64)   # images per timed sample, every batch
plan_repeats = loop_length(full=8, fast=3)
plan_us, layers_us = {}, {}                           # batch -> microseconds per image
with threads_at(1):
    for n, images in plan_inputs.items():
        calls = max(1, images_per_sample // n)
        timings = race({
            "plan": lambda: [inference.forward(serving_net, images, use_plan=True)
                             for _ in range(calls)],
            "layers": lambda: [serving_net(images) for _ in range(calls)]},
            repeats=plan_repeats)
        plan_us[n] = timings["plan"][1] / (calls * n) * 1e6
        layers_us[n] = timings["layers"][1] / (calls * n) * 1e6
        print(f"batch {n:2d}: plan {plan_us[n]:7.1f} us per image, layers "
              f"{layers_us[n]:7.1f} us per image  (layers / plan = "
              f"{layers_us[n] / plan_us[n]:.2f}x)")
plan_wins = [n for n in PLAN_BATCHES if plan_us[n] < layers_us[n]]
layers_win = [n for n in PLAN_BATCHES if layers_us[n] <= plan_us[n]]
print("faster here: the plan at " + (f"batch {plan_wins}" if plan_wins else "no batch size")
      + ", the layers at " + (f"batch {layers_win}" if layers_win else "no batch size")
      + f" of {list(PLAN_BATCHES)}; inference.forward picks the plan up to batch "
      f"{inference.PLAN_MAX_BATCH} by default")
print(f"at batch 1 the plan takes {plan_us[1]:.1f} us: {plan_us[1] / floor_total_us:.1f}x "
      f"the floor of {floor_total_us:.1f} us (the layers: "
      f"{layers_us[1] / floor_total_us:.1f}x)")

fig, ax = plt.subplots(figsize=(7.5, 4.2))
batches = np.array(PLAN_BATCHES)
ax.plot(batches, [plan_us[n] for n in PLAN_BATCHES], "o-", label="inference.forward (the plan)")
ax.plot(batches, [layers_us[n] for n in PLAN_BATCHES], "s-", label="net(x) (the layers)")
ax.axhline(floor_total_us, color="k", ls="--", lw=1,
           label=f"arithmetic floor at the GEMM peak ({floor_total_us:.0f} us)")
ax.set_xscale("log", base=2)
ax.set_ylim(bottom=0)
ax.set_xticks(batches)
ax.set_xticklabels([str(n) for n in PLAN_BATCHES])
ax.set(xlabel="batch size", ylabel="microseconds per image (fastest run)",
       title="MNIST CNN eval forward on one thread: one compiled call against the layers")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
show(fig, "plan_vs_layers")
assert threads.get_num_threads() == start_threads

# %% [markdown]
# The picture has two regimes. On the left, time per image is set by what each call costs,
# and the plan's single call wins; on the right, by how fast the arithmetic runs, where the
# batch-tuned kernels close the gap. Neither line should reach the dashed floor: at batch 1 the
# plan still runs small GEMMs and a memory-bound `Linear`, and at any batch a convolution's
# unrolling, padding and pooling move bytes that the floor does not count. Whether the lines
# meet within these batch sizes depends on the machine and its load (on some they cross
# before 64, on others only at a few hundred; run the cell again and a crossing may move by a
# batch size); that the plan's lead shrinks as the batch grows does not. With more threads
# the plan splits a batch between them as the layers do (`inference.forward(...,
# n_threads=...)`). A batch of one has no samples to share out, so the plan splits the work
# *inside* its biggest steps instead: each thread computes a part of a Winograd convolution's
# output channels or of a large linear layer's features, in one parallel region per such step
# (`minicnn.kernels.network.run_split`). Starting and joining a region costs a few
# microseconds (about 3.5 on the machine this was written on), so only steps of at least
# 300,000 multiply-adds are split: there the MNIST CNN's batch of one went from about 150 to
# about 125 us on two threads, and nothing of LeNet-5's is big enough. A second core helps a
# batch of one far less than a batch of 64, which is why a server that answers one request at
# a time cares about the left side of this plot.

# %% [markdown]
# ## Exercise
#
# Write the shift trick for a whole batch: `shifted_conv(x_padded, w)` takes an already padded
# batch `x_padded` of shape `(N, C_in, Hp, Wp)` and weights `w` of shape
# `(C_out, C_in, kH, kW)` and returns the stride-1 convolution, shape
# `(N, C_out, Hp - kH + 1, Wp - kW + 1)`, without bias, using only $k_H k_W$ matrix products
# over shifted views of the flat input.
#
# Hint: as the one-pool kernels do (in a simpler form), put the samples' padded planes one
# after the other for each channel: `x_padded.transpose(1, 0, 2, 3)` made contiguous and
# reshaped to `(C_in, N*Hp*Wp)`. Then one tap's view spans every sample: it is
# `(N - 1)*Hp*Wp + L` long, and the gaps between samples are garbage like the wrapped columns.
#
# The worked answer is filled in. To try it yourself, replace the body below the marker with
# `raise NotImplementedError` and write your own; until you do, the check cell says so and the
# tutorial carries on. A wrong answer is reported with what is wrong (shape, or how large the
# error is and where).

# %%
def shifted_conv(x_padded, w):
    """Stride-1 convolution of an already padded batch, by kH*kW GEMMs over shifted views."""
    n_batch, channels, padded_h, padded_w = x_padded.shape
    c_out, _, kh, kw = w.shape
    out_h, out_w = padded_h - kh + 1, padded_w - kw + 1
    # Your answer here (the worked answer is filled in; try writing your own)
    plane = padded_h * padded_w
    side_by_side = np.ascontiguousarray(x_padded.transpose(1, 0, 2, 3)).reshape(channels, -1)
    span = (n_batch - 1) * plane + (out_h - 1) * padded_w + out_w
    y_wide = np.zeros((c_out, n_batch * plane), dtype=x_padded.dtype)
    for i in range(kh):
        for j in range(kw):
            start = i * padded_w + j
            y_wide[:, :span] += w[:, :, i, j] @ side_by_side[:, start:start + span]
    y_grid = y_wide.reshape(c_out, n_batch, padded_h, padded_w)[:, :, :out_h, :out_w]
    return y_grid.transpose(1, 0, 2, 3)


# %%
# A batch of 3, rectangular planes and a rectangular kernel, so that swapped axes show up.
x_test = rng.standard_normal((3, 4, 9, 7))
w_test = rng.standard_normal((5, 4, 3, 2))
expected, _ = reference.conv2d_forward(x_test, w_test, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)

try:
    answer = shifted_conv(x_test, w_test)
except NotImplementedError:
    answer = None
    print("shifted_conv is not written yet: fill it in and run this cell again")
if answer is not None:
    answer = np.asarray(answer)
    if answer.shape != expected.shape:
        raise AssertionError(f"shifted_conv returned shape {answer.shape}, expected "
                             f"{expected.shape} = (N, C_out, Hp - kH + 1, Wp - kW + 1)")
    error = np.abs(answer - expected)
    wrong = np.argwhere(error > 1e-8 * (1 + np.abs(expected)))
    if len(wrong):
        n_bad, c_bad, h_bad, w_bad = wrong[0]
        raise AssertionError(
            f"shifted_conv: {len(wrong)} of {expected.size} values wrong, largest error "
            f"{error.max():.3g}; first wrong at (n, c_out, oh, ow) = "
            f"({n_bad}, {c_bad}, {h_bad}, {w_bad}); wrong samples {np.unique(wrong[:, 0])}, "
            f"rows {np.unique(wrong[:, 2])}, columns {np.unique(wrong[:, 3])}")
    check("shifted_conv against reference.conv2d_forward", answer, expected,
          rtol=1e-10, atol=1e-10)

# %% [markdown]
# ## Exercise: a parallel kernel, placed on the roofline
#
# Section 4 set each layer against the GEMM peak. But a ReLU or a bias add does almost no
# arithmetic: what limits it is how fast memory delivers the bytes. The **roofline** model
# puts both limits on one plot. A kernel that does $F$ FLOPs and moves at least $B$ bytes has
# the *arithmetic intensity* $I = F / B$ (FLOP per byte), and it cannot run faster than
# $\min(\text{peak},\; I \times \text{bandwidth})$. Left of the *ridge point*
# $I = \text{peak} / \text{bandwidth}$ the memory is the limit, right of it the arithmetic.
#
# Write the kernel: `bias_relu(x, bias)` returns `y = max(x + bias[c], 0)` for a float32 NCHW
# batch, in a **new** float32 array, as a loop over `prange` compiled with
# `@njit(parallel=True)` (the decorator is already there). It reads 4 bytes and writes 4 per
# element, and does 2 FLOPs there (an add and a max): $I = 0.25$, far left of the ridge.
# Hints: `y = np.empty_like(x)`; one `prange` task per (image, channel) plane,
# `for plane in prange(n_images * channels)` with `n, c = plane // channels, plane % channels`,
# then plain loops over the rows and columns of that plane (the last index innermost, so each
# thread streams through contiguous memory).
#
# `check_bias_relu` runs your kernel's Python source first (`bias_relu.py_func`, where
# `prange` is `range`: an index out of bounds raises an `IndexError` there, while compiled
# code would silently read past the array), then the compiled kernel, on batches where a bias
# indexed by the image or by a column still runs but gives wrong values. It rejects a wrong
# value, a float64 output, a kernel that writes into `x`, and one compiled without
# `parallel=True`. Until yours passes, the tutorial times the library's. A worked solution is
# in `solutions/09_making_it_fast.py`.

# %%
@njit(parallel=True)
@exercise("09_making_it_fast")
def bias_relu(x, bias):
    """y[n, c, h, w] = max(x[n, c, h, w] + bias[c], 0) in a new array of x's dtype.

    x (N, C, H, W) float32, bias (C,) float32 -> y (N, C, H, W) float32.
    """
    # YOUR CODE HERE: allocate y, loop over the planes with prange, then rows and columns.
    raise NotImplementedError("fill in bias_relu")


bias_relu_kernel = check_exercise("bias_relu", bias_relu, check_bias_relu,
                                  reference=library_bias_relu)

# %% [markdown]
# Now the two roofs of this machine, measured now: the **peak** from a float32 GEMM (as in
# section 4), and the **bandwidth** from a copy of exactly as many bytes as the kernel moves
# (each element read once and written once, no arithmetic; the faster of a parallel Numba
# loop and NumPy's `np.copyto`, which calls the C library's tuned `memcpy`), so that the copy
# and the kernel meet the same level of the memory hierarchy: main memory for a large batch,
# a cache when the batch fits in it (on the 2-core machine these tutorials are tested on, a
# 480 MiB L3 holds the whole batch). Then the kernel, and NumPy's
# `np.maximum(x + bias, 0)` for comparison: the same FLOPs and the same minimum bytes, but
# two passes over memory through a temporary array, on one thread. All of it on one thread
# and on all of them, interleaved as in section 2.

# %%
@njit(parallel=True)
def stream_copy(source, destination):
    """destination[i] = source[i] on all threads: memory bandwidth with no arithmetic."""
    for i in prange(source.size):
        destination[i] = source[i]


gemm_n = 512 if FAST else 1024
gemm_a = rng.standard_normal((gemm_n, gemm_n), dtype=np.float32)
gemm_b = rng.standard_normal((gemm_n, gemm_n), dtype=np.float32)
relu_x = rng.standard_normal((64 if FAST else 256, 32, 28, 28), dtype=np.float32)  # 6 / 26 MB
relu_bias = rng.standard_normal(32, dtype=np.float32)
copy_destination = np.zeros_like(relu_x)                # written now: no page faults timed
relu_flops, relu_bytes = 2 * relu_x.size, 2 * relu_x.nbytes      # the copy's bytes too
whose = "yours" if bias_relu_kernel is not library_bias_relu else "the library's"
assert np.array_equal(bias_relu_kernel(relu_x, relu_bias),
                      np.maximum(relu_x + relu_bias[None, :, None, None], 0))

roofs, points = {}, {}          # per thread count: (peak FLOP/s, bandwidth B/s); points
for n_threads in sorted({1, all_threads}):
    with threads_at(n_threads):
        gemm_s = median_time(lambda: gemm_a @ gemm_b)[1]
        runs = race({
            "parallel copy": lambda: stream_copy(relu_x.reshape(-1),
                                                 copy_destination.reshape(-1)),
            "np.copyto": lambda: np.copyto(copy_destination, relu_x),      # one thread, memcpy
            "bias_relu": lambda: bias_relu_kernel(relu_x, relu_bias),
            "NumPy": lambda: np.maximum(relu_x + relu_bias[None, :, None, None], 0)})
    copy_s = min(runs["parallel copy"][1], runs["np.copyto"][1])   # the faster copy
    roofs[n_threads] = (2 * gemm_n ** 3 / gemm_s, relu_bytes / copy_s)
    points[n_threads] = {                               # name: (intensity, attained FLOP/s)
        f"bias_relu ({whose})": (relu_flops / relu_bytes, relu_flops / runs["bias_relu"][1]),
        "NumPy maximum(x + b, 0)": (relu_flops / relu_bytes, relu_flops / runs["NumPy"][1]),
        # The GEMM reads A and B and writes C at least once: 3 n^2 float32 values.
        f"GEMM {gemm_n}x{gemm_n}": (2 * gemm_n ** 3 / (3 * gemm_n ** 2 * 4),
                                     2 * gemm_n ** 3 / gemm_s)}
assert np.array_equal(copy_destination, relu_x)

for n_threads, (peak, bandwidth) in roofs.items():
    print(f"{n_threads} thread(s): GEMM peak {peak / 1e9:.0f} GFLOP/s, copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s, ridge point {peak / bandwidth:.1f} FLOP/byte")
    for name, (intensity, attained) in points[n_threads].items():
        roof = min(peak, intensity * bandwidth)
        print(f"  {name:<28} I = {intensity:6.2f} FLOP/byte: {attained / 1e9:7.2f} GFLOP/s "
              f"= {attained / intensity / 1e9:6.1f} GB/s, {attained / roof:4.0%} of its roof")

# %%
intensities = np.logspace(-2, 3, 200)
fig, ax = plt.subplots(figsize=(8.5, 5.2))
for n_threads, style, fill in ((all_threads, "-", None), (1, "--", "none")):
    if n_threads not in roofs or (n_threads == 1 and all_threads == 1 and fill == "none"):
        continue
    peak, bandwidth = roofs[n_threads]
    ax.loglog(intensities, np.minimum(peak, intensities * bandwidth) / 1e9, "k" + style,
              lw=1.5, label=f"roof, {n_threads} thread(s): min(GEMM peak, I x copy bandwidth)")
    for (name, (intensity, attained)), colour, marker in zip(
            points[n_threads].items(), ("tab:red", "tab:blue", "tab:green"), "o^s"):
        ax.loglog(intensity, attained / 1e9, marker, color=colour, mfc=fill, ms=9,
                  label=f"{name}, {n_threads} thread(s): "
                        f"{attained / min(peak, intensity * bandwidth):.0%} of its roof")
ax.set(xlabel="arithmetic intensity I (FLOP per byte moved, log scale)",
       ylabel="GFLOP/s (log scale)", title="The roofline of this machine, measured now")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=7, loc="lower right")
show(fig, "roofline")

# %% [markdown]
# A bias + ReLU can only reach the sloped roof: at 0.25 FLOP per byte, even a perfect kernel
# runs at a few GFLOP/s, a small fraction of what the GEMM does. A good kernel gets close to
# the copy's bandwidth (the copy is the simplest stream there is, so some tens of per cent
# short is normal); NumPy's version moves the data about twice, through its temporary, on
# one thread, and lands lower. On a busy machine every point drops and the all-thread ones
# most, since a parallel loop waits for its slowest thread. This is why section 4's fused
# `Conv2d -> ReLU -> MaxPool2d` blocks pay: the only cure for a kernel on the sloped roof is
# to move fewer bytes, and fusing the ReLU into the convolution's output loop moves none at
# all. On a machine with more cores the GEMM roof rises with every core, the memory roof
# much less, and the ridge point moves right: more and more layers end up memory-bound.
