"""The fast int8 kernels (minicnn.kernels.int8) compute the reference loops' integers
(minicnn.kernels.int8_reference) bit for bit: a grid of conv / pool / linear shapes, strides
and paddings, batch 1, 3 and 64, one and two threads."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn.kernels import int8 as fast
from minicnn.kernels import int8_reference as ref
from minicnn.kernels import int8_winograd
from minicnn.quant.arithmetic import QuantParams
from minicnn.quant.model import (QConv, QFlatten, QLinear, QMaxPool, QuantizedModel,
                                 requantize_constants, requantize_params)


def _params(rng) -> QuantParams:
    return QuantParams(float(rng.uniform(0.01, 0.1)), int(rng.integers(0, 256)), "uint8")


def _compute(rng, kind, weight_shape, input_params, relu, final, **geometry):
    weight = rng.integers(-127, 128, size=weight_shape).astype(np.int8)
    weight_scale = rng.uniform(0.001, 0.02, size=weight_shape[0]).astype(np.float32)
    output = None if final else QuantParams(float(rng.uniform(0.05, 0.5)),
                                            0 if relu else int(rng.integers(0, 256)), "uint8")
    multiplier, shift = requantize_params(input_params, weight_scale, output)
    bias = rng.integers(-5000, 5000, size=weight_shape[0]).astype(np.int32)
    common = dict(source=(0,), weight=weight, weight_scale=weight_scale, bias=bias, relu=relu,
                  input=input_params, output=output, multiplier=multiplier, shift=shift)
    return (QConv(**common, **geometry) if kind == "conv" else QLinear(**common)), output


def network(rng, input_shape, conv, pool, hidden, ending="linear"):
    """conv (+relu) -> maxpool -> flatten -> linear(+relu) -> last layer, random integers."""
    c_in, h, w = input_shape
    c_out, kh, kw, stride, padding = conv
    params = _params(rng)
    layers = []
    layer, params = _compute(rng, "conv", (c_out, c_in, kh, kw), params,
                             relu=ending != "conv", final=ending == "conv", stride=stride,
                             padding=padding)
    layers.append(layer)
    if ending == "conv":
        return QuantizedModel(layers, input_shape)
    layers.append(QMaxPool((1,), *pool))
    if ending == "maxpool":
        return QuantizedModel(layers, input_shape)
    shape = QuantizedModel(layers, input_shape).output_shape
    layers.append(QFlatten((2,)))
    features = int(np.prod(shape))
    layer, params = _compute(rng, "linear", (hidden, features), params, relu=False, final=False)
    layers.append(layer)
    layer, _ = _compute(rng, "linear", (7, hidden), params, relu=False, final=True)
    layers.append(layer)
    return QuantizedModel(layers, input_shape)


# (input (C, H, W), conv (C_out, kH, kW, stride, (top, bottom, left, right)),
#  pool (kernel, stride, padding), hidden features)
CASES = [
    ((1, 28, 28), (6, 5, 5, (1, 1), (2, 2, 2, 2)), ((2, 2), (2, 2), (0, 0, 0, 0)), 120),
    ((1, 12, 12), (32, 3, 3, (1, 1), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)), 5),
    ((3, 9, 11), (5, 3, 2, (2, 1), (0, 1, 1, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)), 13),
    ((2, 7, 7), (3, 1, 1, (1, 1), (0, 0, 0, 0)), ((2, 3), (1, 2), (0, 0, 0, 0)), 1),
    ((4, 10, 10), (9, 5, 5, (3, 3), (1, 1, 2, 2)), ((1, 1), (1, 1), (0, 0, 0, 0)), 33),
    ((2, 8, 9), (20, 3, 3, (1, 2), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)), 17),
    ((32, 7, 7), (64, 3, 3, (1, 1), (1, 1, 1, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)), 128),
    ((3, 9, 9), (10, 3, 3, (1, 1), (1, 1, 1, 1)), ((3, 3), (2, 2), (0, 0, 0, 0)), 6),
    ((16, 10, 8), (24, 3, 3, (1, 1), (0, 0, 0, 0)), ((1, 1), (1, 1), (0, 0, 0, 0)), 9),
    ((17, 5, 6), (8, 3, 3, (1, 1), (1, 1, 0, 2)), ((2, 2), (2, 2), (0, 0, 0, 0)), 5),
    ((1, 13, 21), (7, 3, 3, (1, 1), (0, 0, 0, 0)), ((2, 2), (2, 2), (0, 0, 0, 0)), 9),
    ((1, 35, 36), (1, 4, 4, (1, 1), (1, 2, 0, 1)), ((2, 2), (2, 2), (0, 0, 0, 0)), 4),
]
# kW * C_in odd: cases 0 and 1 (C_in < kW) get a kernel column of zero weights, case 7 a
# channel of zeros. 20 and 9 channels exercise the 8-channel remainder blocks, rows of 7, 9
# and 11 windows the single-window remainder. Poolings without padding are fused into the
# conv's requantization (2x2 windows, and the general windows of cases 3, 4 and 7); the
# padded ones of case 2 and 3 run on uint8. Cases 6, 8 and 9 (3x3, stride 1, 16 or more input
# channels) run as integer Winograd F(2x2, 3x3): odd and even outputs, no and one-sided
# padding, 17 channels packed as 18. Cases 0, 10 and 11 (one input channel, fewer than 16
# outputs, a 2x2 pooling) run with output positions in the lanes (int8_positions): 6, 7 (two
# blocks of 3 and one single channel) and 1 channel; odd outputs (11 x 19: a pooling that drops
# the last row and column), rows of 28, 19 and 34 outputs (the last block of 16 part full), an
# even kernel (4x4, no zero column) and one-sided padding.


def _both(model, xq, threads):
    model.backend = "reference"
    expected = model.forward_int(xq)
    got = fast.forward(model.packed, xq, n_threads=threads)
    return expected, got.reshape(expected.shape)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_fast_network_equals_reference(case, batch):
    rng = np.random.default_rng(case * 100 + batch)
    input_shape, conv, pool, hidden = CASES[case]
    model = network(rng, input_shape, conv, pool, hidden)
    xq = rng.integers(0, 256, size=(batch, *input_shape)).astype(np.uint8)
    for threads in (1, 2):
        expected, got = _both(model, xq, threads)
        assert expected.dtype == np.int32 and expected.shape == (batch, 7)
        np.testing.assert_array_equal(got, expected, err_msg=f"{threads} threads")
    model.backend = "numba"
    np.testing.assert_array_equal(model.forward_int(xq), expected)


def test_packing_fuses_unpadded_pools_and_pads_kernel_rows_to_pairs():
    rng = np.random.default_rng(11)
    program = network(rng, *CASES[0]).packed.program       # C_in 1, kW 5: a zero column
    assert list(program["op"]) == [fast.OP_CONV, fast.OP_LINEAR, fast.OP_LINEAR]
    assert program[0]["kw_packed"] == 6 and program[0]["k"] == 30
    assert (program[0]["pool_kh"], program[0]["pooled_h"], program[0]["pooled_w"]) == (2, 14, 14)
    program = network(rng, *CASES[7]).packed.program       # C_in 3, kW 3: a zero channel
    assert program[0]["kw_packed"] == 3 and program[0]["padded_c"] == 4
    assert program[0]["k"] == 36 and program[0]["pool_kh"] == 3
    for case in (6, 8, 9):
        assert network(rng, *CASES[case]).packed.program[0]["winograd"] == 1, case
    for case in (0, 10, 11):
        assert network(rng, *CASES[case]).packed.program[0]["by_positions"] == 1, case
    for case in (1, 2, 3, 7):             # 32 outputs; 2 or 3 inputs; a 3x3 pool
        assert network(rng, *CASES[case]).packed.program[0]["by_positions"] == 0, case
    program = network(rng, *CASES[2]).packed.program       # a padded pool stays apart
    assert list(program["op"]) == [fast.OP_CONV, fast.OP_MAXPOOL, fast.OP_LINEAR, fast.OP_LINEAR]
    assert program[0]["pool_kh"] == 0


def test_integer_winograd_filters_and_their_bound():
    # 4 G g Gᵀ in integers: the transform of a filter, taken back by Aᵀ (.) A of a patch's
    # transform, is 4x the direct correlation of the patch (for one tile, every position).
    rng = np.random.default_rng(5)
    g = rng.integers(-127, 128, size=(1, 1, 3, 3))
    d = rng.integers(-255, 256, size=(4, 4))
    bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
    at = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
    u = int8_winograd.filter_transform(g).reshape(4, 4)
    y = at @ (u * (bt @ d @ bt.T)) @ at.T
    direct = np.array([[np.sum(d[i:i + 3, j:j + 3] * g[0, 0]) for j in range(2)]
                       for i in range(2)])
    np.testing.assert_array_equal(y, 4 * direct)
    assert np.abs(u).max() <= 9 * 127
    # The int32 bound: an output channel's sum of |U| times the largest transformed input
    # (every weight 127: 8128 per input channel, so 259 channels fit and 260 do not).
    for channels, fits in ((259, True), (260, False)):
        worst = np.full((2, channels, 3, 3), 127)
        assert int8_winograd.fits_int32(int8_winograd.filter_transform(worst)) == fits


@pytest.mark.parametrize("shift", [-5, 0, 9, 31, 32, 40])
def test_requantize_constants_give_the_exact_rounding_shift(shift):
    # The fast kernel's form (add ``rounding``, logical shift by ``total``, take ``lift`` off)
    # against Python's exact integers, shifts beyond 62 bits included (they give 0).
    rng = np.random.default_rng(shift + 100)
    acc = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 2000), [-2 ** 31, 2 ** 31 - 1, 0, -1]])
    multiplier = np.array([2 ** 30 + 12345], np.int32)
    m, rounding, total, lift = requantize_constants(multiplier, np.array([shift]), 7)
    t = 31 + shift
    expected = np.array([((int(a) * int(multiplier[0]) + (1 << (t - 1))) >> t) + 7
                         for a in acc])
    product = acc.astype(np.int64) * np.int64(m[0])
    got = ((product + rounding[0]).astype(np.uint64) >> np.uint64(total[0])).astype(np.int64)
    np.testing.assert_array_equal(got - lift[0], expected)


@pytest.mark.parametrize("ending, pool", [("conv", CASES[2][2]), ("maxpool", CASES[2][2]),
                                          ("maxpool", ((2, 2), (2, 1), (0, 0, 0, 0)))])
def test_networks_ending_in_a_conv_or_a_pool(ending, pool):
    # The last pool padded (run on uint8) or not (fused into the conv), then widened to NCHW.
    rng = np.random.default_rng(7)
    model = network(rng, (3, 9, 11), CASES[2][1], pool, 4, ending=ending)
    xq = rng.integers(0, 256, size=(3, 3, 9, 11)).astype(np.uint8)
    for threads in (1, 2):
        expected, got = _both(model, xq, threads)
        np.testing.assert_array_equal(got, expected)
    assert expected.dtype == (np.int32 if ending == "conv" else np.uint8)
    model.backend = "numba"
    fast_out = model.forward_int(xq)
    assert fast_out.dtype == expected.dtype
    np.testing.assert_array_equal(fast_out, expected)


def test_reference_conv_is_the_float_convolution_of_the_centred_integers():
    # The reference loops themselves, against a float64 computation of the same sum.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(2, 3, 6, 5)).astype(np.uint8)
    w = rng.integers(-127, 128, size=(4, 3, 3, 2)).astype(np.int8)
    b = rng.integers(-100, 100, size=4).astype(np.int32)
    acc = ref.conv2d_int8(x, 17, w, b, (1, 2), (1, 0, 0, 1))
    padded = np.pad(x.astype(np.float64) - 17, ((0, 0), (0, 0), (1, 0), (0, 1)))
    expected = np.zeros(acc.shape)
    for i in range(acc.shape[2]):
        for j in range(acc.shape[3]):
            window = padded[:, :, i:i + 3, 2 * j:2 * j + 2]
            expected[:, :, i, j] = np.einsum("nchw,ochw->no", window, w.astype(np.float64)) + b
    np.testing.assert_array_equal(acc, expected)
    pooled = ref.maxpool2d_uint8(x, (2, 2), (2, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(pooled, x[:, :, :6, :4].reshape(2, 3, 3, 2, 2, 2)
                                  .max(axis=(3, 5)))


def test_linear_reference():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, size=(3, 10)).astype(np.uint8)
    w = rng.integers(-127, 128, size=(4, 10)).astype(np.int8)
    b = rng.integers(-100, 100, size=4).astype(np.int32)
    expected = (x.astype(np.int64) - 9) @ w.astype(np.int64).T + b
    np.testing.assert_array_equal(ref.linear_int8(x, 9, w, b), expected)


def test_a_final_conv_then_flatten_dequantizes_per_channel():
    rng = np.random.default_rng(11)
    model = network(rng, (3, 9, 11), CASES[2][1], CASES[2][2], 4, ending="conv")
    flat = QuantizedModel(model.layers + [QFlatten((1,))], model.input_shape)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    np.testing.assert_array_equal(flat(x), model(x).reshape(2, -1))


@pytest.mark.parametrize("threads", [1, 2])
def test_real_inputs_quantised_inside_the_kernel_give_the_same_bytes(threads):
    # QuantizedModel.forward hands float32 images to the kernel, which quantises each sample
    # itself: the same integers as quantize_input then forward_int, at rounding ties
    # ((k + 0.5) * scale), beyond the range and at +-inf.
    rng = np.random.default_rng(12)
    model = network(rng, *CASES[1])
    params = model.input_params
    x = rng.normal(0, 40 * params.scale, size=(5,) + CASES[1][0]).astype(np.float32)
    flat = x.reshape(-1)
    ties = (np.arange(-130, 130) + 0.5) * np.float32(params.scale)
    flat[:ties.size] = ties.astype(np.float32)
    flat[ties.size:ties.size + 4] = [np.inf, -np.inf, 1e30, -1e30]
    expected = fast.forward(model.packed, model.quantize_input(x), n_threads=threads)
    got = fast.forward(model.packed, x, n_threads=threads, input_scale=params.scale,
                       input_zero=params.zero_point)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(model(x), model.dequantize_output(
        model.forward_int(model.quantize_input(x))))
