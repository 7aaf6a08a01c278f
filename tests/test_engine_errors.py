"""Bad input fails early with a message that names the layer, what it expected and what it
got; a failed load_state_dict leaves the model untouched."""

from __future__ import annotations

import numpy as np
import pytest

from minicnn import nn
from assertions import raises


F32 = np.float32


# --------------------------------------------------------------------------------------------
# Wrong inputs to forward
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, x, fragments", [
    (nn.Conv2d(3, 4, 3, rng=0), np.zeros((3, 5, 5), F32), ["Conv2d", "4-D", "3-D", "(3, 5, 5)"]),
    (nn.MaxPool2d(2), np.zeros((2, 3, 4, 4, 1), F32), ["MaxPool2d", "4-D", "5-D"]),
    (nn.AvgPool2d(2), np.zeros((4, 4), F32), ["AvgPool2d", "4-D", "2-D"]),
    (nn.AdaptiveAvgPool2d(2), np.zeros((3, 4, 4), F32), ["AdaptiveAvgPool2d", "4-D", "3-D"]),
    (nn.BatchNorm2d(3), np.zeros((2, 3), F32), ["BatchNorm2d", "4-D", "2-D"]),
    (nn.BatchNorm1d(3), np.zeros((2, 3, 4, 4), F32), ["BatchNorm1d", "2 or 3-D", "4-D"]),
    (nn.Linear(4, 2, rng=0), np.zeros((2, 2, 2), F32), ["Linear", "2-D", "3-D"]),
], ids=["conv", "maxpool", "avgpool", "adaptive", "bn2d", "bn1d", "linear"])
def test_wrong_ndim(layer, x, fragments):
    raises(ValueError, lambda: layer(x), *fragments)


@pytest.mark.parametrize("layer, x, fragments", [
    (nn.Conv2d(3, 4, 3, rng=0), np.zeros((2, 1, 5, 5), F32),
     ["Conv2d", "expected 3 input channels", "got 1"]),
    (nn.Conv2d(4, 4, 3, groups=2, rng=0), np.zeros((2, 2, 5, 5), F32),
     ["Conv2d", "expected 4 input channels", "got 2"]),
    (nn.BatchNorm2d(3), np.zeros((2, 4, 2, 2), F32), ["BatchNorm2d", "expected 3", "got 4"]),
    (nn.BatchNorm1d(5), np.zeros((2, 3), F32), ["BatchNorm1d", "expected 5", "got 3"]),
], ids=["conv", "conv_groups", "bn2d", "bn1d"])
def test_wrong_channel_count(layer, x, fragments):
    raises(ValueError, lambda: layer(x), *fragments)


def test_linear_wrong_feature_count():
    raises(ValueError, lambda: nn.Linear(12, 3, rng=0)(np.zeros((2, 10), F32)),
           "Linear", "expected 12 input features", "got 10")


@pytest.mark.parametrize("layer, x, fragments", [
    (nn.Conv2d(1, 1, 5, rng=0), np.zeros((1, 1, 3, 3), F32), ["Conv2d", "(5, 5)", "(3, 3)"]),
    (nn.Conv2d(1, 1, 5, padding=1, rng=0), np.zeros((1, 1, 2, 8), F32),
     ["Conv2d", "(5, 5)", "padded input (4, 10)"]),
    (nn.Conv2d(1, 1, 3, dilation=3, rng=0), np.zeros((1, 1, 6, 6), F32),
     ["Conv2d", "(7, 7)", "(6, 6)"]),
    (nn.MaxPool2d(3), np.zeros((1, 1, 2, 5), F32), ["MaxPool2d", "(3, 3)", "(2, 5)"]),
    (nn.AvgPool2d(4, padding=1), np.zeros((1, 1, 1, 5), F32),
     ["AvgPool2d", "(4, 4)", "(3, 7)"]),
], ids=["conv", "conv_padded", "conv_dilated", "maxpool", "avgpool_padded"])
def test_kernel_larger_than_padded_input(layer, x, fragments):
    raises(ValueError, lambda: layer(x), *fragments)


@pytest.mark.parametrize("make, fragments", [
    (lambda: nn.Conv2d(1, 1, 3, stride=0), ["Conv2d", "stride", "at least 1", "0"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=(1, 0)), ["Conv2d", "stride", "(1, 0)"]),
    (lambda: nn.MaxPool2d(2, stride=0), ["MaxPool2d", "stride", "0"]),
    (lambda: nn.AvgPool2d(2, stride=0), ["AvgPool2d", "stride", "0"]),
    (lambda: nn.Conv2d(1, 1, 0), ["Conv2d", "kernel_size", "0"]),
    (lambda: nn.Conv2d(1, 1, 3, dilation=0), ["Conv2d", "dilation", "0"]),
    (lambda: nn.Conv2d(1, 1, 3, padding=-1), ["Conv2d", "padding", "-1"]),
    (lambda: nn.MaxPool2d(2, padding=2), ["MaxPool2d", "padding", "half"]),
    (lambda: nn.Conv2d(1, 1, 3, stride=2, padding="same"), ["Conv2d", "same", "stride"]),
    (lambda: nn.Conv2d(1, 1, 3, padding="full"), ["Conv2d", "padding", "'full'"]),
    (lambda: nn.Dropout(1.0), ["Dropout", "p", "1.0"]),
], ids=["conv_stride0", "conv_stride_pair", "maxpool_stride0", "avgpool_stride0",
        "conv_kernel0", "conv_dilation0", "conv_negative_padding", "pool_padding",
        "same_with_stride", "unknown_padding", "dropout_p"])
def test_bad_hyperparameters(make, fragments):
    raises(ValueError, make, *fragments)


def test_non_integer_kernel_size_is_a_type_error():
    raises(TypeError, lambda: nn.Conv2d(1, 1, 2.5), "Conv2d", "kernel_size", "2.5")


@pytest.mark.parametrize("cin, cout, groups", [(3, 4, 2), (4, 6, 4), (4, 4, 3)])
def test_groups_must_divide_channels(cin, cout, groups):
    raises(ValueError, lambda: nn.Conv2d(cin, cout, 3, groups=groups), "Conv2d",
           f"groups={groups}", f"in_channels={cin}", f"out_channels={cout}")


@pytest.mark.parametrize("layer", [nn.Conv2d(1, 2, 3, rng=0), nn.MaxPool2d(2), nn.AvgPool2d(2),
                                   nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(1)],
                         ids=["conv", "maxpool", "avgpool", "adaptive", "bn2d"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_images(layer, dtype):
    x = np.zeros((1, 1, 4, 4), dtype)
    raises(TypeError, lambda: layer(x), type(layer).__name__, "floating", str(np.dtype(dtype)))


@pytest.mark.parametrize("layer", [nn.Linear(3, 2, rng=0), nn.ReLU(), nn.LeakyReLU(),
                                   nn.Sigmoid(), nn.Tanh()],
                         ids=["linear", "relu", "leaky_relu", "sigmoid", "tanh"])
def test_integer_input_to_dense_layers(layer):
    raises(TypeError, lambda: layer(np.ones((2, 3), np.int32)), type(layer).__name__, "int32")


def test_non_array_input():
    raises(TypeError, lambda: nn.Conv2d(1, 1, 1, rng=0)([[[[1.0]]]]), "Conv2d", "list")


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, fragments", [
    (np.array([0, 5, 1]), ["CrossEntropyLoss", "[0, 5)", "5"]),
    (np.array([0, -1, 1]), ["CrossEntropyLoss", "[0, 5)", "-1"]),
], ids=["too_big", "negative"])
def test_labels_out_of_range(labels, fragments):
    raises(ValueError, lambda: nn.CrossEntropyLoss()(np.zeros((3, 5), F32), labels), *fragments)


def test_float_labels_and_wrong_label_shape():
    loss = nn.CrossEntropyLoss()
    raises(TypeError, lambda: loss(np.zeros((3, 5), F32), np.array([0.0, 1.0, 2.0])),
           "CrossEntropyLoss", "integer", "float64")
    raises(ValueError, lambda: loss(np.zeros((3, 5), F32), np.array([0, 1])),
           "CrossEntropyLoss", "(3,)", "(2,)")
    raises(ValueError, lambda: loss(np.zeros((3, 5, 2), F32), np.array([0, 1, 2])),
           "CrossEntropyLoss", "(N, C)", "(3, 5, 2)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_to_a_loss(bad):
    logits = np.zeros((3, 4), F32)
    logits[1, 2] = bad
    raises(ValueError, lambda: nn.CrossEntropyLoss()(logits, np.array([0, 1, 2])),
           "CrossEntropyLoss", "NaN", "1")
    raises(ValueError, lambda: nn.MSELoss()(logits, np.zeros((3, 4))), "MSELoss", "NaN")


def test_mse_shape_mismatch():
    raises(ValueError, lambda: nn.MSELoss()(np.zeros((3, 4), F32), np.zeros((4, 3))),
           "MSELoss", "(3, 4)", "(4, 3)")


# --------------------------------------------------------------------------------------------
# backward before forward
# --------------------------------------------------------------------------------------------
BACKWARD_CASES = [
    (nn.Conv2d(1, 1, 3, rng=0), (1, 1, 1, 1)), (nn.MaxPool2d(2), (1, 1, 1, 1)),
    (nn.AvgPool2d(2), (1, 1, 1, 1)), (nn.AdaptiveAvgPool2d(1), (1, 1, 1, 1)),
    (nn.Linear(2, 2, rng=0), (1, 2)), (nn.Flatten(), (1, 4)), (nn.ReLU(), (1, 2)),
    (nn.LeakyReLU(), (1, 2)), (nn.Sigmoid(), (1, 2)), (nn.Tanh(), (1, 2)),
    (nn.Dropout(), (1, 2)), (nn.BatchNorm1d(2), (1, 2)), (nn.BatchNorm2d(1), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("layer, dy_shape", BACKWARD_CASES,
                         ids=[type(c[0]).__name__ for c in BACKWARD_CASES])
def test_backward_before_forward(layer, dy_shape):
    raises(RuntimeError, lambda: layer.backward(np.ones(dy_shape, F32)),
           type(layer).__name__, "backward", "before forward")


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.MSELoss()], ids=["ce", "mse"])
def test_loss_backward_before_forward(loss):
    raises(RuntimeError, loss.backward, type(loss).__name__, "before forward")


def test_model_backward_before_forward():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, rng=0), nn.ReLU(), nn.Flatten())
    raises(RuntimeError, lambda: model.backward(np.ones((1, 1), F32)), "before forward")


# --------------------------------------------------------------------------------------------
# load_state_dict
# --------------------------------------------------------------------------------------------
def small_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8, 3, rng=1))


def test_state_dict_keys():
    assert list(small_model().state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"]


@pytest.mark.parametrize("edit, fragments", [
    (lambda s: s.pop("0.bias"), ["missing", "0.bias"]),
    (lambda s: s.update({"5.weight": np.zeros(3, F32)}), ["unexpected", "5.weight"]),
    (lambda s: s.update({"4.weight": np.zeros((3, 9), F32)}),
     ["shape", "4.weight", "(3, 8)", "(3, 9)"]),
    (lambda s: (s.pop("1.running_var"), s.update({"extra": np.zeros(1)}),
                s.update({"0.weight": np.zeros((2, 1, 2, 2), F32)})),
     ["1.running_var", "extra", "0.weight", "(2, 1, 3, 3)", "(2, 1, 2, 2)"]),
], ids=["missing", "extra", "misshaped", "all_three"])
def test_bad_load_state_dict_leaves_the_model_unchanged(edit, fragments, rng):
    model = small_model()
    before = model.state_dict()
    state = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in before.items()}
    edit(state)
    raises(ValueError, lambda: model.load_state_dict(state), "load_state_dict", *fragments)
    after = model.state_dict()
    assert list(after) == list(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_good_load_state_dict_copies_every_value(rng):
    model, source = small_model(), small_model()
    state = {k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype != np.int64
                 else np.array(7)) for k, v in source.state_dict().items()}
    model.load_state_dict(state)
    after = model.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    state["0.weight"][...] = 0        # a copy, not a view of the caller's arrays
    assert model[0].weight.data.any()
