"""The named kernel contracts (:mod:`minicnn.kernels.contracts`), the layers' named contexts,
the one thread-count helper, and the import order of ``minicnn.nn`` and ``minicnn.kernels``."""

from __future__ import annotations

import copy

import numba
import numpy as np
import pytest

from minicnn import nn
from minicnn.kernels import contracts, depthwise, numba_backend, onepool, threads
from minicnn.kernels.geometry import output_size
from test_import_graph import import_graph



@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", [
    ((2, 3, 14, 14), (8, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3, 15, 16), (8, 3, 3, 5), (2, 3), (1, 0, 2, 1), (1, 2)),   # strides that do not divide
    ((1, 4, 11, 12), (4, 1, 4, 4), (1, 1), (1, 2, 1, 2), (1, 1)),   # 'same' with an even kernel
])
def test_conv_plan_names_the_geometry(x_shape, w_shape, stride, padding, dilation):
    plan = contracts.conv_plan(x_shape, w_shape, stride, padding, dilation)
    top, bottom, left, right = padding
    assert (plan.kh, plan.kw) == w_shape[2:]
    assert (plan.sh, plan.sw, plan.dh, plan.dw) == stride + dilation
    assert (plan.top, plan.left) == (top, left)
    assert plan.out_h == output_size(x_shape[2], w_shape[2], stride[0], top, bottom, dilation[0])
    assert plan.out_w == output_size(x_shape[3], w_shape[3], stride[1], left, right, dilation[1])
    # The padded sizes reach the last row and column a window reads, and cover the input.
    assert plan.padded_h >= (plan.out_h - 1) * plan.sh + (plan.kh - 1) * plan.dh + 1
    assert plan.padded_h >= top + x_shape[2] and plan.padded_w >= left + x_shape[3]
    assert not plan.stacked and plan.group == 0
    assert all(isinstance(value, int) for value in plan)     # what the kernels compile for


def test_stacked_layout_places_every_sample_and_refuses_what_does_not_fit():
    padding = (1, 1, 1, 1)
    plan = contracts.conv_plan((4, 16, 14, 14), (8, 16, 3, 3), (1, 1), padding, (1, 1))
    stacked = contracts.with_stacked_layout(plan, (4, 16, 14, 14), padding, group=2)
    assert stacked.stacked and stacked.group == 2
    assert (stacked.block, stacked.pitch) == (15, 15)        # 14 rows/columns + one shared gap
    assert stacked.channel_length == (1 + 2 * 15) * 15 + 1
    assert stacked[:12] == plan[:12]                         # the geometry is unchanged
    # Padding 3 on a 3x3 kernel: the 18x18 output does not fit a block of 14 + 3 rows.
    wide = (3, 3, 3, 3)
    plan = contracts.conv_plan((4, 16, 14, 14), (8, 16, 3, 3), (1, 1), wide, (1, 1))
    assert contracts.with_stacked_layout(plan, (4, 16, 14, 14), wide, group=2) is None


def test_layers_keep_named_contexts_that_deep_copy(rng):
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    model = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1, backend="numba", rng=rng), nn.ReLU(),
                          nn.MaxPool2d(2, backend="numba"),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, backend="numba", rng=rng))
    y = model(x)
    conv, pool, depthwise_conv = model[0], model[2], model[3]
    assert conv._ctx.backend == "numba" and isinstance(conv._ctx.ctx, onepool.ConvContext)
    assert conv._ctx.ctx.plan.stacked                       # 16 channels: the shift path
    assert isinstance(pool._ctx.ctx, numba_backend.MaxPoolContext)
    assert pool._ctx.ctx.argmax.shape == (2, 8, 4, 4) and pool._ctx.ctx.tiled
    assert isinstance(depthwise_conv._ctx.ctx, depthwise.DepthwiseContext)
    twin = copy.deepcopy(model)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(model.backward(dy), twin.backward(dy))


@pytest.mark.parametrize("items", [0, 1, 2, 3, 1000])
def test_one_thread_count_for_every_kernel(items):
    expected = max(1, min(numba.get_num_threads(), items))
    assert threads.threads_for(items) == expected


def test_the_base_module_imports_neither_sequential_nor_fusion():
    """``nn.module``, the base of every layer, sits below the layers; ``Sequential`` and the
    fusion pass sit above them (the whole package's cycle check: test_import_graph.py)."""
    graph = import_graph()
    assert not {"minicnn.nn.sequential", "minicnn.nn.fusion"} & graph["minicnn.nn.module"]
    assert "minicnn.nn.fusion" in graph["minicnn.nn.sequential"]
    assert nn.Sequential.__module__ == "minicnn.nn.sequential"
