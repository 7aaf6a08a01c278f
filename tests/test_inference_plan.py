"""The whole-network inference plan (minicnn.inference) against the layer-by-layer forward.

The plan's GEMMs sum in another order than the layers' one-pool and Winograd kernels, so
outputs agree to float32 rounding, not bit for bit: measured worst relative difference (to
the output's largest magnitude) 6e-7 over every model, batch 1/3/64 and 1/2 threads; the
tests allow 1e-4.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest

from minicnn import inference, models, nn, optim
from minicnn.kernels import network as K
from minicnn.kernels.threads import blas_single_threaded
from minicnn.nn.functional import softmax

RTOL = 1e-4

SHAPES = {"lenet5": (1, 28, 28), "mnist-cnn": (1, 28, 28), "vgg-small": (3, 32, 32),
          "resnet-small": (3, 32, 32), "resnet20": (3, 32, 32), "separable-cnn": (1, 28, 28),
          "tiny-detector": (1, 96, 96)}


def _with_statistics(net, seed=1):
    """Batch norms with running statistics and affine parameters far from their defaults,
    so that folding them is tested."""
    rng = np.random.default_rng(seed)
    for module in net.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            shape = module.running_mean.shape
            module.running_mean[...] = rng.normal(0, 0.2, shape)
            module.running_var[...] = rng.uniform(0.5, 2.0, shape)
            module.weight.data[...] = rng.uniform(0.5, 1.5, shape)
            module.bias.data[...] = rng.normal(0, 0.2, shape)
    return net


def _model(name):
    shape = SHAPES[name]
    net = models.build(name, shape[0], 10, image_size=shape[1], rng=0)
    return _with_statistics(net).eval(), shape


def _close(got, expected):
    scale = float(np.abs(expected).max()) + 1e-6
    assert got.shape == expected.shape
    worst = float(np.abs(got - expected).max()) / scale
    assert worst <= RTOL, f"plan differs from the layers by {worst:.2e} of the output's scale"


def test_every_model_is_planned():
    """No model in minicnn.models falls back; each plan lists its steps."""
    assert set(SHAPES) == set(models.MODELS) - {"resnet20"} | {"resnet20"}
    for name in models.MODELS:
        net, shape = _model(name) if name in SHAPES else (None, None)
        if net is None:
            continue
        plan = inference.plan_for(net, shape)
        assert plan.fallback is None, (name, plan.fallback)
        text = str(plan)
        assert f"{len(plan.steps)} steps" in text and "conv" in text


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("threads", [1, 2])
def test_plan_equals_layers(name, threads):
    net, shape = _model(name)
    rng = np.random.default_rng(2)
    batches = (1, 2, 3, 64) if name in ("lenet5", "mnist-cnn") else (1, 3, 8)
    for n in batches:
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        _close(inference.forward(net, x, n_threads=threads, use_plan=True), net(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_each_stride_one_algorithm_equals_the_layers(threads):
    """The stride-1 convolutions the models do not all reach: register blocks with a channel
    count that is not a multiple of 4 and a 1x1 kernel, and the unrolled matrix and GEMM
    beyond ``BLOCKED_MAX_K`` terms (8 x 5 x 5 = 200), after a ReLU and before a pooling."""
    net = nn.Sequential(
        nn.Conv2d(3, 7, 3, padding=1, rng=0), nn.ReLU(),          # blocked, K = 27
        nn.Conv2d(7, 8, 1, rng=1), nn.ReLU(),                     # blocked, K = 7
        nn.Conv2d(8, 5, 5, padding=2, rng=2), nn.ReLU(),          # shifted GEMM, K = 200
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 5 * 5, 4, rng=3)).eval()
    plan = inference.plan_for(net, (3, 11, 10))
    assert [step.fields["algorithm"] for step in plan.steps[:3]] == [K.BLOCKED, K.BLOCKED,
                                                                     K.GEMM]
    rng = np.random.default_rng(4)
    for n in (1, 3, 9):
        x = rng.standard_normal((n, 3, 11, 10)).astype(np.float32)
        _close(inference.forward(net, x, n_threads=threads, use_plan=True), net(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_blocked_convs_with_the_pooling_in_their_blocks(threads):
    """Register blocks that finish and pool their own outputs (8 pooled values a block, where
    a pooled row has at least 8): a ReLU with an odd channel count (a 1-channel block), a row
    of 17 pooled values (a last block overlapping the one before) and an odd number of rows
    (the last one dropped); no activation on a row of exactly 8; a row of 4 through the
    epilogue and the pooling pass."""
    net = nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),     # 21x34 -> 10x17
        nn.Conv2d(5, 4, 3, padding=1, rng=1), nn.MaxPool2d(2),                # -> 5x8
        nn.Conv2d(4, 3, 3, padding=1, rng=2), nn.ReLU(), nn.MaxPool2d(2),     # -> 2x4
        nn.Flatten(), nn.Linear(3 * 2 * 4, 5, rng=3)).eval()
    plan = inference.plan_for(net, (2, 21, 34))
    assert [step.fields["algorithm"] for step in plan.steps[:3]] == [K.BLOCKED] * 3
    assert [step.fields["pool"] for step in plan.steps[:3]] == [1, 1, 1]
    rng = np.random.default_rng(8)
    for n in (1, 3):
        x = rng.standard_normal((n, 2, 21, 34)).astype(np.float32)
        _close(inference.forward(net, x, n_threads=threads, use_plan=True), net(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_with_a_pooling_on_even_and_odd_outputs(threads):
    """A 2x2 pooling after a Winograd conv: pooled in the output transform where the windows
    are the tiles (even sizes; a LeakyReLU between, the transform's general activation loop),
    through the epilogue and the pooling pass where they are not (5x5)."""
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, rng=0), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, rng=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1, rng=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 3, rng=3)).eval()
    plan = inference.plan_for(net, (3, 10, 10))
    assert [step.fields["algorithm"] for step in plan.steps[:3]] == [K.BLOCKED, K.WINOGRAD,
                                                                     K.WINOGRAD]
    rng = np.random.default_rng(6)
    for n in (1, 4):
        x = rng.standard_normal((n, 3, 10, 10)).astype(np.float32)
        _close(inference.forward(net, x, n_threads=threads, use_plan=True), net(x))


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd4_steps_equal_the_layers(threads):
    """F(4x4, 3x3) where a 3x3 conv has 64 input channels and an output of at least 8x8 with
    no pooling after it: whole tiles (8x8, ReLU), partial tiles on both sides (9x13), no
    padding (10x14 -> 8x12, a LeakyReLU: the epilogue's general loop); a pooled one, or one
    under 8x8, stays F(2x2, 3x3). The plan's group grows to the chunk the F(4x4, 3x3) steps
    want, and batches of 1, 3 (fewer tiles a sample than a register block: one block reading
    past them) and 19 (a group of 19 on one thread, 10 and 9 on two: octets of samples side
    by side, then the rest on the wide grid) all match."""
    net = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, rng=0), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, rng=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=0, rng=2), nn.LeakyReLU(0.1),
        nn.Conv2d(64, 64, 3, padding=1, rng=3), nn.MaxPool2d(2),
        nn.Flatten()).eval()
    rng = np.random.default_rng(11)
    for size in ((8, 8), (9, 13), (10, 14)):
        plan = inference.plan_for(net, (3,) + size)
        third = K.WINOGRAD4 if min(size) - 2 >= 8 else K.WINOGRAD
        assert [step.fields["algorithm"] for step in plan.steps[1:4]] == [
            K.WINOGRAD4, third, K.WINOGRAD], size
        assert plan.min_group == max(
            K.WINOGRAD4_TILES // (-(-f["conv_h"] // 4) * (-(-f["conv_w"] // 4) + 1))
            for f in (step.fields for step in plan.steps) if f.get("algorithm") == K.WINOGRAD4)
        for n in (1, 3, 19):
            x = rng.standard_normal((n, 3) + size).astype(np.float32)
            _close(inference.forward(net, x, n_threads=threads, use_plan=True), net(x))


@pytest.mark.parametrize("name", ["lenet5", "mnist-cnn", "resnet20", "tiny-detector"])
def test_groups_claimed_in_any_order_give_the_same_bits(name):
    """The threads claim groups as they go (kernels.network.run_thread), so which thread
    computes which group changes from call to call; the result must not. Here one thread
    takes every group (the other none), then each takes its share of the rows (LeNet-5 and
    the MNIST CNN end in linear layers, ResNet-20 in global pooling and a linear layer, the
    detector in a convolution), and the output equals an ordinary two-thread call's bit for
    bit, and that of repeated calls."""
    net, shape = _model(name)
    n = 3 if name == "tiny-detector" else 9
    x = np.random.default_rng(5).standard_normal((n,) + shape).astype(np.float32)
    expected = inference.forward(net, x, n_threads=2, use_plan=True)
    _close(expected, net(x))
    for _ in range(5):
        np.testing.assert_array_equal(inference.forward(net, x, n_threads=2, use_plan=True),
                                      expected)
    prepared = inference._prepared(net, shape, False)
    plan = prepared.plan
    arena, scratch, packed, claims, _, out_size = plan.__dict__["_calls"][(n, 2)]
    assert arena.groups >= 2
    run = inference._entries[0].one_thread
    for greedy in (0, 1):
        out = np.full((n, out_size), np.nan, dtype=np.float32)
        claims[0] = 0
        with blas_single_threaded():    # as in a two-thread call (OpenBLAS's bits may
            for phase, thread in ((K.GROUPS, greedy), (K.GROUPS, 1 - greedy),   # depend on
                                  (K.ROWS, 0), (K.ROWS, 1)):                   # its threads)
                run(prepared.program, plan._kernels, prepared.tensors, arena, x, out, scratch,
                    packed, claims, phase, thread, 2)
        assert claims[0] == arena.groups + 2      # one thread took them all; both asked once more
        np.testing.assert_array_equal(out.reshape(expected.shape), expected)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_batch_of_one_split_over_threads_equals_one_thread(name):
    """At batch 1 on two threads the big steps are split by output channel or feature
    (kernels.network.run_split): each output is computed exactly as on one thread (same
    blocks, same order), so the results are equal bit for bit where no step calls BLAS (which
    the split run holds at one thread: OpenBLAS's result may depend on its thread count), and
    a weight edit after a split call is seen by the next."""
    if numba.get_num_threads() < 2:
        pytest.skip("needs two Numba threads")
    net, shape = _model(name)
    x = np.random.default_rng(7).standard_normal((1,) + shape).astype(np.float32)
    one = inference.forward(net, x, n_threads=1, use_plan=True)
    split = inference.forward(net, x, n_threads=2, use_plan=True)
    if K.calls_blas(inference._prepared(net, shape, False).program):
        _close(split, one)
    else:
        np.testing.assert_array_equal(split, one)
    parts = inference.plan_for(net, shape).__dict__["_parts"][2][0]
    if name == "mnist-cnn":     # its second conv (Winograd) and first linear layer
        split = parts[0]["out_last"] != K.NONE
        assert list(parts[0]["kernel"][split]) == [K.KERNEL_CONV_WINOGRAD, K.KERNEL_LINEAR]
    if name == "lenet5":        # nothing big enough: one thread
        assert parts is None
    conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1]
    conv.weight.data *= -1.0
    _close(inference.forward(net, x, n_threads=2, use_plan=True), net(x))


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_split_parts_share_out_whole_blocks(threads):
    """Each split step's parts cover its outputs once, in order, cut at multiples of the
    4-channel register blocks (a part may be empty); other steps are not split."""
    net, shape = _model("mnist-cnn")
    program = inference._prepared(net, shape, False).program
    parts = K.split_parts(program, threads)
    assert parts.shape == (threads, len(program))
    for step, p in enumerate(program):
        column = parts[:, step]
        if column[0]["out_last"] == K.NONE:
            assert (column["out_last"] == K.NONE).all()
            continue
        assert column[0]["out_first"] == 0 and column[-1]["out_last"] == p["c_out"]
        assert (column["out_first"][1:] == column["out_last"][:-1]).all()
        assert (column["out_last"] >= column["out_first"]).all()
        assert (column["out_first"] % 4 == 0).all()
    assert (parts["out_last"] != K.NONE).any()


@pytest.mark.parametrize("activation", [None, nn.ReLU])
def test_winograd_pooling_in_register_blocks(activation):
    """Winograd with a ReLU or no activation before an even-size pooling: the output transform,
    epilogue and pooling of 8 tiles a register block (winograd_blocks), 25 tiles a sample on
    the wide grid (the last block part garbage)."""
    after = [activation()] if activation else []
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, rng=0), nn.ReLU(),
        nn.Conv2d(16, 12, 3, padding=1, rng=1), *after, nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12 * 4 * 4, 3, rng=3)).eval()
    plan = inference.plan_for(net, (3, 8, 8))
    assert plan.steps[1].fields["algorithm"] == K.WINOGRAD and plan.steps[1].fields["pool"]
    rng = np.random.default_rng(9)
    for n in (1, 5):
        x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
        _close(inference.forward(net, x, n_threads=2, use_plan=True), net(x))


def test_softmax_step_and_detector_grid():
    net, shape = _model("mnist-cnn")
    x = np.random.default_rng(3).standard_normal((5,) + shape).astype(np.float32)
    probs = inference.forward(net, x, softmax=True, use_plan=True)
    _close(probs, softmax(net(x), axis=1))
    assert inference.plan_for(net, shape, softmax=True).steps[-1].op != \
        inference.plan_for(net, shape).steps[-1].op
    detector, dshape = _model("tiny-detector")
    grid = inference.forward(detector, np.zeros((2,) + dshape, np.float32), use_plan=True)
    assert grid.shape == (2, 15, 6, 6)


def test_weight_changes_are_seen():
    """In-place edits, an optimiser step, load_state_dict (replaced arrays) and new running
    statistics between two calls are all seen by the second."""
    net, shape = _model("resnet-small")
    x = np.random.default_rng(4).standard_normal((2,) + shape).astype(np.float32)
    inference.forward(net, x, use_plan=True)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    conv.weight.data *= 1.5                                   # in place
    _close(inference.forward(net, x, use_plan=True), net(x))
    net.train()                                               # an optimiser step
    opt = optim.SGD(net.parameters(), lr=0.1)
    out = net(x)
    net.backward(np.ones_like(out))
    opt.step()
    net.eval()
    _close(inference.forward(net, x, use_plan=True), net(x))
    other = models.build("resnet-small", 3, 10, rng=7)        # replaced arrays
    net.load_state_dict(_with_statistics(other, seed=9).state_dict())
    _close(inference.forward(net, x, use_plan=True), net(x))
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_var = np.full_like(bn.running_var, 3.0)        # a buffer replaced
    _close(inference.forward(net, x, use_plan=True), net(x))


@pytest.mark.parametrize("name, algorithm, layer", [("mnist-cnn", K.WINOGRAD, 1),
                                                    ("resnet20", K.WINOGRAD4, -2)])
def test_winograd_filters_follow_a_nan_and_its_repair(name, algorithm, layer):
    """The Winograd steps (F(2x2, 3x3) and F(4x4, 3x3)) keep transformed filters beside a copy
    of the filters: a NaN written into a filter (never equal to anything) and then repaired
    must both be seen."""
    net, shape = _model(name)
    conv = [m for m in net.modules() if isinstance(m, nn.Conv2d)][layer]
    assert any(step.fields.get("algorithm") == algorithm
               and f"-> {conv.out_channels}x" in step.describe()
               for step in inference.plan_for(net, shape).steps)
    x = np.random.default_rng(5).standard_normal((3,) + shape).astype(np.float32)
    inference.forward(net, x, use_plan=True)
    saved = conv.weight.data[0, 0, 1, 1]
    conv.weight.data[0, 0, 1, 1] = np.nan
    got = inference.forward(net, x, use_plan=True)
    assert np.isnan(got).any() and np.array_equal(np.isnan(got), np.isnan(net(x)))
    conv.weight.data[0, 0, 1, 1] = saved
    _close(inference.forward(net, x, use_plan=True), net(x))


def test_a_network_compiles_only_the_step_kernels_it_uses():
    """Each step kernel is compiled on its own the first time a program uses it; the kernel
    table a program gets holds the no-op kernel in the places of those it does not use."""
    net, shape = _model("lenet5")
    x = np.zeros((1,) + shape, np.float32)
    inference.forward(net, x, use_plan=True)
    plan = inference.plan_for(net, shape)
    table = plan.__dict__["_kernels"]
    used = {K.kernel_for(step.op, step.fields["algorithm"], step.fields["sh"],
                         step.fields["sw"]) for step in plan.steps}
    assert used == {K.KERNEL_CONV_BLOCKED, K.KERNEL_FLATTEN, K.KERNEL_LINEAR}
    unused = [table[i] for i in range(len(K.STEP_KERNELS)) if i not in used]
    assert len(set(unused)) == 1 and unused[0] not in {table[i] for i in used}
    assert len({table[i] for i in used}) == len(used)


def test_mode_and_state_untouched():
    net, shape = _model("vgg-small")
    net.train()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(5).standard_normal((3,) + shape).astype(np.float32)
    y = inference.forward(net, x, use_plan=True)
    assert net.training
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    net.eval()
    _close(y, net(x))


def test_a_replaced_layer_gets_a_new_plan():
    net, shape = _model("resnet-small")
    x = np.random.default_rng(6).standard_normal((1,) + shape).astype(np.float32)
    inference.forward(net, x, use_plan=True)
    block = next(m for m in net.modules() if isinstance(m, nn.BasicBlock))
    block.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=True, rng=11)
    _close(inference.forward(net, x, use_plan=True), net(x))


def test_bad_input_is_refused_like_the_model_refuses_it():
    net, shape = _model("mnist-cnn")
    wrong = np.zeros((1, 3, 28, 28), np.float32)
    with pytest.raises(ValueError) as from_layers:
        net(wrong)
    with pytest.raises(ValueError) as from_plan:
        inference.forward(net, wrong, use_plan=True)
    assert str(from_plan.value) == str(from_layers.value)
    assert "Conv2d" in str(from_plan.value)


def test_unsupported_layer_falls_back_visibly():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    net = nn.Sequential(nn.Conv2d(1, 4, 3, rng=0), Square(), nn.Flatten(),
                        nn.Linear(4 * 26 * 26, 3, rng=0)).eval()
    x = np.random.default_rng(7).standard_normal((2, 1, 28, 28)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=r"layer 1 \(Square\)"):
        y = inference.forward(net, x, use_plan=True)
    assert "layer 1 (Square)" in inference.plan_for(net, (1, 28, 28)).fallback
    np.testing.assert_array_equal(y, net(x))


def test_deliberate_choices_fall_back_quietly():
    """float64 weights and a non-numba backend are the user's choice: the layers run, the
    plan says why, nothing warns."""
    net = models.build("lenet5", 1, 10, rng=0).eval()
    x64 = np.zeros((1, 1, 28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.double()
        assert inference.forward(net, x64, use_plan=True).dtype == np.float64
        assert "float32" in inference.plan_for(net, (1, 28, 28)).fallback
        ref = models.build("lenet5", 1, 10, backend="reference", rng=0).eval()
        assert "'reference' backend" in inference.plan_for(ref, (1, 28, 28)).fallback


def test_auto_runs_the_plan_for_small_batches_only(monkeypatch):
    net, shape = _model("lenet5")
    calls = []
    real = inference._layer_by_layer
    monkeypatch.setattr(inference, "_layer_by_layer",
                        lambda *a: calls.append(len(a[1])) or real(*a))
    rng = np.random.default_rng(8)
    for n in (1, inference.PLAN_MAX_BATCH, inference.PLAN_MAX_BATCH + 1):
        inference.forward(net, rng.standard_normal((n,) + shape).astype(np.float32))
    assert calls == [inference.PLAN_MAX_BATCH + 1]
    strided = rng.standard_normal((2, 2) + shape[1:]).astype(np.float32)[:, :1]
    _close(inference.forward(net, strided, use_plan=True), net(np.ascontiguousarray(strided)))


def test_a_planned_model_still_copies_and_the_copy_plans_apart():
    """Plans live beside the model, not in it: deepcopy (explore's float64 copy, tutorials)
    works after a planned call, and the copy's own weights are what its plan reads."""
    import copy

    net, shape = _model("mnist-cnn")
    x = np.random.default_rng(9).standard_normal((1,) + shape).astype(np.float32)
    inference.forward(net, x, use_plan=True)
    twin = copy.deepcopy(net)
    twin[0].weight.data *= -1
    _close(inference.forward(twin, x, use_plan=True), twin(x))
    _close(inference.forward(net, x, use_plan=True), net(x))
    assert twin.double()(x.astype(np.float64)).dtype == np.float64
